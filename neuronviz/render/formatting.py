"""How a score is written, the same in the widgets and in the figures."""

from __future__ import annotations

import math

__all__ = ["format_score", "format_precision"]


def format_precision(p: float) -> str:
    """A precision short enough for a title or a list: ``0.125``, ``27.5``, ``6141``, ``1.23e7``, ``∞``, ``NaN``."""
    if math.isnan(p):
        return "NaN"
    if math.isinf(p):
        return "∞" if p > 0 else "-∞"
    if 100 <= abs(p) < 1e5:
        return f"{p:.0f}"
    if 1e-3 <= abs(p) < 100:
        return f"{p:.3g}"
    if p == 0:
        return "0"
    mantissa, exponent = f"{p:.2e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def format_score(metric: str, value: float) -> str:
    """A score as short text: correlation with three decimals (``0.423``), any other metric by :func:`format_precision`.

    Parameters
    ----------
    metric : str
        ``"correlation"``, ``"precision"`` or another score's name.
    value : float
        The score.

    Returns
    -------
    str
    """
    value = float(value)
    if metric == "correlation":
        return "NaN" if math.isnan(value) else f"{value:.3f}"
    return format_precision(value)
