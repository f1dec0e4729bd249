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

from ...methods.examples import Crop
from ...render.examples import crop_picture
from ..pictures import encode_png

__all__ = ["ExamplesPanel", "HOW_TO_GIVE", "how_to_give"]


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
