"""Self-contained interactive HTML pages of the views: one file that opens offline, without a kernel.

A page is built from the same plain-data records the figures are drawn from (nothing here runs a
model): the explorer's :class:`~neuronviz.render.explorer.ExplorerView`, a PCACE
:class:`~neuronviz.LayerRanking` with the maps of the shown images, an
:class:`~neuronviz.InversionResult` with its picture. Plots are inline SVG written here (each
point carries its numbers as a tooltip), images are embedded as base64 PNG, and a small script of
neuronviz's own (``render/static/page.js``, inlined) links them: click a point or a bar and the
overlay and the detail follow. Nothing is fetched: no CDN, no font, no external file.

An activation overlay is embedded as the picture once plus, per neuron, a transparent PNG of
its heat map (the overlay colour map as a palette, the alpha of
:func:`~neuronviz.render.explorer.blend_overlay` as its transparency), so that the page's
opacity slider composes exactly what the widget blends. To keep a page small only some neurons
carry images (the explorer: the top-k of each criterion and the selected neuron; PCACE: each
layer's top and bottom channels and the selected one); any other shows its numbers and says
that its overlay is not in the page.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from ..core.errors import NeuronvizError, NeuronvizTypeError
from ..methods.faithfulness import FaithfulnessCurves
from ..methods.inversion import InversionResult
from ..methods.pcace import LayerRanking
from ..methods.resampling import NeuronScores, overlap
from .explorer import (
    _LUT,
    BOTH_COLOUR,
    INTERVAL_LEVEL,
    TIED_COLOUR,
    WHISKER_COLOUR,
    ExplorerView,
    cell_box,
    layer_colour,
    pearson,
    strongest_cell,
)
from .faithfulness import RANDOM_COLOUR, group_of, ranking_colour, x_words
from .figure import check_display_image, class_label
from .formatting import format_score
from .maps import upsample_map
from .pcace import BOTTOM_COLOUR, TOP_COLOUR

__all__ = ["PAGE_SUFFIXES", "explorer_page", "pcace_page", "inversion_page", "write_page", "heat_png", "png_uri"]

#: File name endings :meth:`neuronviz.widgets.view.View.export` writes as a page.
PAGE_SUFFIXES = (".html", ".htm")
#: Channels per layer whose PCACE maps a page embeds at most (top and bottom each), as the widget's grid.
PCACE_EMBED_MAX = 5
#: Long side in pixels of the pictures a PCACE page embeds.
PCACE_PICTURE_SIZE = 150
_BAR_COLOUR = "#9ecae1"
_STAGE_COLOURS = ("#1f77b4", "#d62728")
_PALETTE = np.clip(np.asarray(_LUT) * 255.0 + 0.5, 0, 255).astype(np.uint8).reshape(-1).tobytes()
# alpha of blend_overlay, opacity 1: 0.2 + 0.8 * heat
_ALPHA = bytes(int(round(255 * (0.2 + 0.8 * i / 255))) for i in range(256))
_MISSING = ("no overlay of this neuron in the page (it holds the images of the top-{k} of each criterion and "
            "of the selected neuron); its numbers are above")


# ---------------------------------------------------------------------------------------------
# images


def png_uri(png: bytes) -> str:
    """A ``data:`` URI of PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _picture_png(picture: np.ndarray, long_side: int | None = None) -> tuple[bytes, tuple[int, int]]:
    """An (H, W, 3) [0, 1] picture as PNG bytes (optionally resized), and its (H, W)."""
    img = check_display_image(picture)
    im = Image.fromarray((img * 255.0 + 0.5).astype(np.uint8))
    if long_side is not None and max(im.size) != long_side:
        scale = long_side / max(im.size)
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return buf.getvalue(), (im.height, im.width)


def heat_png(heat: np.ndarray) -> bytes:
    """A [0, 1] heat map as a transparent PNG: the overlay's colour and alpha, to lay over the picture.

    Laid over the picture with opacity ``o`` (CSS), it composes what
    :func:`~neuronviz.render.explorer.blend_overlay` blends with ``opacity=o`` (to within the
    256 levels of the palette).

    Parameters
    ----------
    heat : numpy.ndarray
        (H, W) values in [0, 1] (NaN counts as 0).

    Returns
    -------
    bytes
        An 8-bit palette PNG with transparency.
    """
    h = np.asarray(heat, dtype=np.float32)
    if h.ndim != 2 or 0 in h.shape:
        raise NeuronvizError(f"a heat map is one (H, W) array, got shape {h.shape}")
    idx = np.clip(np.nan_to_num(h) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    im = Image.fromarray(idx)
    im.putpalette(_PALETTE, rawmode="RGB")  # an "L" image becomes "P"
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True, transparency=_ALPHA)
    return buf.getvalue()


def _blank_uri() -> str:
    im = Image.new("LA", (1, 1), (0, 0))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return png_uri(buf.getvalue())


def _map_heat(amap: torch.Tensor, size: tuple[int, int]) -> str | None:
    """The heat PNG of one (h, w) map upsampled to ``size``, or None for a map of one cell."""
    if amap.dim() != 2 or amap.numel() <= 1:
        return None
    return png_uri(heat_png(upsample_map(amap, size)))


# ---------------------------------------------------------------------------------------------
# the document


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _static(name: str) -> str:
    return resources.files("neuronviz.render").joinpath("static", name).read_text(encoding="utf-8")


def _version() -> str:
    try:
        return version("neuronviz")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "(source)"


def _settings_table(settings: Iterable[tuple[str, object]]) -> str:
    rows = "".join(f"<tr><th scope='row'>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in settings)
    return f"<table class='nv-table nv-settings'>{rows}</table>" if rows else ""


def _document(kind: str, title: str, subtitle: str, body: str, data: dict[str, Any], note: str) -> str:
    # "<" escaped inside the JSON: no "</script>" or "<!--" can end or change the data block
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>\n"
        f"<meta name='generator' content='neuronviz {_esc(_version())}'>\n"
        f"<title>{_esc(title)}</title>\n<style>\n{_static('page.css')}</style>\n</head>\n"
        f"<body class='nv-page nv-page-{kind}'>\n<header><h1>{_esc(title)}</h1>"
        f"<div class='nv-sub'>{subtitle}</div></header>\n<main>\n{body}\n</main>\n"
        f"<footer><p>Made by neuronviz {_esc(_version())}. One self-contained file: it needs no kernel and "
        f"fetches nothing. {_esc(note)}</p></footer>\n"
        f"<script type='application/json' id='nv-data'>{payload}</script>\n"
        f"<script>\n{_static('page.js')}</script>\n</body>\n</html>\n"
    )


def write_page(page: str, path: str | Path) -> Path:
    """Write a page made here to ``path`` (UTF-8).

    Parameters
    ----------
    page : str
        What :func:`explorer_page`, :func:`pcace_page` or :func:`inversion_page` returned.
    path : str or pathlib.Path
        File name ending in ``.html`` or ``.htm``.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    NeuronvizError
        Another suffix.
    """
    target = Path(path)
    if target.suffix.lower() not in PAGE_SUFFIXES:
        raise NeuronvizError(f"a page is saved as .html, got {target.name!r}")
    target.write_text(page, encoding="utf-8")
    return target


# ---------------------------------------------------------------------------------------------
# SVG pieces


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    span = hi - lo
    if not span > 0:
        return [lo]
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 12) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Tick values between 10**lo and 10**hi: decades, or 1-2-5 steps when the range spans under two."""
    ticks = [10.0**e for e in range(math.ceil(lo), math.floor(hi) + 1)]
    if len(ticks) < 3:
        ticks = [m * 10.0**e for e in range(math.floor(lo), math.ceil(hi) + 1) for m in (1, 2, 5)
                 if lo <= math.log10(m * 10.0**e) <= hi]
    return ticks


def _tick_text(v: float) -> str:
    if v != 0 and not 1e-3 <= abs(v) < 1e5:  # 1e7, not 1e+07
        mantissa, exponent = f"{v:.0e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    return f"{v:g}"


def _mini_scatter(a: np.ndarray, o: np.ndarray, colour: str, output: str) -> str:
    """A small SVG of one neuron's activation (x) against the output (y) over the copies."""
    w, h, left, right, top, bottom = 280, 180, 44, 8, 20, 30
    pw, ph = w - left - right, h - top - bottom
    ok = np.isfinite(a) & np.isfinite(o)
    a, o = a[ok], o[ok]
    r = pearson(a, o) if a.size > 1 else math.nan
    head = f"r = {'n/a' if math.isnan(r) else f'{r:.2f}'} over {a.size} copies"
    parts = [f"<svg class='nv-mini' width='{w}' height='{h}' viewBox='0 0 {w} {h}'>",
             f"<text x='{left}' y='12'>{_esc(head)}</text>",
             f"<line class='nv-axis' x1='{left}' y1='{top + ph}' x2='{left + pw}' y2='{top + ph}'/>",
             f"<line class='nv-axis' x1='{left}' y1='{top}' x2='{left}' y2='{top + ph}'/>",
             f"<text x='{left + pw / 2:.0f}' y='{h - 4}' text-anchor='middle'>activation (mean over positions)</text>",
             f"<text transform='translate(10 {top + ph / 2:.0f}) rotate(-90)' text-anchor='middle'>{_esc(output)}"
             "</text>"]
    if a.size:
        def scale(v: np.ndarray) -> tuple[float, float]:
            lo, hi = float(v.min()), float(v.max())
            return (lo - 0.5, hi + 0.5) if hi <= lo else (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))

        (x0, x1), (y0, y1) = scale(a), scale(o)
        for v, edge in ((x0, "start"), (x1, "end")):
            x = left + (v - x0) / (x1 - x0) * pw
            parts.append(f"<text x='{x:.0f}' y='{top + ph + 11}' text-anchor='{edge}'>{v:.3g}</text>")
        for v in (y0, y1):
            y = top + ph - (v - y0) / (y1 - y0) * ph
            parts.append(f"<text x='{left - 3}' y='{y + 3:.0f}' text-anchor='end'>{v:.3g}</text>")
        dots = "".join(f"<circle cx='{left + (x - x0) / (x1 - x0) * pw:.1f}' "
                       f"cy='{top + ph - (y - y0) / (y1 - y0) * ph:.1f}' r='2.2'/>"
                       for x, y in zip(a.tolist(), o.tolist()))
        parts.append(f"<g fill='{colour}' fill-opacity='0.7'>{dots}</g>")
    parts.append("</svg>")
    return "".join(parts)


def curves_svg(curves: FaithfulnessCurves, group: str | None = None, *, title: str | None = None) -> str:
    """One group's deletion or insertion curves as an SVG, as :func:`~neuronviz.render.faithfulness.draw_curves`
    draws them: ``o / o(x)`` against the share knocked out, each ranking a line with its AUC,
    random as its mean (dashed) and 5-95 % band.

    Parameters
    ----------
    curves : FaithfulnessCurves
        From :func:`neuronviz.deletion_curve` or :func:`neuronviz.mask_deletion_curve`.
    group : str, optional
        The layer (or "all layers", "pixels"); default the first.
    title : str, optional
        The heading (default the group).

    Returns
    -------
    str

    Raises
    ------
    NeuronvizError
        No such group.
    """
    group, shown = group_of(curves, group)
    scale = curves.original if curves.original else 1.0
    w, left, right, top, bottom = 300, 44, 10, 20, 30
    ph, pw = 150, w - left - right
    h = top + ph + bottom + 14 * len(shown)
    # (colour, dashed, x, y, band or None, legend)
    lines: list[tuple[str, bool, np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None, str]] = []
    for i, c in enumerate(shown):
        x, y = np.asarray(c.fraction, float), np.asarray(c.values, float) / scale
        if c.is_random:
            lo, hi = (np.asarray(v, float) / scale for v in c.band())
            a_lo, a_hi = c.auc_band()
            n = 0 if c.aucs is None else len(c.aucs)
            lines.append((RANDOM_COLOUR, True, x, y, (lo, hi), f"random x{n} (AUC {c.auc:.2f}, {a_lo:.2f}-{a_hi:.2f})"))
        else:
            lines.append((ranking_colour(c.ranking, i), False, x, y, None, f"{c.ranking} (AUC {c.auc:.2f})"))
    ys = np.concatenate([v for *_, y, band, _l in lines for v in ([y] if band is None else [y, *band])])
    ys = ys[np.isfinite(ys)]
    y0, y1 = (float(ys.min()), float(ys.max())) if ys.size else (0.0, 1.0)
    y0, y1 = min(y0, 1.0), max(y1, 1.0)  # o(x) itself always shows, as in the figure's autoscaled axes
    pad = 0.05 * (y1 - y0) if y1 > y0 else 0.05
    y0, y1 = y0 - pad, y1 + pad

    def px(v: np.ndarray) -> np.ndarray:
        return left + np.clip(v, 0.0, 1.0) * pw

    def py(v: np.ndarray) -> np.ndarray:
        return top + ph - (v - y0) / (y1 - y0) * ph

    def path(xs: np.ndarray, vs: np.ndarray) -> str:
        ok = np.isfinite(vs)
        return " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(px(xs[ok]).tolist(), py(vs[ok]).tolist()))

    unit, verb = x_words(curves)
    head = title if title is not None else str(group)
    parts = [f"<svg class='nv-mini nv-curves' data-mode='{_esc(curves.mode)}' data-group='{_esc(group)}' width='{w}' "
             f"height='{h}' viewBox='0 0 {w} {h}'>",
             f"<text x='{left}' y='12'>{_esc(head)}</text>",
             f"<line class='nv-axis' x1='{left}' y1='{top + ph}' x2='{left + pw}' y2='{top + ph}'/>",
             f"<line class='nv-axis' x1='{left}' y1='{top}' x2='{left}' y2='{top + ph}'/>",
             f"<text x='{left + pw / 2:.0f}' y='{top + ph + 26}' text-anchor='middle'>share of {unit} {verb}</text>",
             f"<text transform='translate(10 {top + ph / 2:.0f}) rotate(-90)' text-anchor='middle'>"
             "output / o(x)</text>"]
    for t in _nice_ticks(0.0, 1.0, 4):
        parts.append(f"<text x='{float(px(np.array(t))):.0f}' y='{top + ph + 11}' text-anchor='middle'>{t:g}</text>")
    for t in _nice_ticks(y0, y1, 4):
        yy = float(py(np.array(t)))
        parts.append(f"<line x1='{left}' y1='{yy:.1f}' x2='{left + pw}' y2='{yy:.1f}' stroke='#eee'/>"
                     f"<text x='{left - 3}' y='{yy + 3:.0f}' text-anchor='end'>{_tick_text(t)}</text>")
    for colour, dashed, x, y, band, label in lines:
        if band is not None:
            ok = np.isfinite(band[0]) & np.isfinite(band[1])
            ring = path(x[ok], band[1][ok]) + " " + path(x[ok][::-1], band[0][ok][::-1])
            parts.append(f"<polygon class='nv-band' points='{ring}' fill='{colour}' fill-opacity='0.25'/>")
        dash = " stroke-dasharray='5 3'" if dashed else ""
        parts.append(f"<polyline class='nv-curve' data-label='{_esc(label)}' points='{path(x, y)}' fill='none' "
                     f"stroke='{colour}' stroke-width='1.8'{dash}/>")
    for i, (colour, dashed, *_rest, label) in enumerate(lines):
        yy = top + ph + bottom + 14 * i + 8
        dash = " stroke-dasharray='5 3'" if dashed else ""
        parts.append(f"<line x1='{left}' y1='{yy - 3}' x2='{left + 18}' y2='{yy - 3}' stroke='{colour}' "
                     f"stroke-width='2'{dash}/><text x='{left + 24}' y='{yy}'>{_esc(label)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _curves_section(curves: Sequence[FaithfulnessCurves | None], what: str, extra: str = "") -> str:
    """A panel of every group's curves, below ``extra`` (HTML); empty without either."""
    svgs = [curves_svg(c, g, title=f"{c.mode} · {g}") for c in curves if c is not None for g in c.groups]
    if not svgs and not extra:
        return ""
    return (f"<div class='nv-row'><section class='nv-panel nv-curves-panel'><h2>{_esc(what)}</h2>{extra}"
            f"<div class='nv-row'>{''.join(svgs)}</div></section></div>")


# ---------------------------------------------------------------------------------------------
# the explorer


def _ranks(scores: NeuronScores, metric: str, layer: str) -> tuple[dict[int, int], int]:
    n = scores.metric(metric)[layer].numel()
    ranked = scores.top(metric, n)[layer]
    return {int(c): i + 1 for i, c in enumerate(ranked)}, len(ranked)


def _neuron_text(scores: NeuronScores, layer: str, c: int, ranks: dict[str, tuple[dict[int, int], int]]) -> str:
    lines = [f"{layer} · channel {c}"]
    for metric in ("correlation", "precision"):
        rank, n = ranks[metric]
        where = f" (#{rank[c]} of {n})" if c in rank else ""
        lines.append(f"{metric} {format_score(metric, float(scores.metric(metric)[layer][c]))}{where}")
    excluded = getattr(scores, "excluded", {}).get(layer)
    if excluded is not None and bool(excluded.reshape(-1)[c]):
        lines[-1] += ", left out of the precision selection"
    lines.append(f"mean activation {float(scores.mean_activation[layer][c]):.3g}")
    return "\n".join(lines)


def _explorer_scatter(scores: NeuronScores, top_c: dict[str, list], top_p: dict[str, list],
                      texts: dict[str, list[str]]) -> tuple[str, int, int]:
    """The SVG scatter of every channel; returns it, the number of points and of channels left out (NaN)."""
    w, h, left, right, top, bottom = 620, 440, 62, 14, 14, 46
    pw, ph = w - left - right, h - top - bottom
    layers = list(scores.layers)
    corr = {la: scores.correlation[la].double().reshape(-1).numpy() for la in layers}
    prec = {la: scores.precision[la].double().reshape(-1).numpy() for la in layers}
    shown = {la: ~np.isnan(corr[la]) & ~np.isnan(prec[la]) & (prec[la] > 0) for la in layers}
    xs = np.concatenate([corr[la][shown[la]] for la in layers]) if layers else np.zeros(0)
    finite_p = np.concatenate([prec[la][shown[la] & np.isfinite(prec[la])] for la in layers]) if layers else xs
    any_inf = any(bool((shown[la] & np.isinf(prec[la])).any()) for la in layers)
    x0, x1 = (float(xs.min()), float(xs.max())) if xs.size else (0.0, 1.0)
    pad = 0.04 * (x1 - x0) if x1 > x0 else 0.05
    x0, x1 = x0 - pad, x1 + pad
    ly = np.log10(finite_p) if finite_p.size else np.zeros(1)
    y0, y1 = float(ly.min()), float(ly.max())
    pad = 0.05 * (y1 - y0) if y1 > y0 else 0.5
    y0, y1 = y0 - pad, y1 + pad
    inf_y, band = top + 6.0, (18.0 if any_inf else 0.0)  # +inf precision on a row above the finite range

    def px(c: float) -> float:
        return left + (c - x0) / (x1 - x0) * pw

    def py(p: float) -> float:
        if math.isinf(p):
            return inf_y
        return top + band + (y1 - math.log10(p)) / (y1 - y0) * (ph - band)

    out = [f"<svg class='nv-scatter' width='{w}' height='{h}' viewBox='0 0 {w} {h}' role='img' "
           "aria-label='correlation against precision of every channel'>"]
    for t in _nice_ticks(x0, x1):
        x = px(t)
        out.append(f"<line class='nv-grid' x1='{x:.1f}' y1='{top}' x2='{x:.1f}' y2='{top + ph}'/>"
                   f"<text x='{x:.1f}' y='{top + ph + 13}' text-anchor='middle'>{_tick_text(t)}</text>")
    for t in _log_ticks(y0, y1):
        y = py(t)
        out.append(f"<line class='nv-grid' x1='{left}' y1='{y:.1f}' x2='{left + pw}' y2='{y:.1f}'/>"
                   f"<text x='{left - 4}' y='{y + 3:.1f}' text-anchor='end'>{_tick_text(t)}</text>")
    if any_inf:
        out.append(f"<text x='{left - 4}' y='{inf_y + 4:.1f}' text-anchor='end' style='font-size:13px'>∞</text>")
    out.append(f"<line class='nv-axis' x1='{left}' y1='{top + ph}' x2='{left + pw}' y2='{top + ph}'/>"
               f"<line class='nv-axis' x1='{left}' y1='{top}' x2='{left}' y2='{top + ph}'/>"
               f"<text x='{left + pw / 2:.0f}' y='{h - 8}' text-anchor='middle' style='font-size:12px'>"
               "correlation  |r| with the output</text>"
               f"<text transform='translate(14 {top + ph / 2:.0f}) rotate(-90)' text-anchor='middle' "
               "style='font-size:12px'>precision  1 / variance  (log)</text>")
    plain: list[str] = []
    marked: list[str] = []
    marks: list[str] = []
    rings: list[str] = []
    n_points = n_hidden = 0
    for i, layer in enumerate(layers):
        colour, tc, tp = layer_colour(i), set(top_c[layer]), set(top_p[layer])
        for c in range(corr[layer].size):
            if not shown[layer][c]:
                n_hidden += 1
                continue
            n_points += 1
            x, y = px(float(corr[layer][c])), py(float(prec[layer][c]))
            key, label = _esc(f"{layer}|{c}"), _esc(f"{layer} · channel {c}")
            cls, extra = "nv-pt", " fill-opacity='0.6'"
            if c in tc:
                cls, extra = "nv-pt nv-topc", " r='5' stroke='#000' stroke-width='1.2'"
            if c in tp:
                cls += " nv-topp"
                marks.append(f"<path class='nv-mark' d='M{x:.1f} {y - 6.5:.1f}L{x + 6.5:.1f} {y:.1f}L{x:.1f} "
                             f"{y + 6.5:.1f}L{x - 6.5:.1f} {y:.1f}Z' fill='{colour}' stroke='#000' "
                             "stroke-width='1.2'/>")
                extra = extra if c in tc else ""
            if c in tc and c in tp:
                rings.append(f"<circle class='nv-mark nv-both' cx='{x:.1f}' cy='{y:.1f}' r='9.5' fill='none' "
                             f"stroke='{BOTH_COLOUR}' stroke-width='2'/>")
            r = "" if "r=" in extra else " r='3'"
            point = (f"<circle class='{cls}' cx='{x:.1f}' cy='{y:.1f}'{r}{extra} fill='{colour}' data-key='{key}' "
                     f"data-label='{label}'><title>{_esc(texts[layer][c])}</title></circle>")
            (marked if c in tc or c in tp else plain).append(point)
    whiskers = _whiskers(scores, top_c, top_p, px, py, (left, left + pw), (top, top + ph)) if scores.replicates else []
    out += plain + whiskers + marks + marked + rings
    out.append("<circle id='nv-ring' r='12' fill='none' stroke='#000' stroke-width='2' style='display:none'/></svg>")
    return "".join(out), n_points, n_hidden


def _whiskers(scores: NeuronScores, top_c: dict[str, list], top_p: dict[str, list], px: Any, py: Any,
              cols: tuple[float, float], rows: tuple[float, float]) -> list[str]:
    """SVG lines of the bootstrap intervals of every neuron in either top-k, as the figure draws them.

    Horizontal: the correlation interval; vertical: the precision interval (an infinite upper
    bound reaching the top; none where the lower bound is not positive); both clipped to the
    plot, ``cols`` and ``rows`` its x and y extent in pixels. A whisker names its neuron in
    ``data-of``, not ``data-key``: the page script takes the first ``data-key`` element as the
    neuron's point.
    """
    iv = {m: scores.interval(m, INTERVAL_LEVEL) for m in ("correlation", "precision")}
    out = []
    for layer in scores.layers:
        (c_lo, c_hi), (p_lo, p_hi) = iv["correlation"][layer], iv["precision"][layer]
        for c in dict.fromkeys(top_c[layer] + top_p[layer]):
            x, p = float(scores.correlation[layer][c]), float(scores.precision[layer][c])
            if math.isnan(x) or math.isnan(p) or not p > 0:
                continue  # not drawn on the scatter
            cx, cy = px(x), py(p)
            lo, hi = float(c_lo[c]), float(c_hi[c])
            if math.isfinite(lo) and math.isfinite(hi):
                x_lo, x_hi = max(px(lo), cols[0]), min(px(hi), cols[1])
                out.append(f"<line class='nv-whisker' data-of='{_esc(f'{layer}|{c}')}' x1='{x_lo:.1f}' "
                           f"y1='{cy:.1f}' x2='{x_hi:.1f}' y2='{cy:.1f}' stroke='{WHISKER_COLOUR}'/>")
            lo, hi = float(p_lo[c]), float(p_hi[c])
            if math.isfinite(p) and math.isfinite(lo) and lo > 0 and not math.isnan(hi):
                y_lo, y_hi = min(py(lo), rows[1]), max(py(hi), rows[0])
                out.append(f"<line class='nv-whisker' data-of='{_esc(f'{layer}|{c}')}' x1='{cx:.1f}' "
                           f"y1='{y_lo:.1f}' x2='{cx:.1f}' y2='{y_hi:.1f}' stroke='{WHISKER_COLOUR}'/>")
    return out


def _explorer_lists(scores: NeuronScores, k: int, top_c: dict[str, list], top_p: dict[str, list],
                    texts: dict[str, list[str]]) -> str:
    rows = []
    intervals = {m: (scores.rank_interval(m, INTERVAL_LEVEL), scores.tied(m, k, INTERVAL_LEVEL))
                 for m in ("correlation", "precision")} if scores.replicates else {}
    for i, layer in enumerate(scores.layers):
        both = set(top_c[layer]) & set(top_p[layer])
        cells = []
        for metric, chosen in (("correlation", top_c[layer]), ("precision", top_p[layer])):
            values = scores.metric(metric)[layer]
            notes = [""] * len(chosen)
            if metric in intervals:
                (r_lo, r_hi), ties = intervals[metric][0][layer], intervals[metric][1][layer]
                notes = [f" <span class='nv-rank{' nv-tied' if tied else ''}' style='color:"
                         f"{TIED_COLOUR if tied else '#595959'}'>{'≈ ' if tied else ''}#{r_lo[c]:.0f}–{r_hi[c]:.0f}"
                         "</span>" for c, tied in zip(chosen, ties)]
            items = "".join(
                f"<button class='nv-item{' nv-both' if c in both else ''}' data-key='{_esc(f'{layer}|{c}')}' "
                f"data-label='{_esc(f'{layer} · channel {c}')}' title='{_esc(texts[layer][c])}'>"
                f"ch {c} · {_esc(format_score(metric, float(values[c])))}{note}</button>"
                for c, note in zip(chosen, notes)
            ) or "<span class='nv-small'>no valid neuron</span>"
            cells.append(f"<td>{items}</td>")
        swatch = f"<span class='nv-swatch' style='background:{layer_colour(i)}'></span>"
        rows.append(f"<tr><td>{swatch}<b>{_esc(layer)}</b><br><span class='nv-small'>both: {len(both)}</span></td>"
                    f"{''.join(cells)}</tr>")
    ov = overlap(top_c, top_p)
    ov_text = "n/a" if math.isnan(ov) else f"{ov:.3f}"
    return (f"<table class='nv-table nv-lists'><tr><th>layer</th><th>top {k} by correlation</th>"
            f"<th>top {k} by precision</th></tr>{''.join(rows)}</table>"
            f"<p class='nv-overlap'>overlap of the two selections: <b>{ov_text}</b> (the paper's measure, max 0.5); "
            f"<span style='color:{BOTH_COLOUR}'>red</span>: chosen by both</p>")


def explorer_page(view: ExplorerView, *, settings: Sequence[tuple[str, object]] = (),
                  title: str = "Neuron explorer", model_name: str | None = None) -> str:
    """The explorer's view as one interactive HTML page.

    The correlation against log-precision scatter (one circle per scored channel, coloured by
    layer, the top-``k`` of each criterion marked, red rings where both chose it; hover a
    point for its numbers), the image with the selected neuron's activation map over it (an
    opacity slider, the box of the map's strongest cell), its numbers and its activation
    against the output over the copies, each layer's top-``k`` lists with the overlap, and
    the settings. Clicking a point or a list item selects that neuron. The overlays of the
    top-``k`` of each criterion and of the selected neuron are embedded; any other neuron
    shows its numbers and says its overlay is not in the page.

    Parameters
    ----------
    view : ExplorerView
        What the explorer shows (:meth:`neuronviz.NeuronExplorer.snapshot`).
    settings : sequence of (str, object)
        The settings of the run, shown as a table (name, value).
    title : str
        Heading and title of the page.
    model_name : str, optional
        The model's class name, for the heading.

    Returns
    -------
    str
        The page; :func:`write_page` saves it.

    Raises
    ------
    NeuronvizError
        Per-unit scores, ``k < 1``, a malformed image, or a selected neuron that is not scored.
    """
    scores, k = view.scores, view.k
    if scores.per_unit:
        raise NeuronvizError("the explorer's page shows per-channel scores; these were computed with per_unit=True")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise NeuronvizError(f"k must be a positive integer, got {k!r}")
    layers = list(scores.layers)
    selected = view.selected
    if selected is not None and (selected[0] not in layers or
                                 not 0 <= selected[1] < scores.correlation[selected[0]].numel()):
        raise NeuronvizError(f"the selected neuron {selected!r} is not among the scored channels")
    img = check_display_image(view.image)
    top_c, top_p = scores.top("correlation", k), scores.top("precision", k)
    texts = {}
    for layer in layers:
        ranks = {m: _ranks(scores, m, layer) for m in ("correlation", "precision")}
        texts[layer] = [_neuron_text(scores, layer, c, ranks) for c in range(scores.correlation[layer].numel())]
    if selected is None and layers:
        best = top_c[layers[0]]
        selected = (layers[0], int(best[0]) if best else 0)

    # the images: the picture once, a heat layer per embedded neuron
    base, (hh, ww) = _picture_png(img)
    output = {"probability": "output (probability)", "logit": "output (logit)"}.get(scores.output, "output")
    chosen = {(la, int(c)) for la in layers for c in [*top_c[la], *top_p[la]]}
    embed = sorted(chosen | ({selected} if selected else set()), key=lambda n: (layers.index(n[0]), n[1]))
    entries: dict[str, dict[str, Any]] = {}
    for layer, c in embed:
        m = view.maps.get(layer)
        entry: dict[str, Any] = {"h": [], "b": None, "n": "", "x": ""}
        if m is not None and m.dim() == 3 and m.shape[1] * m.shape[2] > 1:
            amap = m[c].detach().float().cpu()
            entry["h"] = [png_uri(heat_png(upsample_map(amap, (hh, ww))))]
            t, lf, b, r = cell_box(strongest_cell(amap), (amap.shape[0], amap.shape[1]), (hh, ww))
            entry["b"] = [round(100 * t / hh, 3), round(100 * lf / ww, 3), round(100 * b / hh, 3),
                          round(100 * r / ww, 3)]
            entry["n"] = "box: the map cell of the strongest activation"
        else:
            entry["n"] = "this layer has no spatial map"
        if scores.channel_means is not None:
            a = scores.channel_means[layer][:, c].double().numpy()
            entry["x"] = _mini_scatter(a, scores.outputs.double().numpy(), layer_colour(layers.index(layer)), output)
        entries[f"{layer}|{c}"] = entry

    scatter, n_points, n_hidden = _explorer_scatter(scores, top_c, top_p, texts)
    legend = "".join(f"<span><span class='nv-swatch' style='background:{layer_colour(i)}'></span>{_esc(la)}</span> "
                     for i, la in enumerate(layers))
    hidden = f" · {n_hidden} channel(s) with a NaN score not shown" if n_hidden else ""
    legend += (f"<br>black edge: top {k} by correlation · diamond: top {k} by precision · "
               f"<span style='color:{BOTH_COLOUR}'>red ring</span>: both · ∞: infinite precision{hidden}")
    if scores.replicates:
        n_boot = next(iter(scores.replicates["correlation"].values())).shape[0]
        legend += (f"<br>whiskers: {INTERVAL_LEVEL:.0%} bootstrap intervals of the top {k} ({n_boot} replicates) · "
                   f"in the lists, #: {INTERVAL_LEVEL:.0%} rank interval, ≈: tied with #{k + 1}")
    opacity = min(1.0, max(0.0, float(view.opacity)))
    knocked = ""
    if view.knockout is not None:
        what, before, after = view.knockout
        knocked = (f"<p class='nv-knockout'>knock-out of {_esc(what)}: the output goes from <b>{before:.4g}</b> to "
                   f"<b>{after:.4g}</b></p>")
    body = (
        "<div class='nv-row'>"
        "<section class='nv-panel nv-overlay-panel'><h2 id='nv-title'>the image</h2>"
        f"<div class='nv-stack'><img class='nv-picture' src='{png_uri(base)}' style='width:320px' alt='the image'>"
        f"<img class='nv-heat nv-shown' src='{_blank_uri()}' alt=''><div id='nv-box'></div></div>"
        f"<div class='nv-small'>opacity <input type='range' class='nv-opacity' min='0' max='1' step='0.05' "
        f"value='{opacity:.2f}' data-target='.nv-heat' data-out='nv-opacity-value'> <span id='nv-opacity-value'>"
        f"</span></div><div id='nv-numbers'></div><div id='nv-note' class='nv-small'></div>"
        "<div id='nv-extra'></div></section>"
        f"<section class='nv-panel nv-scatter-panel'><h2>every channel · {n_points} points</h2>{scatter}"
        f"<div class='nv-small'>{legend}</div><div id='nv-hover' class='nv-small'>hover a point for its numbers, "
        "click it to select it</div></section></div>"
        f"<div class='nv-row'><section class='nv-panel'><h2>selections</h2>"
        f"{_explorer_lists(scores, k, top_c, top_p, texts)}</section>"
        f"<section class='nv-panel'><h2>settings</h2>{_settings_table(settings)}</section></div>"
        f"{_curves_section([view.curves], 'knock-out and deletion curves', knocked)}"
    )
    target = class_label(scores.target, view.n_classes)
    seed = f", seed {scores.seed}" if scores.perturbation is not None else ""
    who = f"{_esc(model_name)} · " if model_name else ""
    subtitle = (f"{who}explaining the {_esc(scores.output)} of <b>{_esc(target)}</b>"
                f" · {scores.n_samples} perturbed copies{seed} · each channel's correlation with the output against "
                "its activation precision (Lengerich et al. 2017)")
    data = {"entries": entries, "selected": f"{selected[0]}|{selected[1]}" if selected else None,
            "blank": _blank_uri(), "missing": _MISSING.format(k=k)}
    note = f"The overlays of the top-{k} of each criterion and of the selected neuron are embedded."
    return _document("explorer", title, subtitle, body, data, note)


# ---------------------------------------------------------------------------------------------
# PCACE


def _layer_bars(ranking: LayerRanking, ids: dict[str, str]) -> str:
    rows = {r["layer"]: r for r in ranking.summary}
    names = list(ranking.layers)
    w, left, right, row_h, top = 420, 150, 50, 26, 8
    h = top + row_h * len(names) + 24
    hi = max([rows[n]["max"] for n in names if math.isfinite(rows[n]["max"])] or [1.0]) or 1.0
    pw = w - left - right
    out = [f"<svg class='nv-layer-ranking' width='{w}' height='{h}' viewBox='0 0 {w} {h}'>"]
    for i, name in enumerate(names):
        r, s = rows[name], ranking.layers[name]
        y = top + i * row_h
        mean = r["mean_top_k"] if math.isfinite(r["mean_top_k"]) else 0.0
        tip = (f"{name}: mean top-{ranking.k} {format_score('correlation', r['mean_top_k'])}, max "
               f"{format_score('correlation', r['max'])}, mean {format_score('correlation', r['mean'])}, "
               f"{r['channels']} channels")
        best = f"{name}|{s.top(1)[0]}"
        out.append(f"<text x='{left - 6}' y='{y + row_h / 2 + 3:.0f}' text-anchor='end'>{_esc(name)}</text>"
                   f"<rect class='nv-layerbar' data-show='{ids[name]}' data-select='{_esc(best)}' x='{left}' "
                   f"y='{y + 4}' width='{max(1.0, mean / hi * pw):.1f}' height='{row_h - 8}' fill='{_BAR_COLOUR}'>"
                   f"<title>{_esc(tip)}</title></rect>")
        if math.isfinite(r["max"]):
            x = left + r["max"] / hi * pw
            out.append(f"<path class='nv-mark' d='M{x:.1f} {y + 6}L{x + 5:.1f} {y + row_h / 2:.1f}L{x:.1f} "
                       f"{y + row_h - 6}L{x - 5:.1f} {y + row_h / 2:.1f}Z' fill='#444'/>")
    out.append(f"<text x='{left}' y='{h - 6}'>bar: mean top-{ranking.k} score · ◆ best channel · click a layer"
               "</text></svg>")
    return "".join(out)


def _channel_bars(layer: str, scores: Any, top: list[int], bottom: list[int], texts: list[str]) -> str:
    order = scores.ranking.tolist()
    values = scores.scores.double().numpy()
    n = len(order)
    w, h, left, right, top_m, bottom_m = 640, 230, 48, 10, 10, 30
    pw, ph = w - left - right, h - top_m - bottom_m
    finite = values[np.isfinite(values)]
    hi = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    bw = pw / max(1, n)
    out = [f"<svg class='nv-channel-bars' width='{w}' height='{h}' viewBox='0 0 {w} {h}'>"]
    for t in _nice_ticks(0.0, hi, 4):
        y = top_m + ph - t / hi * ph
        out.append(f"<line class='nv-grid' x1='{left}' y1='{y:.1f}' x2='{left + pw}' y2='{y:.1f}'/>"
                   f"<text x='{left - 4}' y='{y + 3:.1f}' text-anchor='end'>{_tick_text(t)}</text>")
    tops, bottoms = set(top), set(bottom)
    for rank, c in enumerate(order):
        v = float(values[c]) if math.isfinite(values[c]) else 0.0
        bh = max(0.5, v / hi * ph)
        colour = TOP_COLOUR if c in tops else BOTTOM_COLOUR if c in bottoms else _BAR_COLOUR
        out.append(f"<rect class='nv-bar' x='{left + rank * bw:.2f}' y='{top_m + ph - bh:.1f}' "
                   f"width='{max(bw * 0.85, 0.6):.2f}' height='{bh:.1f}' fill='{colour}' "
                   f"data-key='{_esc(f'{layer}|{c}')}' data-label='{_esc(f'{layer} · channel {c}')}'>"
                   f"<title>{_esc(texts[c])}</title></rect>")
    out.append(f"<line class='nv-axis' x1='{left}' y1='{top_m + ph}' x2='{left + pw}' y2='{top_m + ph}'/>"
               f"<text x='{left + pw / 2:.0f}' y='{h - 8}' text-anchor='middle'>{n} channels, best first</text>"
               f"<text transform='translate(12 {top_m + ph / 2:.0f}) rotate(-90)' text-anchor='middle'>PCACE score"
               "</text></svg>")
    return "".join(out)


def pcace_page(ranking: LayerRanking, maps: dict[str, torch.Tensor], pictures: np.ndarray | Sequence[np.ndarray], *,
               selected: tuple[str, int] | None = None, k: int | None = None,
               settings: Sequence[tuple[str, object]] = (), title: str = "PCACE", model_name: str | None = None,
               n_classes: int | None = None, opacity: float = 0.6,
               curves: FaithfulnessCurves | None = None) -> str:
    """A PCACE ranking as one interactive HTML page.

    The layer ranking (each layer's mean top-``k`` score as a bar, its best channel as a
    diamond, and the summary table; click a layer to show its channels), the shown layer's
    channel scores as bars, best first (top-``k`` green, bottom-``k`` grey; hover for the
    numbers, click to select), the selected channel's maps over the shown images with an
    opacity slider, and the settings. The maps of each layer's top and bottom channels (at
    most :data:`PCACE_EMBED_MAX` each) and of the selected channel are embedded.

    Parameters
    ----------
    ranking : LayerRanking
        The ranking.
    maps : dict of str to torch.Tensor
        Per layer, the (n, C, h, w) maps of the shown images (layers left out embed no maps).
    pictures : numpy.ndarray or sequence of numpy.ndarray
        The n shown images, (H, W, 3) in [0, 1].
    selected : tuple (str, int), optional
        The selected channel; default the best layer's best channel.
    k : int, optional
        Top and bottom channels marked; default ``ranking.k``.
    settings : sequence of (str, object)
        The settings of the run, shown as a table.
    title : str
        Heading and title of the page.
    model_name : str, optional
        The model's class name, for the heading.
    n_classes : int, optional
        The model's number of classes (1000 names the ImageNet class).
    opacity : float
        Initial opacity of the maps.
    curves : FaithfulnessCurves, optional
        Deletion curves (e.g. of the shown layer's PCACE ranking against random ones), drawn
        below.

    Returns
    -------
    str

    Raises
    ------
    NeuronvizError
        An empty ranking, a selected channel that is not ranked, maps that do not match.
    """
    names = list(ranking.layers)
    if not names:
        raise NeuronvizError("the ranking has no layer")
    k = ranking.k if k is None else k
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise NeuronvizError(f"k must be a positive integer, got {k!r}")
    if selected is None:
        best = ranking.best()
        selected = (best, ranking.layers[best].top(1)[0])
    layer_sel, channel_sel = selected
    if layer_sel not in names or not 0 <= channel_sel < ranking.layers[layer_sel].scores.numel():
        raise NeuronvizError(f"the selected channel {selected!r} is not ranked")
    pics = [check_display_image(p) for p in pictures]
    base = [_picture_png(p, min(PCACE_PICTURE_SIZE, max(p.shape[:2]))) for p in pics]
    ids = {name: f"nv-layer-{i}" for i, name in enumerate(names)}
    entries: dict[str, dict[str, Any]] = {}
    blocks = []
    for name in names:
        s = ranking.layers[name]
        n = s.scores.numel()
        kk = min(k, PCACE_EMBED_MAX, n)
        top, bottom = s.top(kk), s.bottom(kk)
        order = s.ranking.tolist()
        n_comp = s.n_components
        texts = []
        for c in range(n):
            ev = float(s.explained_variance[c].sum())
            texts.append(f"{name} · channel {c}\nPCACE score {format_score('correlation', float(s.scores[c]))} "
                         f"(#{order.index(c) + 1} of {n})\n{n_comp} component(s) explain {ev:.0%} of the "
                         "standardised variance")
        m = maps.get(name)
        if m is not None:
            if m.dim() != 4 or m.shape[0] != len(pics) or m.shape[1] != n:
                raise NeuronvizError(f"the maps of {name!r} are {tuple(m.shape)}; expected ({len(pics)}, {n}, h, w)")
            chosen = {*top, *bottom} | ({channel_sel} if name == layer_sel else set())
            for c in sorted(chosen):
                heats = [_map_heat(m[j, c].detach().float().cpu(), size) for j, (_png, size) in enumerate(base)]
                entries[f"{name}|{c}"] = {"h": heats, "n": "" if any(heats) else "this layer has no spatial map"}
        items = "".join(
            f"<button class='nv-item' data-key='{_esc(f'{name}|{c}')}' data-label='{_esc(f'{name} · channel {c}')}' "
            f"title='{_esc(texts[c])}' style='border-left:4px solid {colour}'>ch {c} · "
            f"{_esc(format_score('correlation', float(s.scores[c])))}</button>"
            for group, colour in ((top, TOP_COLOUR), (bottom, BOTTOM_COLOUR)) for c in group
        )
        blocks.append(f"<div class='nv-switch' id='{ids[name]}'><h2>{_esc(name)}: every channel's score</h2>"
                      f"{_channel_bars(name, s, top, bottom, texts)}<div class='nv-small'>"
                      f"<span style='color:{TOP_COLOUR}'>■</span> top {len(top)} · "
                      f"<span style='color:{BOTTOM_COLOUR}'>■</span> bottom {len(bottom)} (their maps are in the "
                      f"page; click a bar or a channel)</div><div class='nv-row nv-topbottom'>{items}</div></div>")
    table_rows = []
    for i, r in enumerate(ranking.summary):
        name = r["layer"]
        best_key = f"{name}|{ranking.layers[name].top(1)[0]}"
        table_rows.append(
            f"<tr data-show='{ids[name]}' data-select='{_esc(best_key)}' style='cursor:pointer'><td>{i + 1}</td>"
            f"<td>{_esc(name)}</td><td>{r['channels']}</td><td>{format_score('correlation', r['mean_top_k'])}</td>"
            f"<td>{format_score('correlation', r['max'])}</td><td>{format_score('correlation', r['mean'])}</td></tr>"
        )
    strip = "".join(
        f"<figure style='margin:0 8px 0 0'><div class='nv-stack'><img src='{png_uri(png)}' "
        f"style='width:{PCACE_PICTURE_SIZE}px' alt='image {j}'><img class='nv-heat nv-shown' src='{_blank_uri()}' "
        f"alt=''></div><figcaption class='nv-small'>image {j}</figcaption></figure>"
        for j, (png, _size) in enumerate(base)
    )
    body = (
        "<div class='nv-row'><section class='nv-panel'><h2>layers</h2>"
        f"{_layer_bars(ranking, ids)}<table class='nv-table'><tr><th>#</th><th>layer</th><th>channels</th>"
        f"<th>mean top-{ranking.k}</th><th>max</th><th>mean</th></tr>{''.join(table_rows)}</table></section>"
        f"<section class='nv-panel'>{''.join(blocks)}</section></div>"
        "<div class='nv-row'><section class='nv-panel'><h2 id='nv-title'>channel</h2>"
        f"<div class='nv-row'>{strip}</div><div class='nv-small'>opacity <input type='range' class='nv-opacity' "
        f"min='0' max='1' step='0.05' value='{min(1.0, max(0.0, float(opacity))):.2f}' data-target='.nv-heat' "
        "data-out='nv-opacity-value'> <span id='nv-opacity-value'></span></div><div id='nv-numbers'></div>"
        "<div id='nv-note' class='nv-small'></div><div id='nv-extra'></div><div id='nv-hover' class='nv-small'></div>"
        f"</section><section class='nv-panel'><h2>settings</h2>{_settings_table(settings)}</section></div>"
        f"{_curves_section([curves], 'deletion curves')}"
    )
    first = ranking.layers[names[0]]
    target = class_label(first.target, n_classes)
    who = f"{_esc(model_name)} · " if model_name else ""
    subtitle = (f"{who}explaining the logit of <b>{_esc(target)}</b> over "
                f"{first.n_images} images · each channel's maximal correlation between the principal components of "
                "its maps and the class logit (Casacuberta et al. 2021)")
    data = {"entries": entries, "selected": f"{layer_sel}|{channel_sel}", "shown": ids[layer_sel],
            "blank": _blank_uri(),
            "missing": (f"no maps of this channel in the page (it holds those of each layer's top and bottom "
                        f"{min(k, PCACE_EMBED_MAX)} and of the selected channel); its numbers are above")}
    note = "The maps of each layer's top and bottom channels and of the selected channel are embedded."
    return _document("pcace", title, subtitle, body, data, note)


# ---------------------------------------------------------------------------------------------
# guided feature inversion


def _loss_svg(stage1: np.ndarray, stage2: np.ndarray) -> str:
    """Both stages' loss per step: stage 1 on the left axis, stage 2 (continuing the step count) on the right."""
    w, h, left, right, top, bottom = 480, 260, 58, 58, 24, 34
    pw, ph = w - left - right, h - top - bottom
    n1, n2 = len(stage1), len(stage2)
    steps = max(1, n1 + n2)
    out = [f"<svg class='nv-losses' width='{w}' height='{h}' viewBox='0 0 {w} {h}' role='img' "
           "aria-label='loss per step'>",
           f"<text x='{left}' y='14' style='font-size:12px'>loss per step</text>",
           f"<line class='nv-axis' x1='{left}' y1='{top + ph}' x2='{left + pw}' y2='{top + ph}'/>",
           f"<text x='{left + pw / 2:.0f}' y='{h - 6}' text-anchor='middle'>step</text>"]
    for t in _nice_ticks(1, steps, 5):
        x = left + (t - 1) / max(1, steps - 1) * pw
        out.append(f"<text x='{x:.1f}' y='{top + ph + 12}' text-anchor='middle'>{int(t)}</text>")
    for i, (values, first, side) in enumerate(((stage1, 1, "left"), (stage2, n1 + 1, "right"))):
        colour = _STAGE_COLOURS[i]
        v = np.asarray(values, dtype=np.float64)
        ok = np.isfinite(v)
        if not ok.any():
            continue
        lo, hi = float(v[ok].min()), float(v[ok].max())
        lo, hi = (lo - 0.5, hi + 0.5) if hi <= lo else (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
        ax = left if side == "left" else left + pw
        anchor, dx = ("end", -4) if side == "left" else ("start", 4)
        out.append(f"<line class='nv-axis' x1='{ax}' y1='{top}' x2='{ax}' y2='{top + ph}' style='stroke:{colour}'/>")
        for t in _nice_ticks(lo, hi, 4):
            y = top + ph - (t - lo) / (hi - lo) * ph
            out.append(f"<text x='{ax + dx}' y='{y + 3:.1f}' text-anchor='{anchor}' style='fill:{colour}'>"
                       f"{_tick_text(float(f'{t:.3g}'))}</text>")
        pts = " ".join(f"{left + (first + j - 1) / max(1, steps - 1) * pw:.1f},"
                       f"{top + ph - (float(v[j]) - lo) / (hi - lo) * ph:.1f}" for j in range(v.size) if ok[j])
        stage = i + 1
        tip = f"stage {stage}: {v.size} steps, loss {float(v[ok][0]):.4g} to {float(v[ok][-1]):.4g}"
        out.append(f"<polyline class='nv-loss nv-loss-stage{stage}' points='{pts}' fill='none' stroke='{colour}' "
                   f"stroke-width='2'><title>{_esc(tip)}</title></polyline>")
    out.append(f"<text x='{left + pw}' y='14' text-anchor='end' style='font-size:11px'>"
               f"<tspan style='fill:{_STAGE_COLOURS[0]}'>stage 1 (left)</tspan>  "
               f"<tspan style='fill:{_STAGE_COLOURS[1]}'>stage 2 (right)</tspan></text></svg>")
    return "".join(out)


def inversion_page(result: InversionResult, pictures: Sequence[np.ndarray], *,
                   categories: Sequence[str] | None = None, settings: Sequence[tuple[str, object]] = (),
                   title: str = "Guided feature inversion", model_name: str | None = None, opacity: float = 0.6,
                   curves: FaithfulnessCurves | Sequence[FaithfulnessCurves] | None = None) -> str:
    """A guided feature inversion as one HTML page: each image, its stage-1 and stage-2 masks, the losses.

    The masks are laid over the image as drawn (no rescaling: a faint mask looks faint) with
    one opacity slider for all; the loss of every step of both stages is an SVG plot (stage 1
    on the left axis, stage 2 on the right).

    Parameters
    ----------
    result : InversionResult
        From :func:`neuronviz.guided_feature_inversion`.
    pictures : sequence of numpy.ndarray
        The explained images as drawn, (H, W, 3) in [0, 1] at the masks' size: one per mask or
        one for all.
    categories : sequence of str, optional
        Class names (default: ImageNet names for 1000-class targets).
    settings : sequence of (str, object)
        The settings of the run, shown as a table.
    title : str
        Heading and title of the page.
    model_name : str, optional
        The model's class name, for the heading.
    opacity : float
        Initial opacity of the masks.
    curves : FaithfulnessCurves or sequence of them, optional
        The mask's deletion and insertion curves (:func:`neuronviz.mask_deletion_curve`), drawn
        below.

    Returns
    -------
    str

    Raises
    ------
    NeuronvizError
        Pictures that do not match the masks in number or size.
    """
    if not isinstance(result, InversionResult):
        raise NeuronvizTypeError(f"result must be an InversionResult, got {type(result).__name__}")
    images = [check_display_image(p) for p in pictures]
    masks, stage1 = result.mask, result.inversion_mask
    if len(images) == 1 and masks.shape[0] > 1:
        images = images * masks.shape[0]
    if len(images) != masks.shape[0] or {tuple(i.shape[:2]) for i in images} != {tuple(masks.shape[-2:])}:
        raise NeuronvizError(f"{len(images)} picture(s) do not match {masks.shape[0]} mask(s) of "
                             f"{tuple(masks.shape[-2:])}: pass the pictures of the images that were explained")
    rows = []
    for b, img in enumerate(images):
        c = result.target[b]
        name = categories[c] if categories is not None and c is not None else class_label(c, 1000)
        png, _size = _picture_png(img)
        uri = png_uri(png)
        steps1, steps2 = result.losses["stage1"].shape[1], result.losses["stage2"].shape[1]
        cells = [f"<figure><img src='{uri}' style='width:260px' alt='image {b}'><figcaption>{_esc(name)}, "
                 f"p = {float(result.probability[b]):.3f}</figcaption></figure>"]
        for stage, mask, caption in ((1, stage1[b], f"stage 1: all salient objects · after {steps1} steps"),
                                     (2, masks[b], f"stage 2: {name} · after {steps2} more steps")):
            heat = np.clip(np.nan_to_num(mask.detach().float().cpu().numpy()), 0.0, 1.0)
            cells.append(f"<figure><div class='nv-stack'><img src='{uri}' style='width:260px' alt='image {b}'>"
                         f"<img class='nv-heat nv-mask nv-mask-stage{stage}' src='{png_uri(heat_png(heat))}' "
                         f"alt='stage-{stage} mask'></div><figcaption>{_esc(caption)} · mean "
                         f"{float(heat.mean()):.2f}</figcaption></figure>")
        kept1, kept2 = int((result.inversion_weights[b] > 0).sum()), int((result.weights[b] > 0).sum())
        info = (f"mask layer <code>{_esc(result.mask_layer)}</code> ({result.weights.shape[1]} channels), feature "
                f"layer <code>{_esc(result.feature_layer)}</code><br>channels in the mask: {kept1} after stage 1, "
                f"{kept2} after stage 2<br>background {_esc(result.background)}, {_esc(result.loss)} loss, delta "
                f"{result.delta:g}, recipe {_esc(result.recipe)}")
        losses = _loss_svg(result.losses["stage1"][b].numpy(), result.losses["stage2"][b].numpy())
        rows.append(f"<div class='nv-row'><section class='nv-panel nv-row'>{''.join(cells)}</section>"
                    f"<section class='nv-panel'>{losses}<div class='nv-small'>{info}</div></section></div>")
    several = [] if curves is None else [curves] if isinstance(curves, FaithfulnessCurves) else list(curves)
    body = (f"<div class='nv-small'>mask opacity <input type='range' class='nv-opacity' min='0' max='1' step='0.05' "
            f"value='{min(1.0, max(0.0, float(opacity))):.2f}' data-target='.nv-heat' data-out='nv-opacity-value'> "
            f"<span id='nv-opacity-value'></span></div>{''.join(rows)}"
            f"{_curves_section(several, 'deletion and insertion curves of the stage-2 mask')}"
            f"<section class='nv-panel'><h2>settings</h2>{_settings_table(settings)}</section>")
    who = f"{_esc(model_name)} · " if model_name else ""
    subtitle = (f"{who}stage 1 keeps what reproduces the image's features at "
                f"<code>{_esc(result.feature_layer)}</code>, stage 2 the part that the target class needs "
                "(Du et al. 2018)")
    return _document("inversion", title, subtitle, body, {"blank": _blank_uri(), "entries": {}}, "")
