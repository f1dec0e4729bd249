"""The selected neuron's data-set examples: its top crops with activation and label; a click opens the image.

The panel draws the crops it is given and reports a click through a callback; the search itself
(:func:`neuronviz.top_examples`, in the background, cached per layer) is
:class:`neuronviz.widgets.examples.ExamplesSection`'s.

DOM classes: ``nv-examples`` (the panel), ``nv-example-crop`` (each crop's picture),
``nv-example-open`` (each crop's button), ``nv-examples-note`` (the line above them).
"""

from __future__ import annotations

import html
from typing import Callable, Sequence

import ipywidgets as W
import numpy as np

from ...methods.examples import Crop, Generality
from ...render.examples import crop_picture
from ..pictures import encode_png

__all__ = ["ExamplesPanel", "GeneralityTable", "HOW_TO_GIVE", "how_to_give"]


def how_to_give(call: str = "nv.NeuronExplorer(model, x, examples=dataset)") -> str:
    """What a panel says when its view was given no examples, with ``call`` as the example (HTML).

    Parameters
    ----------
    call : str
        How the view is made with examples, e.g. ``"nv.PCACEView(model, images, examples=dataset)"``.

    Returns
    -------
    str
    """
    return ("No data-set examples: pass <code>examples=</code> (a tensor of images, a Dataset or a loader) to see "
            f"the images that excite the selected neuron most, e.g. <code>{html.escape(call)}</code>.")


#: What the explorer's panel says when it was given no examples.
HOW_TO_GIVE = how_to_give()


def _enlarge(picture: np.ndarray, side: int) -> np.ndarray:
    """Nearest-neighbour enlargement of a small crop to about ``side`` pixels on its long side."""
    h, w = picture.shape[:2]
    f = max(1, side // max(h, w, 1))
    return np.repeat(np.repeat(picture, f, axis=0), f, axis=1)


class ExamplesPanel:
    """Up to ``k`` crops in a grid, each with its value, label and an "open" button.

    Parameters
    ----------
    k : int
        Crops shown.
    thumb : int
        Displayed side of a crop in pixels.
    """

    def __init__(self, k: int = 9, thumb: int = 72) -> None:
        self.k, self.thumb = k, thumb
        self.note = W.HTML(HOW_TO_GIVE, layout=W.Layout(width=f"{3 * (thumb + 14)}px"))
        self.note.add_class("nv-examples-note")
        self.pictures = [W.Image(format="png", layout=W.Layout(width=f"{thumb}px", height=f"{thumb}px"))
                         for _ in range(k)]
        self.buttons = [W.Button(description="", layout=W.Layout(width=f"{thumb + 8}px", height="34px"))
                        for _ in range(k)]
        self.cells = []
        for i, (pic, button) in enumerate(zip(self.pictures, self.buttons)):
            pic.add_class("nv-example-crop")
            button.add_class("nv-example-open")
            button.on_click(lambda _b, i=i: self._clicked(i))
            cell = W.VBox([pic, button], layout=W.Layout(display="none", align_items="center"))
            self.cells.append(cell)
        grid = W.GridBox(self.cells, layout=W.Layout(grid_template_columns=f"repeat(3, {thumb + 14}px)"))
        self.widget = W.VBox([W.HTML("<b>data-set examples</b>"), self.note, grid])
        self.widget.add_class("nv-examples")
        self.crops: list[Crop] = []
        self._on_open: list[Callable[[Crop], None]] = []

    def on_open(self, fn: Callable[[Crop], None]) -> None:
        """Call ``fn(crop)`` when a crop's button is clicked."""
        self._on_open.append(fn)

    def _clicked(self, i: int) -> None:
        if i < len(self.crops):
            for fn in self._on_open:
                fn(self.crops[i])

    def message(self, text: str) -> None:
        """Show a line (HTML) and no crops."""
        self.note.value = text
        self.set_crops([])

    def set_crops(self, crops: Sequence[Crop], names: Sequence[str] | None = None, note: str | None = None) -> None:
        """Show these crops, best first (``names[label]`` names the labels when given)."""
        self.crops = list(crops)[: self.k]
        if note is not None:
            self.note.value = note
        for i, cell in enumerate(self.cells):
            if i >= len(self.crops):
                cell.layout.display = "none"
                continue
            crop = self.crops[i]
            self.pictures[i].value = encode_png(_enlarge(crop_picture(crop), self.thumb))
            label = "" if crop.label is None else f" · {names[crop.label] if names else crop.label}"
            self.buttons[i].description = f"{crop.value:.3g}{label}"
            self.buttons[i].tooltip = html.unescape(f"image {crop.image}: open it in the overlay")
            cell.layout.display = "flex"


#: How the generality table can be sorted: (label, key).
GENERALITY_SORTS = (("generality, most general first", "share-"), ("generality, least general first", "share+"),
                    ("layer and channel", "channel"))


class GeneralityTable:
    """The top-k neurons of both metrics with their generality, sortable; picking a row selects its neuron.

    Generality (:meth:`neuronviz.TopExamples.generality`): the share of data-set images on which
    the channel fires, and the entropy of their labels. Above the table, the mean share of each
    metric's top-k: the measurable side of the claim that precision picks generalisable features.

    DOM classes: ``nv-generality`` (the box), ``nv-generality-sort``, ``nv-generality-rows``.
    """

    def __init__(self) -> None:
        self.summary = W.HTML("generality: once the data-set examples are found")
        self.sort = W.Dropdown(options=list(GENERALITY_SORTS), value="share-", description="sort by",
                               style={"description_width": "50px"}, layout=W.Layout(width="300px"))
        self.sort.add_class("nv-generality-sort")
        self.table = W.Select(options=[], value=None, rows=8, layout=W.Layout(width="330px"))
        self.table.add_class("nv-generality-rows")
        self.widget = W.VBox([W.HTML("<b>generality of the top-k</b>"), self.summary, self.sort, self.table],
                             layout=W.Layout(width="340px"))
        self.widget.add_class("nv-generality")
        self.rows: list[dict] = []
        self._on_select: list[Callable[[str, int], None]] = []
        self._quiet = False
        self._shown: list[dict] = []
        self.sort.observe(lambda _c: self._fill(), names="value")
        self.table.observe(self._picked, names="value")

    def on_select(self, fn: Callable[[str, int], None]) -> None:
        """Call ``fn(layer, channel)`` when a row is picked."""
        self._on_select.append(fn)

    def set(self, top: dict[str, dict[str, list]], generality: dict[str, Generality]) -> None:
        """Fill the table: ``top[metric][layer]`` the chosen channels, ``generality[layer]`` each layer's.

        Parameters
        ----------
        top : dict
            ``{"correlation": {layer: [channel, ...]}, "precision": {...}}``, as ``NeuronScores.top`` gives.
        generality : dict of str to Generality
            The layers whose examples were found; the others are left out.
        """
        chosen: dict[tuple[str, int], list[str]] = {}
        for metric in ("correlation", "precision"):
            for layer, channels in top.get(metric, {}).items():
                for c in channels:
                    chosen.setdefault((layer, int(c)), []).append(metric)
        self.rows = []
        for (layer, c), by in chosen.items():
            gen = generality.get(layer)
            if gen is None or c >= gen.share.numel():
                continue
            entropy = None if gen.entropy is None else float(gen.entropy[c])
            self.rows.append({"layer": layer, "channel": c, "chosen by": " & ".join(by),
                              "share": float(gen.share[c]), "entropy": entropy})
        means = []
        for metric in ("correlation", "precision"):
            shares = [r["share"] for r in self.rows if metric in r["chosen by"]]
            if shares:
                means.append(f"{metric} top-k {np.mean(shares):.0%}")
        self.summary.value = ("<span style='font-size:12px'>mean share of images fired on: " + " · ".join(means)
                              + "</span>") if means else "generality: once the data-set examples are found"
        self._fill()

    def sorted_rows(self) -> list[dict]:
        """The rows in the chosen order."""
        key = self.sort.value
        if key == "channel":
            return sorted(self.rows, key=lambda r: (r["layer"], r["channel"]))
        sign = -1.0 if key == "share-" else 1.0
        return sorted(self.rows, key=lambda r: (sign * r["share"], r["layer"], r["channel"]))

    def _fill(self) -> None:
        rows = self.sorted_rows()
        self._quiet = True
        try:
            self.table.options = [
                (f"{r['layer']} · ch {r['channel']:<4d} {r['share']:>4.0%}"
                 + ("" if r["entropy"] is None or r["entropy"] != r["entropy"] else f" · H {r['entropy']:.2f}")
                 + f"  ({r['chosen by']})", i) for i, r in enumerate(rows)]
            self.table.value = None
        finally:
            self._quiet = False
        self._shown = rows

    def _picked(self, change: dict) -> None:
        if self._quiet or change["new"] is None:
            return
        row = self._shown[int(change["new"])]
        for fn in self._on_select:
            fn(row["layer"], row["channel"])
