"""A file name, an Export button and a message."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Callable

import ipywidgets as W

__all__ = ["ExportRow"]


class ExportRow:
    """A file name, an Export button and a message; the button calls ``on_export(path)``.

    DOM classes: ``nv-export-path``, ``nv-export``, ``nv-export-message``.

    Parameters
    ----------
    on_export : callable
        ``on_export(path) -> pathlib.Path`` writes the file; an exception goes to ``on_error``.
    on_error : callable
        ``on_error(exception)``, e.g. :meth:`BackgroundView.report_error`.
    filename : str
        The name offered at first.
    """

    def __init__(self, on_export: Callable[[str], Path], on_error: Callable[[BaseException], None],
                 filename: str = "view.png") -> None:
        self._on_export, self._on_error = on_export, on_error
        self.path = W.Text(value=filename, description="file", layout=W.Layout(width="260px"),
                           style={"description_width": "40px"})
        self.path.add_class("nv-export-path")
        self.button = W.Button(description="Export", icon="download",
                               tooltip="save the view as PNG, SVG or PDF, or as an interactive HTML page (name.html)")
        self.button.add_class("nv-export")
        self.message = W.HTML("")
        self.message.add_class("nv-export-message")
        self.button.on_click(lambda _b: self.export())
        self.widget = W.HBox([self.path, self.button, self.message], layout=W.Layout(align_items="center"))

    def export(self) -> None:
        """What a click does: write the named file and say so, or report the error."""
        try:
            path = Path(self._on_export(self.path.value.strip()))
            self.message.value = f"saved <code>{html.escape(str(path))}</code> ({path.stat().st_size // 1024} kB)"
        except Exception as err:  # noqa: BLE001 - shown in the widget, not lost in a callback log
            self.message.value = ""
            self._on_error(err)
