"""Bootstrap intervals in the explorer: whiskers on the scatter, rank intervals and ties, selection stability."""

from __future__ import annotations

import html
import math
from typing import Any

import bqplot
import ipywidgets as W
import numpy as np

from ...methods.resampling import NeuronScores
from ...methods.stability import replicate_stability
from ...render.explorer import INTERVAL_LEVEL
from ...render.formatting import format_score

__all__ = ["IntervalPanel", "interval_rows", "LEVEL"]

#: Level of every interval the explorer shows (the same as its exported figure's).
LEVEL = INTERVAL_LEVEL


def interval_rows(scores: NeuronScores, k: int, level: float = LEVEL) -> dict[tuple[str, int], dict[str, Any]]:
    """Per scored channel, its intervals, rank intervals and whether it is tied in each metric's top-``k``.

    Parameters
    ----------
    scores : NeuronScores
        Scored with ``bootstrap``; without replicates the result is empty.
    k : int
        Size of each metric's selection.
    level : float
        Level of the intervals.

    Returns
    -------
    dict
        ``{(layer, channel): {"correlation_lo", "correlation_hi", "precision_lo", "precision_hi",
        "correlation_rank_lo", "correlation_rank_hi", "precision_rank_lo", "precision_rank_hi",
        "tied_correlation", "tied_precision"}}`` (the ``tied_`` flags: in that top-``k`` and not
        distinguishable from the (k+1)-th).
    """
    if not scores.replicates:
        return {}
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for metric in ("correlation", "precision"):
        iv, ranks = scores.interval(metric, level), scores.rank_interval(metric, level)
        top, ties = scores.top(metric, k), scores.tied(metric, k, level)
        for layer in scores.layers:
            lo, hi = iv[layer][0].reshape(-1).tolist(), iv[layer][1].reshape(-1).tolist()
            rlo, rhi = ranks[layer][0].reshape(-1).tolist(), ranks[layer][1].reshape(-1).tolist()
            tied = {c for c, t in zip(top[layer], ties[layer]) if t}
            for c in range(len(lo)):
                row = out.setdefault((layer, c), {})
                row.update({f"{metric}_lo": lo[c], f"{metric}_hi": hi[c], f"{metric}_rank_lo": rlo[c],
                            f"{metric}_rank_hi": rhi[c], f"tied_{metric}": c in tied})
    return out


class IntervalPanel:
    """Whiskers of the top-k's 90 % intervals on the scatter, the top-k's rank intervals, ties and stability.

    Horizontal whiskers are the correlation intervals, vertical ones the precision intervals,
    of the neurons in either top-k. The table lists each top-k entry's rank interval and marks
    with ``≈`` those tied with the (k+1)-th. The stability line (mean Jaccard of the top-k
    between bootstrap replicates) goes beside the overlap of the selection lists.

    DOM classes: ``nv-rank-intervals`` (the table), ``nv-stability`` (the stability line).

    Parameters
    ----------
    scatter : NeuronScatter
        The scatter whose figure gets the whiskers.
    """

    def __init__(self, scatter: Any) -> None:
        self.scatter = scatter
        scales = {"x": scatter.x_scale, "y": scatter.y_scale}
        self.h_mark = bqplot.Lines(x=np.zeros((0, 2)), y=np.zeros((0, 2)), scales=scales, colors=["#555555"],
                                   stroke_width=1.2)
        self.v_mark = bqplot.Lines(x=np.zeros((0, 2)), y=np.zeros((0, 2)), scales=scales, colors=["#555555"],
                                   stroke_width=1.2)
        scatter.figure.marks = [*scatter.figure.marks, self.h_mark, self.v_mark]
        self.table = W.HTML("")
        self.table.add_class("nv-rank-intervals")
        self.stability = W.HTML("")
        self.stability.add_class("nv-stability")
        self.widget = W.VBox([self.table], layout=W.Layout(width="330px"))
        self.rows: dict[tuple[str, int], dict[str, Any]] = {}
        self.whiskers: list[tuple[str, int]] = []

    def clear(self, note: str = "") -> None:
        """No intervals (e.g. while a live run refines): empty whiskers and table."""
        self.rows, self.whiskers = {}, []
        for mark in (self.h_mark, self.v_mark):
            if len(mark.x) == 0:
                continue  # already empty: no message (each partial of a live run clears)
            with mark.hold_sync():
                mark.x, mark.y = np.zeros((0, 2)), np.zeros((0, 2))
        self.table.value = f"<span style='font-size:11px;color:#555'>{html.escape(note)}</span>" if note else ""

    def show(self, scores: NeuronScores, k: int) -> None:
        """Draw the intervals of ``scores`` for each metric's top ``k``."""
        self.rows = interval_rows(scores, k)
        if not self.rows:
            self.clear()
            self.stability.value = ""
            return
        top_c, top_p = scores.top("correlation", k), scores.top("precision", k)
        both = ((layer, c) for layer in scores.layers for c in top_c[layer] + top_p[layer])
        self.whiskers = list(dict.fromkeys(both))
        hx, hy, vx, vy = [], [], [], []
        for neuron in self.whiskers:
            i = self.scatter.index.get(neuron)
            if i is None:
                continue
            x, y, row = float(self.scatter.x[i]), float(self.scatter.y[i]), self.rows[neuron]
            hx.append([_finite(row["correlation_lo"], x), _finite(row["correlation_hi"], x)])
            hy.append([y, y])
            vx.append([x, x])
            vy.append([_clip(row["precision_lo"], y, self.scatter), _clip(row["precision_hi"], y, self.scatter)])
        for mark, xs, ys in ((self.h_mark, hx, hy), (self.v_mark, vx, vy)):
            with mark.hold_sync():
                mark.x = np.asarray(xs, dtype=float).reshape(-1, 2)
                mark.y = np.asarray(ys, dtype=float).reshape(-1, 2)
        self.table.value = _table(scores, k, self.rows)
        st = replicate_stability(scores, k)
        self.stability.value = (
            f"<span style='font-size:12px'>stability of the top-{k} over {st.n_sets} bootstrap replicates "
            f"(mean Jaccard): correlation {_fmt(st.mean('correlation'))} · "
            f"precision {_fmt(st.mean('precision'))}</span>"
        )


def _finite(v: float, default: float) -> float:
    return v if math.isfinite(v) else default


def _clip(v: float, default: float, scatter: Any) -> float:
    lo, hi = scatter.y_scale.min, scatter.y_scale.max
    if math.isnan(v):
        return default
    return float(min(max(v, lo or v), hi or v)) if math.isfinite(v) else float(hi or default)


def _fmt(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.2f}"


def _table(scores: NeuronScores, k: int, rows: dict) -> str:
    parts = [f"<b>rank intervals</b> <span style='font-size:11px;color:#555'>({int(LEVEL * 100)} %, "
             f"≈ tied with #{k + 1})</span>"]
    for layer in scores.layers:
        cells = []
        for metric in ("correlation", "precision"):
            items = []
            for rank, c in enumerate(scores.top(metric, k)[layer], 1):
                row = rows[(layer, c)]
                mark = "≈" if row[f"tied_{metric}"] else "&nbsp;"
                items.append(f"{mark} ch {c} #{rank} [{row[f'{metric}_rank_lo']:.0f}–{row[f'{metric}_rank_hi']:.0f}] "
                             f"{format_score(metric, float(scores.metric(metric)[layer][c]))}")
            cells.append(f"<td style='vertical-align:top;padding-right:8px'><i>{metric}</i><br>"
                         f"{'<br>'.join(items)}</td>")
        parts.append(f"<div style='font-size:11px'><b>{html.escape(layer)}</b><table><tr>{''.join(cells)}</tr>"
                     "</table></div>")
    return "".join(parts)
