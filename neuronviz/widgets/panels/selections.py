"""Per layer, the top-k by correlation beside the top-k by precision, their overlap, and what precision left out."""

from __future__ import annotations

import html
import math
from typing import Callable

import ipywidgets as W

from ...methods.resampling import NeuronScores, overlap
from ...render.explorer import BOTH_COLOUR, layer_colour
from ...render.formatting import format_score
from .signals import Callbacks, Quiet, SelectCallback, close_widgets

__all__ = ["SelectionLists", "excluded_text"]

Neuron = tuple[str, int]


def _entries(scores: NeuronScores, metric: str, layer: str, chosen: list, both: set) -> list[tuple[str, int]]:
    """The (label, channel) options of one list."""
    values = scores.metric(metric)[layer]
    return [(f"{'◆' if c in both else ' '} ch {c:<4d} {format_score(metric, float(values[c]))}", c) for c in chosen]


def _head(i: int, layer: str, top_c: dict, top_p: dict) -> str:
    """The HTML line above a layer's lists: its colour, name and overlap."""
    layer_ov = overlap({layer: top_c[layer]}, {layer: top_p[layer]})
    return (f"<span style='color:{layer_colour(i)};font-size:15px'>●</span> <b>{html.escape(layer)}</b> "
            f"<span style='font-size:11px;color:#555'>overlap {_fmt_overlap(layer_ov)}</span>")


class SelectionLists:
    """Per layer, the top-k by correlation beside the top-k by precision; picking an entry selects it.

    Entries chosen by both metrics are marked ``◆``. The overlap of the two selections
    (:func:`neuronviz.overlap`, the paper's measure, at most 0.5; and Jaccard) is shown overall
    and per layer, and below it how many channels of each layer precision left out, and why
    (:func:`excluded_text`).

    DOM classes: ``nv-selections`` (the box), ``nv-overlap`` (the overlap text), ``nv-excluded``
    (the channels left out of precision); each list is an
    :class:`ipywidgets.Select` with the classes ``nv-list``, ``nv-list-correlation`` or
    ``nv-list-precision``.
    """

    def __init__(self) -> None:
        self._on_select = Callbacks()
        self._quiet = Quiet()
        self.lists: dict[tuple[str, str], W.Select] = {}
        self._heads: dict[str, W.HTML] = {}
        self._layers: list[str] = []  # the layers the lists are built for
        self.overlap = W.HTML(value="")
        self.overlap.add_class("nv-overlap")
        self.excluded = W.HTML(value="")
        self.excluded.add_class("nv-excluded")
        self.rows = W.VBox([])
        self.widget = W.VBox([W.HTML("<b>top-k selections</b>"), self.overlap, self.excluded, self.rows],
                             layout=W.Layout(width="390px", margin="0 20px 0 0"))
        self.widget.add_class("nv-selections")

    def on_select(self, fn: SelectCallback) -> None:
        """Call ``fn(layer, channel)`` when the user picks an entry."""
        self._on_select.add(fn)

    def set_scores(self, scores: NeuronScores, k: int) -> None:
        """Fill the lists with each layer's top ``k`` of both metrics."""
        top_c, top_p = scores.top("correlation", k), scores.top("precision", k)
        ov, jac = overlap(top_c, top_p), overlap(top_c, top_p, kind="jaccard")
        self.overlap.value = (
            f"overlap {_fmt_overlap(ov)} <span style='color:#666'>(paper's measure, max 0.5)</span> · "
            f"Jaccard {_fmt_overlap(jac)} · <span style='color:{BOTH_COLOUR}'>◆</span> chosen by both"
        )
        self.excluded.value = excluded_text(scores)
        if list(scores.layers) == self._layers:
            self._refill(scores, k, top_c, top_p)  # the same lists: new entries, no new widgets to draw
            return
        rows = []
        with self._quiet:
            old, self.lists, self._heads = self.rows.children, {}, {}
            for i, layer in enumerate(scores.layers):
                cols = []
                for metric, chosen in (("correlation", top_c[layer]), ("precision", top_p[layer])):
                    sel = W.Select(
                        options=_entries(scores, metric, layer, chosen, set(top_c[layer]) & set(top_p[layer])),
                        value=None, rows=max(1, min(k, 10)), description="", layout=W.Layout(width="170px"),
                    )
                    sel.add_class("nv-list")
                    sel.add_class(f"nv-list-{metric}")
                    sel.observe(self._picked(layer), names="value")
                    self.lists[(layer, metric)] = sel
                    cols.append(W.VBox([W.HTML(f"<span style='font-size:11px'>by {metric}</span>"), sel]))
                head = self._heads[layer] = W.HTML(_head(i, layer, top_c, top_p))
                rows.append(W.VBox([head, W.HBox(cols)]))
        self.rows.children = rows
        self._layers = list(scores.layers)
        close_widgets(old)  # the lists of the previous run are dropped: free them

    def _refill(self, scores: NeuronScores, k: int, top_c: dict, top_p: dict) -> None:
        """New entries in the lists already shown (each live partial picture does this)."""
        with self._quiet:
            for i, layer in enumerate(scores.layers):
                both = set(top_c[layer]) & set(top_p[layer])
                for metric, chosen in (("correlation", top_c[layer]), ("precision", top_p[layer])):
                    sel = self.lists[(layer, metric)]
                    entries = _entries(scores, metric, layer, chosen, both)
                    if list(sel.options) != entries:
                        with sel.hold_sync():
                            sel.value = None
                            sel.options = entries
                    if sel.rows != max(1, min(k, 10)):
                        sel.rows = max(1, min(k, 10))
                self._heads[layer].value = _head(i, layer, top_c, top_p)

    def set_selected(self, neuron: Neuron | None) -> None:
        """Highlight ``neuron`` in the lists that hold it (without calling the callbacks)."""
        with self._quiet:
            for (layer, _metric), sel in self.lists.items():
                values = [v for _label, v in sel.options]
                want = neuron[1] if neuron is not None and neuron[0] == layer and neuron[1] in values else None
                if sel.value != want:
                    sel.value = want

    def pick(self, layer: str, metric: str, channel: int) -> None:
        """Act as a user picking ``channel`` in a list (what the browser does)."""
        self.lists[(layer, metric)].value = channel

    def _picked(self, layer: str) -> Callable[[dict], None]:
        def handler(change: dict) -> None:
            if not self._quiet and change["new"] is not None:
                self._on_select(layer, int(change["new"]))

        return handler


def _fmt_overlap(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.3f}"


_RULES = {
    "mean": "mean activation under {t:g}, the paper's rule for a layer that is never negative",
    "dead": "dead: constant, or never above {t:g} in magnitude (a layer that takes negative values)",
}


def excluded_text(scores: NeuronScores) -> str:
    """HTML: how many channels of each layer are left out of the precision selection, and by which rule.

    Parameters
    ----------
    scores : NeuronScores
        Per-channel scores (their ``excluded`` masks and ``exclusion_rule`` say who and why).

    Returns
    -------
    str
        Empty when the scores carry no exclusion information.
    """
    excluded = getattr(scores, "excluded", None)
    if not excluded:
        return ""
    rules = getattr(scores, "exclusion_rule", {})
    parts = []
    for layer in scores.layers:
        n, total = int(excluded[layer].sum()), excluded[layer].numel()
        why = _RULES.get(rules.get(layer, ""), "").format(t=scores.dead_threshold)
        parts.append(f"{html.escape(layer)} {n} of {total}" + (f" ({why})" if n and why else ""))
    return f"<span style='font-size:11px;color:#555'>left out of precision: {'; '.join(parts)}</span>"
