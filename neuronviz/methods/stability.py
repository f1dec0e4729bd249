"""How sure a neuron selection is: bootstrap intervals, rank intervals, ties, and selection stability.

The replicates come from :func:`neuronviz.score_neurons` with ``bootstrap=B`` (a Poisson
bootstrap accumulated in the scoring pass). A percentile interval at level L is the
(1 - L) / 2 and (1 + L) / 2 quantiles of the replicates. A neuron of the top-k is *tied* with
the (k+1)-th when the interval of their replicate difference contains 0. The *stability* of a
selection is the mean Jaccard index of the top-k between replicates, or between independent
perturbation sets (seeds).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from ..core.archive import Archived, archived
from ..core.errors import NeuronvizError
from .resampling import METRICS, NeuronScores, score_neurons

__all__ = ["SelectionStability", "selection_stability", "replicate_stability", "replicate_interval",
           "replicate_rank_interval", "replicate_ties"]


def _quantiles(level: float) -> tuple[float, float]:
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise NeuronvizError(f"level must be a number strictly between 0 and 1 (e.g. 0.9), got {level!r}")
    return (1 - level) / 2, (1 + level) / 2


def _key(replicates: torch.Tensor, metric: str) -> torch.Tensor:
    """What ranks a neuron, larger is better: the correlation, or minus the variance (so +inf precision compares)."""
    r = replicates.double()
    return r if metric == "correlation" else -(1.0 / r)


def replicate_interval(replicates: torch.Tensor, metric: str, level: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
    """The percentile interval of each neuron's replicates.

    Parameters
    ----------
    replicates : torch.Tensor
        (B, ...) replicate scores.
    metric : {"correlation", "precision"}
        Precision is taken through its variance (1 / precision), so infinite values are handled.
    level : float
        Coverage in (0, 1).

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        Lower and upper bounds shaped like one replicate; NaN where every replicate is NaN.

    Raises
    ------
    NeuronvizError
        A level outside (0, 1).
    """
    lo, hi = _quantiles(level)
    r = replicates.double()
    q = torch.tensor([lo, hi], dtype=torch.float64)
    if metric == "correlation":
        bounds = torch.nanquantile(r, q, dim=0)
        return bounds[0], bounds[1]
    var = torch.nanquantile(1.0 / r, q, dim=0)  # 1 / inf = 0: a constant replicate has zero variance
    return 1.0 / var[1], 1.0 / var[0]


def _ranks(replicates: torch.Tensor, metric: str, selectable: torch.Tensor) -> torch.Tensor:
    """(B, n) rank of every neuron in every replicate (1 = best; unselectable ones last, by index)."""
    b = replicates.shape[0]
    key = _key(replicates, metric).reshape(b, -1)
    ok = selectable.reshape(1, -1).to(key.device) & ~torch.isnan(key)
    key = torch.where(ok, key, torch.full_like(key, -math.inf))
    order = _order(key, ok)  # unselectable ones after every selectable one
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(1, key.shape[1] + 1).expand(b, -1).contiguous())
    return ranks


def _order(key: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
    """Indices of each row best first: selectable by key (ties by index), then the others by index."""
    first = torch.sort(-key, dim=1, stable=True).indices
    rank_ok = torch.gather(ok, 1, first)
    return torch.gather(first, 1, torch.sort((~rank_ok).to(torch.int8), dim=1, stable=True).indices)


def replicate_rank_interval(replicates: torch.Tensor, metric: str, level: float = 0.9,
                            selectable: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The percentile interval of each neuron's rank (1 = best) over the replicates.

    Parameters
    ----------
    replicates : torch.Tensor
        (B, ...) replicate scores.
    metric : {"correlation", "precision"}
        Which score they are.
    level : float
        Coverage in (0, 1).
    selectable : torch.Tensor, optional
        Bool, shaped like one replicate: the neurons that may be selected (others rank last).

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        Lower and upper ranks (float64), shaped like one replicate.

    Raises
    ------
    NeuronvizError
        A level outside (0, 1).
    """
    lo, hi = _quantiles(level)
    shape = replicates.shape[1:]
    ok = torch.ones(shape, dtype=torch.bool) if selectable is None else selectable
    ranks = _ranks(replicates, metric, ok).double()
    bounds = torch.quantile(ranks, torch.tensor([lo, hi], dtype=torch.float64), dim=0)
    return bounds[0].reshape(shape), bounds[1].reshape(shape)


def _column(replicates: torch.Tensor, neuron: Any) -> torch.Tensor:
    if isinstance(neuron, tuple):
        return replicates[(slice(None), *neuron)]
    return replicates.reshape(replicates.shape[0], -1)[:, int(neuron)]


def replicate_ties(replicates: torch.Tensor, metric: str, chosen: Sequence[Any], k: int, level: float = 0.9,
                   per_unit: bool = False) -> list[bool]:
    """For each of the first ``k`` of ``chosen``: whether it is tied with ``chosen[k]``.

    Parameters
    ----------
    replicates : torch.Tensor
        (B, ...) replicate scores.
    metric : {"correlation", "precision"}
        Which score.
    chosen : sequence
        The top ``k + 1`` neurons, best first (channels, or (c, h, w) tuples).
    k : int
        Size of the selection.
    level : float
        Coverage of the interval of the difference.
    per_unit : bool
        Unused; the neurons' form says it.

    Returns
    -------
    list of bool
        ``min(k, len(chosen))`` flags; all False when there is no (k+1)-th.

    Raises
    ------
    NeuronvizError
        ``k < 0`` or a level outside (0, 1).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise NeuronvizError(f"k must be an integer >= 0, got {k!r}")
    lo, hi = _quantiles(level)
    if len(chosen) <= k:
        return [False] * len(chosen)
    key = _key(replicates, metric)
    ref = _column(key, chosen[k])
    q = torch.tensor([lo, hi], dtype=torch.float64)
    flags = []
    for neuron in chosen[:k]:
        diff = _column(key, neuron) - ref
        diff = torch.where(torch.isinf(diff) & (diff > 0), torch.full_like(diff, 1e300), diff)
        diff = torch.where(torch.isinf(diff), torch.full_like(diff, -1e300), diff)
        b = torch.nanquantile(diff, q)
        flags.append(bool(torch.isnan(b).any()) or bool(b[0] <= 0 <= b[1]))
    return flags


def _replicate_tops(scores: NeuronScores, metric: str, layer: str, k: int) -> torch.Tensor:
    """(B, n) bool: each replicate's top ``k`` of ``layer`` by ``metric``."""
    assert scores.replicates is not None  # the callers check that the scores hold replicates
    reps = scores.replicates[metric][layer]
    b = reps.shape[0]
    key = _key(reps, metric).reshape(b, -1)
    ok = scores._selectable(metric, layer).reshape(1, -1) & ~torch.isnan(key)
    order = _order(torch.where(ok, key, torch.full_like(key, -math.inf)), ok)[:, :k]
    top = torch.zeros_like(ok)
    top.scatter_(1, order, torch.gather(ok, 1, order))
    return top


def _mean_pairwise_jaccard(sets: torch.Tensor) -> float:
    """Mean Jaccard index over every pair of rows of a (m, n) bool matrix (pairs of two empty sets left out)."""
    x = sets.double()
    inter = x @ x.T
    size = x.sum(1)
    union = size[:, None] + size[None, :] - inter
    i, j = torch.triu_indices(len(x), len(x), offset=1)
    u = union[i, j]
    keep = u > 0
    return float((inter[i, j][keep] / u[keep]).mean()) if bool(keep.any()) else math.nan


@archived('SelectionStability')
@dataclass
class SelectionStability(Archived):
    """Mean Jaccard index of the top-k between independent sets, per layer and criterion.

    Attributes
    ----------
    jaccard : dict of str to dict of str to float
        ``jaccard[metric][layer]``: 1 when every set chose the same top-k; NaN when no set
        chose any neuron.
    k : int
        Size of each selection.
    source : str
        ``"seeds"`` (independent perturbation sets) or ``"bootstrap"`` (replicates of one set).
    n_sets : int
        Seeds or replicates compared (every pair).
    layers : list of str
        The layers, in order.
    """

    jaccard: dict[str, dict[str, float]]
    k: int
    source: str
    n_sets: int
    layers: list[str] = field(default_factory=list)

    def mean(self, metric: str) -> float:
        """The mean over layers of ``jaccard[metric]`` (NaN layers left out)."""
        values = [v for v in self.jaccard[metric].values() if not math.isnan(v)]
        return sum(values) / len(values) if values else math.nan

    def as_rows(self) -> list[dict]:
        """One dict per (layer, metric): ``layer, metric, jaccard, k, source, n_sets``."""
        return [{"layer": layer, "metric": metric, "jaccard": self.jaccard[metric][layer], "k": self.k,
                 "source": self.source, "n_sets": self.n_sets} for layer in self.layers for metric in self.jaccard]

    def __repr__(self) -> str:
        parts = ", ".join(f"{m} {self.mean(m):.2f}" for m in self.jaccard)
        return f"SelectionStability(top-{self.k}, {self.n_sets} {self.source}: mean Jaccard {parts})"


def _check_k(k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise NeuronvizError(f"k must be an integer >= 1, got {k!r}")
    return k


def replicate_stability(scores: NeuronScores, k: int = 5, metrics: Sequence[str] = METRICS) -> SelectionStability:
    """Selection stability from the bootstrap replicates of one scoring pass (no model run).

    Parameters
    ----------
    scores : NeuronScores
        Scored with ``bootstrap=B``.
    k : int
        Size of each selection.
    metrics : sequence of str
        Criteria.

    Returns
    -------
    SelectionStability

    Raises
    ------
    NeuronvizError
        Scores without replicates, a bad ``k`` or metric.
    """
    k = _check_k(k)
    out: dict[str, dict[str, float]] = {}
    n = 0
    for metric in metrics:
        reps = scores._replicates(metric)
        out[metric] = {layer: _mean_pairwise_jaccard(_replicate_tops(scores, metric, layer, k))
                       for layer in scores.layers}
        n = next(iter(reps.values())).shape[0]
    return SelectionStability(out, k, "bootstrap", n, list(scores.layers))


def selection_stability(model: nn.Module, x: torch.Tensor, layers: str | Sequence[str], *,
                        seeds: Sequence[int] | None = None, k: int = 5, bootstrap: int | None = None,
                        metrics: Sequence[str] = METRICS, **score_kwargs: Any) -> SelectionStability:
    """The mean Jaccard index of the top-``k`` across independent perturbation sets, per layer and criterion.

    With ``seeds``, one :func:`~neuronviz.score_neurons` pass per seed (independent perturbed
    sets) and every pair of seeds compared; with ``bootstrap=B`` instead, one pass and every
    pair of its B Poisson-bootstrap replicates compared (cheaper; it measures the resampling
    of the same copies).

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    x : torch.Tensor
        The image.
    layers : str or sequence of str
        Layers to score.
    seeds : sequence of int, optional
        At least 2 distinct seeds; default ``range(5)`` unless ``bootstrap`` is given.
    k : int
        Size of each selection.
    bootstrap : int, optional
        Compare bootstrap replicates (B >= 2) instead of seeds.
    metrics : sequence of str
        Criteria (default both).
    **score_kwargs
        Passed to :func:`~neuronviz.score_neurons` (``n_samples``, ``perturbation``, ``target`` ...).

    Returns
    -------
    SelectionStability

    Raises
    ------
    NeuronvizError
        Both or too few seeds, a bad ``k``, metric or bootstrap count, or what
        :func:`~neuronviz.score_neurons` raises.
    """
    k = _check_k(k)
    for metric in metrics:
        if metric not in METRICS:
            raise NeuronvizError(f"metrics must be among {METRICS}, got {metric!r}")
    if "seed" in score_kwargs:
        raise NeuronvizError("give the perturbation seeds as seeds=[...], not seed=")
    if bootstrap is not None:
        if seeds is not None:
            raise NeuronvizError("give seeds= or bootstrap=, not both")
        scores = score_neurons(model, x, layers, bootstrap=bootstrap, **score_kwargs)
        return replicate_stability(scores, k, metrics)
    seeds = list(range(5)) if seeds is None else list(seeds)
    if len(set(seeds)) < 2 or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
        raise NeuronvizError(f"seeds must hold at least 2 distinct integers, got {seeds!r}")
    tops = []
    for s in dict.fromkeys(seeds):
        sc = score_neurons(model, x, layers, seed=s, **score_kwargs)
        tops.append({metric: sc.top(metric, k) for metric in metrics})
        names = list(sc.layers)
    out: dict[str, dict[str, float]] = {}
    for metric in metrics:
        out[metric] = {}
        for layer in names:
            pairs = [_jaccard(a[metric][layer], b[metric][layer]) for a, b in itertools.combinations(tops, 2)]
            pairs = [p for p in pairs if not math.isnan(p)]
            out[metric][layer] = sum(pairs) / len(pairs) if pairs else math.nan
    return SelectionStability(out, k, "seeds", len(tops), names)


def _jaccard(a: Sequence, b: Sequence) -> float:
    sa, sb = {tuple(v) if isinstance(v, list) else v for v in a}, {tuple(v) if isinstance(v, list) else v for v in b}
    union = sa | sb
    return len(sa & sb) / len(union) if union else math.nan
