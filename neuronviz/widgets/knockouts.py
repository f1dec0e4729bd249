"""The explorer's knock-out section: the selected neuron's effect on the output, and the shown layers' deletion curves.

The toggle knocks the selected neuron (or the correlation / precision top-k of its layer) out
and shows the output before and after; the button draws the deletion curves of correlation
against precision against random rankings for the shown layers. Both run in a background
thread through :func:`neuronviz.knockout_effect` and :func:`neuronviz.deletion_curve`, which
take the model's lock, so they wait for the view's own run and leave the model as it was.
"""

from __future__ import annotations

import html
import threading
from typing import Any, Callable

import ipywidgets as W

from ..methods.faithfulness import FaithfulnessCurves, deletion_curve
from ..methods.knockout import knockout_effect
from ..methods.resampling import NeuronScores
from .panels.faithfulness import FaithfulnessPanel, KnockoutToggle

__all__ = ["KnockoutSection", "curve_ks", "CURVE_POINTS", "CURVE_K", "CURVE_RANDOM"]

#: The deletion curves' points and random seeds in the view (9 points up to k = 32, 3 seeds).
CURVE_POINTS, CURVE_K, CURVE_RANDOM = 9, 32, 3
WHAT = ("this neuron", "correlation top-k", "precision top-k")


def curve_ks(scores: NeuronScores) -> list[int]:
    """The view's ks: :data:`CURVE_POINTS` points from 0 to ``min(CURVE_K, the shortest ranking)``."""
    size = max(int(t.numel()) for t in scores.correlation.values())
    shortest = min(len(v) for m in ("correlation", "precision") for v in scores.top(m, size).values())
    top = min(CURVE_K, shortest)
    return sorted({round(i * top / (CURVE_POINTS - 1)) for i in range(CURVE_POINTS)})


class KnockoutSection:
    """Knock-out toggle and faithfulness panel for a view with ``model``, ``x``, ``top_k`` and ``scores``.

    Parameters
    ----------
    view : View
        The explorer (or any view with those attributes).

    Attributes
    ----------
    widget : ipywidgets.VBox
        The section, to put in any box.
    curves : FaithfulnessCurves or None
        The last deletion curves drawn.
    """

    def __init__(self, view: Any) -> None:
        self.view = view
        self.neuron: tuple[str, int] | None = None
        self.toggle = KnockoutToggle(self._toggled)
        self.what = W.Dropdown(options=WHAT, value=WHAT[0], layout=W.Layout(width="150px"))
        self.panel = FaithfulnessPanel(width=300, height=220)
        self.button = W.Button(description="Deletion curves", icon="line-chart",
                               tooltip="knock out the top-k of correlation, precision and random rankings of the "
                                       "shown layers, k up to 32 (one batched pass per batch of sets)")
        self.button.on_click(lambda _b: self.draw_curves())
        self.status = W.HTML("")
        self.curves: FaithfulnessCurves | None = None
        self._threads: list[threading.Thread] = []
        self.widget = W.VBox([W.HBox([self.toggle.button, self.what]), self.toggle.text,
                              W.HBox([self.button, self.status]), self.panel.widget])
        self.widget.add_class("nv-knockouts")

    def _scores(self) -> NeuronScores | None:
        return getattr(self.view, "scores", None)

    def select(self, neuron: tuple[str, int] | None) -> None:
        """A new selection: the toggle is released and its text cleared."""
        self.neuron = neuron
        self.toggle.reset()

    def _set(self) -> dict[str, list[int]] | None:
        scores = self._scores()
        if self.neuron is None or scores is None:
            return None
        layer, channel = self.neuron
        if self.what.value == WHAT[0]:
            return {layer: [channel]}
        metric = "correlation" if self.what.value == WHAT[1] else "precision"
        return {layer: scores.top(metric, int(getattr(self.view, "top_k", 5)))[layer]}

    def _background(self, fn: Callable[[], None]) -> None:
        def run() -> None:
            try:
                fn()
            except Exception as err:  # noqa: BLE001 - shown in the section: the view keeps working
                text = html.escape(f"{type(err).__name__}: {err}")
                self.status.value = f"<span style='color:#b00'>{text}</span>"

        thread = threading.Thread(target=run, daemon=True, name="neuronviz-knockouts")
        self._threads.append(thread)
        thread.start()

    def _toggled(self, pressed: bool) -> None:
        if not pressed:
            self.toggle.show(None, None)
            return
        chosen, scores = self._set(), self._scores()
        if chosen is None or scores is None:
            return
        what = f"{self.what.value} ({', '.join(str(c) for c in next(iter(chosen.values())))}):"

        def effect() -> None:
            eff = knockout_effect(self.view.model, self.view.x, chosen, target=scores.target, output=scores.output)
            if self.toggle.button.value:
                self.toggle.show(eff.original, float(eff.knocked[0]), what)

        self._background(effect)

    def draw_curves(self) -> None:
        """Compute and draw the deletion curves of the shown layers (in the background)."""
        scores = self._scores()
        if scores is None:
            self.status.value = "run the view first"
            return
        self.status.value = "knocking out…"

        def curves() -> None:
            self.curves = deletion_curve(self.view.model, self.view.x, scores, ks=curve_ks(scores),
                                         random=CURVE_RANDOM)
            self.panel.show(self.curves)
            self.status.value = ""

        self._background(curves)

    def wait(self, timeout: float | None = None) -> None:
        """Block until the background knock-outs ended."""
        for thread in list(self._threads):
            thread.join(timeout)
