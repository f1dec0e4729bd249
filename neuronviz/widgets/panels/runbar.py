"""Run and Cancel buttons, a progress bar, a status line, a warning area and an error area."""

from __future__ import annotations

import html
from typing import Callable

import ipywidgets as W

__all__ = ["RunBar"]


class RunBar:
    """Run and Cancel buttons, a progress bar, a status label and an error area.

    DOM classes: ``nv-run``, ``nv-cancel``, ``nv-progress``, ``nv-status``, ``nv-warnings``, ``nv-error``.

    Parameters
    ----------
    on_run, on_cancel : callable
        Called without arguments when the buttons are clicked.
    run_label : str
        Text of the Run button.
    """

    def __init__(self, on_run: Callable[[], None], on_cancel: Callable[[], None], run_label: str = "Run") -> None:
        self.run_button = W.Button(description=run_label, button_style="primary", icon="play",
                                   tooltip="compute with the settings above", layout=W.Layout(width="90px"))
        self.cancel_button = W.Button(description="Cancel", icon="stop", disabled=True,
                                      tooltip="stop the running computation", layout=W.Layout(width="90px"))
        self.progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, layout=W.Layout(width="220px"))
        self.status = W.Label(value="idle")
        self.error = W.HTML(value="", layout=W.Layout(width="100%"))
        self.warnings = W.HTML(value="", layout=W.Layout(width="100%"))
        self.warnings.add_class("nv-warnings")
        self.run_button.add_class("nv-run")
        self.cancel_button.add_class("nv-cancel")
        self.progress.add_class("nv-progress")
        self.status.add_class("nv-status")
        self.error.add_class("nv-error")
        self.run_button.on_click(lambda _b: on_run())
        self.cancel_button.on_click(lambda _b: on_cancel())
        self.widget = W.VBox(
            [W.HBox([self.run_button, self.cancel_button, self.progress, self.status],
                    layout=W.Layout(align_items="center")), self.warnings, self.error]
        )

    def running(self, text: str = "running") -> None:
        """Show a run starting: progress at zero, Cancel enabled, the error cleared."""
        self.progress.bar_style = ""
        self.progress.value = 0.0
        self.cancel_button.disabled = False
        self.status.value = text
        self.show_error(None)
        self.show_warnings([])

    def set_progress(self, done: int, total: int) -> None:
        """Show ``done`` out of ``total``."""
        self.progress.value = min(1.0, done / total) if total > 0 else 0.0
        self.status.value = f"running: {done}/{total}"

    def finished(self, state: str, text: str | None = None) -> None:
        """Show the end of a run: ``state`` is ``"done"``, ``"cancelled"`` or ``"error"``."""
        self.cancel_button.disabled = True
        if state == "done":
            self.progress.value = 1.0
            self.progress.bar_style = "success"
        else:
            self.progress.bar_style = "warning" if state == "cancelled" else "danger"
        self.status.value = text or state

    def show_error(self, message: str | None) -> None:
        """Show ``message`` in the error area (None clears it)."""
        if not message:
            self.error.value = ""
            return
        self.error.value = (
            '<div style="color:#a40000;background:#fff0f0;border:1px solid #e0b4b4;padding:4px 8px;'
            f'white-space:pre-wrap;font-family:monospace;font-size:12px">{html.escape(message)}</div>'
        )

    def show_warnings(self, messages: list[str]) -> None:
        """Show the warnings of the last run (an empty list clears them)."""
        if not messages:
            self.warnings.value = ""
            return
        items = "".join(f"<li>{html.escape(m)}</li>" for m in messages)
        self.warnings.value = (
            '<div style="color:#7a5200;background:#fff8e6;border:1px solid #e6cf99;padding:2px 8px;font-size:12px">'
            f"<ul style='margin:2px 0;padding-left:16px'>{items}</ul></div>"
        )
