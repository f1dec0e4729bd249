"""Figures that display themselves in notebooks, and the checks shared by every figure.

Everything is drawn on :class:`matplotlib.figure.Figure` objects created here, never through
``pyplot``'s global state, so rendering works headless and from several threads at once.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..core.errors import NeuronvizError

__all__ = ["StaticFigure", "SAVE_FORMATS", "FONT_SIZES", "check_path", "check_display_image", "class_label", "save"]

SAVE_FORMATS = (".png", ".svg", ".pdf")
FONT_SIZES = {"cell": 9, "label": 10, "head": 11, "title": 13}


class StaticFigure(Figure):
    """A matplotlib figure that shows itself as a PNG in Jupyter without ``pyplot``.

    Figures made outside ``pyplot`` have no inline-backend formatter, so a notebook would
    print ``<Figure ...>``; this adds the standard IPython hook.
    """

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", dpi=min(self.dpi, 100), bbox_inches="tight")
        return buf.getvalue()



def check_path(path: str | Path | None) -> Path | None:
    """``path`` as a :class:`~pathlib.Path`, refusing suffixes other than PNG, SVG and PDF.

    Raises
    ------
    ValueError
        An unsupported suffix.
    """
    if path is None:
        return None
    path = Path(path)
    if path.suffix.lower() not in SAVE_FORMATS:
        raise NeuronvizError(
            f"cannot save a figure as {path.name!r}: the file name must end in one of {', '.join(SAVE_FORMATS)}"
        )
    return path


def check_display_image(image: np.ndarray) -> np.ndarray:
    """An (H, W, 3) float image in [0, 1] to draw on (grey is repeated, NaN zeroed, values clipped)."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3 or 0 in img.shape:
        raise NeuronvizError(f"image must be an (H, W, 3) float array with values in [0, 1], got shape {img.shape}")
    return np.clip(np.nan_to_num(img), 0.0, 1.0)


def save(fig: Figure, path: Path | None, dpi: int) -> None:
    """Save ``fig`` to ``path`` (if any) in the format its suffix names."""
    if path is not None:
        fig.savefig(path, dpi=dpi, format=path.suffix.lower().lstrip("."))


def class_label(target: int | None, n_classes: int | None) -> str:
    """How the figure names the explained class.

    Parameters
    ----------
    target : int or None
        The class index (None for a callable target).
    n_classes : int or None
        The model's number of outputs; 1000 is taken to mean ImageNet-1k.

    Returns
    -------
    str
        E.g. ``"Egyptian cat (class 285)"``, ``"class 3"`` or ``"a callable target"``.
    """
    if target is None:
        return "a callable target"
    if n_classes == 1000 and 0 <= target < 1000:
        from ..data import imagenet_categories  # lazy: rendering needs no data files otherwise

        return f"{imagenet_categories()[target]} (class {target})"
    return f"class {target}"
