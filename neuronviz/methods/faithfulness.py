"""Faithfulness curves: the output as a ranking's top neurons (or a mask's top pixels) are removed or kept.

For a ranking r (best first) of the neurons of a layer (``shared/research/evidence.md``):

* **deletion** ``D(k) = o(x with r[:k] knocked out)``;
* **insertion** ``I(k) = o(x with every neuron of the layer but r[:k] knocked out)``.

The area under the curve is taken by the trapezoid rule over ``k / K`` (K the largest k), divided
by ``o(x)`` and by the span of ``k / K`` (1 when the ks start at 0), so it is the curve's mean
height relative to the unperturbed output and compares across rankings, layers, models and
images: a lower deletion AUC and a higher insertion AUC mean a ranking whose top neurons carry
more of the output. Correlation is a magnitude (``|Pearson|``), so its top neurons may push the
output either way: each curve also reports its mean ``|o_k / o(x) - 1|`` (:func:`mean_change`,
``influence``), how far the output moves whichever way. Random rankings (``random`` seeds, each a
uniform permutation of the layer's neurons, or of all the layers' neurons for the curve across
layers) give the reference, as their mean and 5-95 % band.

Rankings of several layers are compared per layer, and optionally across the layers, merged by
rank: rank 0 of every layer (in the order of ``layers``), then rank 1, ... (scores of different
layers are not on one scale, so merging by score value would favour some layers).

Every curve point of every ranking is one knock-out set, and all of them run together in the
batched passes of :mod:`neuronviz.methods.knockout` (identical sets, such as ``k = 0`` of every
ranking, run once). For input masks (guided feature inversion) the same curves are taken over
pixels ordered by mask value (Petsiuk, Das & Saenko, RISE, BMVC 2018): removed pixels take the
value of a blurred copy or of the mean colour, in steps of a fixed share of the pixels.

The figure is drawn by :func:`neuronviz.render.faithfulness.render_faithfulness`, which
registers itself as :meth:`FaithfulnessCurves.plot`'s renderer when neuronviz is imported
(methods never import render).
"""

from __future__ import annotations

import math
import warnings
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence, cast

import numpy as np
import torch
from torch import nn

from ..core.archive import Archived, archived
from ..core.batching import run_batched
from ..core.errors import NeuronvizError, NeuronvizTypeError, NeuronvizWarning
from ..core.layouts import LayoutSpec, check_layout_spec
from ..core.locks import runs_model
from ..core.model_state import on_device, preserved_state, resolve_device
from ..core.perturb import Perturbation
from ..core.progress import ProgressArg, images_of, is_long, reports_progress
from ..core.targets import TargetSpec, resolve_target
from ..core.validation import check_image, check_int, forward_checked, plain
from .baselines import BASELINES, BaselineScores
from .inversion import BACKGROUNDS, InversionResult, make_background
from .knockout import How, _check_batch_size, run_sets
from .pcace import LayerRanking, PCACEScores
from .resampling import METRICS, NeuronScores

if TYPE_CHECKING:
    import pandas

__all__ = [
    "Curve", "FaithfulnessCurves", "deletion_curve", "mask_deletion_curve", "collect_rankings", "normalised_auc",
    "mean_change",
    "MODES", "ALL_LAYERS", "PIXELS", "register_plotter",
]

MODES = ("deletion", "insertion")
#: The group name of the curves over several layers merged by rank.
ALL_LAYERS = "all layers"
#: The group name of the curves over an input mask's pixels.
PIXELS = "pixels"
#: Default number of curve points, and default largest k.
DEFAULT_POINTS, DEFAULT_K = 17, 32

_PLOTTER: list[Callable[..., Any]] = []


def register_plotter(fn: Callable[..., Any]) -> None:
    """Set the function :meth:`FaithfulnessCurves.plot` draws with (the render layer registers its own).

    Parameters
    ----------
    fn : callable
        ``fn(curves, **options) -> matplotlib.figure.Figure``.
    """
    _PLOTTER[:] = [fn]


def normalised_auc(values: np.ndarray, fraction: np.ndarray, original: float) -> float:
    """Trapezoid area under ``values / original`` over ``fraction``, divided by the fraction's span.

    Parameters
    ----------
    values : numpy.ndarray
        The curve, one value per point.
    fraction : numpy.ndarray
        ``k / K`` of each point, increasing.
    original : float
        ``o(x)``.

    Returns
    -------
    float
        The mean relative height of the curve (the single value when there is one point); NaN
        when ``original`` is 0.
    """
    if original == 0:
        return math.nan
    y = np.asarray(values, dtype=float) / original
    f = np.asarray(fraction, dtype=float)
    if len(f) < 2 or f[-1] == f[0]:
        return float(y.mean())
    area = float(np.sum((y[1:] + y[:-1]) * np.diff(f)) / 2)
    return area / float(f[-1] - f[0])


def mean_change(values: np.ndarray, fraction: np.ndarray, original: float) -> float:
    """:func:`normalised_auc` of ``|values / original - 1|``: how far the curve strays from the unperturbed output.

    Parameters
    ----------
    values : numpy.ndarray
        The curve.
    fraction : numpy.ndarray
        ``k / K`` of each point.
    original : float
        ``o(x)``.

    Returns
    -------
    float
        0 for a flat curve; NaN when ``original`` is 0.
    """
    if original == 0:
        return math.nan
    return normalised_auc(np.abs(np.asarray(values, dtype=float) / original - 1.0), fraction, 1.0)


@archived('Curve')
@dataclass
class Curve(Archived):
    """One deletion or insertion curve.

    Attributes
    ----------
    ranking : str
        ``"correlation"``, ``"precision"``, ``"pcace"``, a baseline's name, ``"random"``,
        ``"mask"`` or a name given.
    group : str
        The layer, :data:`ALL_LAYERS`, or :data:`PIXELS`.
    mode : str
        ``"deletion"`` or ``"insertion"``.
    ks : numpy.ndarray
        (P,) how many neurons (or the step number, for pixels) at each point.
    total : int
        K, the largest k: the x axis is ``ks / total``.
    values : numpy.ndarray
        (P,) the target output at each point (for random rankings, the mean over seeds).
    auc : float
        :func:`normalised_auc` of the curve (random: the mean of the seeds' AUCs).
    seeds : numpy.ndarray or None
        (R, P) the curve of each random seed.
    aucs : numpy.ndarray or None
        (R,) the AUC of each random seed.
    influence : float
        :func:`mean_change` of the curve: the mean of ``|o_k / o(x) - 1|``, how far the output
        moves whichever way (knocking out a neuron that works against the class raises the
        output, which the AUC counts as unfaithful); random: the mean over seeds.
    influences : numpy.ndarray or None
        (R,) the influence of each random seed.
    """

    ranking: str
    group: str
    mode: str
    ks: np.ndarray
    total: int
    values: np.ndarray
    auc: float
    seeds: np.ndarray | None = None
    aucs: np.ndarray | None = None
    influence: float = math.nan
    influences: np.ndarray | None = None

    @property
    def fraction(self) -> np.ndarray:
        """``ks / total``, the x axis."""
        return self.ks / max(self.total, 1)

    @property
    def is_random(self) -> bool:
        """Whether the curve averages random rankings."""
        return self.seeds is not None

    def band(self, level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        """The central ``level`` band of the random seeds' curves (the curve itself twice otherwise).

        Parameters
        ----------
        level : float
            0.9 gives the 5-95 % quantiles.

        Returns
        -------
        (numpy.ndarray, numpy.ndarray)
            Lower and upper curves.
        """
        if self.seeds is None:
            return self.values, self.values
        q = (1 - level) / 2
        return np.quantile(self.seeds, q, axis=0), np.quantile(self.seeds, 1 - q, axis=0)

    def auc_band(self, level: float = 0.9) -> tuple[float, float]:
        """The central ``level`` band of the random seeds' AUCs (the AUC twice otherwise)."""
        if self.aucs is None:
            return self.auc, self.auc
        q = (1 - level) / 2
        return float(np.quantile(self.aucs, q)), float(np.quantile(self.aucs, 1 - q))


@archived('FaithfulnessCurves')
@dataclass
class FaithfulnessCurves(Archived):
    """Deletion or insertion curves of several rankings, per layer (and across layers), or over pixels.

    Attributes
    ----------
    curves : list of Curve
        Every curve, grouped by layer in order.
    mode : str
        ``"deletion"`` or ``"insertion"``.
    original : float
        ``o(x)``, the target output without knock-out (mean over the copies or samples when
        evaluated on them); every AUC is relative to it.
    target : int or None
        The explained class (None for a callable target).
    output : str
        ``"probability"``, ``"logit"`` or ``"callable"``.
    how : str or float
        The knock-out (``"zero"``, ``"mean"`` or a scale); for pixels, the background.
    on : str
        ``"image"``, ``"copies"`` or ``"samples"``.
    unit : str
        ``"neurons"`` or ``"pixels"``.
    n_images : int
        Images each point was evaluated on.
    n_random : int
        Random seeds.
    n_sets : int
        Distinct knock-out sets (or images) evaluated.
    n_forward : int
        Forward passes the call ran.
    """

    curves: list[Curve]
    mode: str
    original: float
    target: int | None
    output: str
    how: Any
    on: str = "image"
    unit: str = "neurons"
    n_images: int = 1
    n_random: int = 0
    n_sets: int = 0
    n_forward: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def groups(self) -> list[str]:
        """The layers (and :data:`ALL_LAYERS` or :data:`PIXELS`) in order."""
        return list(dict.fromkeys(c.group for c in self.curves))

    @property
    def rankings(self) -> list[str]:
        """The ranking names in order."""
        return list(dict.fromkeys(c.ranking for c in self.curves))

    @property
    def auc(self) -> dict[str, dict[str, float]]:
        """``{group: {ranking: normalised AUC}}``."""
        out: dict[str, dict[str, float]] = {}
        for c in self.curves:
            out.setdefault(c.group, {})[c.ranking] = c.auc
        return out

    def curve(self, ranking: str, group: str | None = None) -> Curve:
        """The curve of ``ranking`` in ``group`` (the only or first group when None).

        Raises
        ------
        NeuronvizError
            No such curve.
        """
        group = self.groups[0] if group is None and self.groups else group
        for c in self.curves:
            if c.ranking == ranking and c.group == group:
                return c
        raise NeuronvizError(
            f"no curve of ranking {ranking!r} in {group!r}; rankings: {self.rankings}, groups: {self.groups}"
        )

    def as_rows(self) -> list[dict]:
        """One dict per curve point: group, ranking, k, fraction, value, relative, and the random band.

        Returns
        -------
        list of dict
            Ready for ``csv.DictWriter`` or ``pandas.DataFrame``.
        """
        rows = []
        for c in self.curves:
            lo, hi = c.band()
            for i, k in enumerate(c.ks):
                v = float(c.values[i])
                rows.append({
                    "group": c.group, "ranking": c.ranking, "mode": c.mode, "k": int(k),
                    "fraction": float(c.fraction[i]), "value": v,
                    "relative": v / self.original if self.original else math.nan,
                    "low": float(lo[i]), "high": float(hi[i]), "auc": c.auc, "influence": c.influence,
                })
        return rows

    def to_frame(self) -> "pandas.DataFrame":
        """:meth:`as_rows` as a pandas DataFrame.

        Returns
        -------
        pandas.DataFrame

        Raises
        ------
        NeuronvizError
            pandas is not installed.
        """
        from ..core.tables import rows_to_frame

        columns = ["group", "ranking", "mode", "k", "fraction", "value", "relative", "low", "high", "auc", "influence"]
        return rows_to_frame(self.as_rows(), columns)

    def table(self) -> str:
        """The AUCs as a text table: one line per group and ranking (random: mean and 5-95 % band)."""
        better = "lower" if self.mode == "deletion" else "higher"
        auc = self.mode + " AUC"
        head = f"{'group':<28} {'ranking':<20} {'points':>6} {auc:>14} {'|change|':>9}  AUC band (5-95 %)"
        lines = [f"{self.mode} curves, o(x) = {self.original:.4g} ({self.output}); {better} AUC = more faithful",
                 head, "-" * len(head)]
        for c in self.curves:
            band = ""
            if c.is_random:
                assert c.aucs is not None  # a random curve keeps its seeds' AUCs
                lo, hi = c.auc_band()
                band = f"[{lo:.3f}, {hi:.3f}] over {len(c.aucs)} seeds"
            lines.append(f"{c.group[:28]:<28} {c.ranking[:20]:<20} {len(c.ks):>6} {c.auc:>14.3f} {c.influence:>9.3f}  "
                         f"{band}")
        return "\n".join(lines)

    def plot(self, **options: Any) -> Any:
        """Draw the curves (:func:`neuronviz.render.faithfulness.render_faithfulness`).

        Parameters
        ----------
        **options
            Passed to the renderer (``relative``, ``path``, ``dpi``, ``title``).

        Returns
        -------
        matplotlib.figure.Figure
        """
        if not _PLOTTER:
            raise NeuronvizError("no renderer registered: import neuronviz.render.faithfulness (import neuronviz does)")
        return _PLOTTER[0](self, **options)

    def __repr__(self) -> str:
        aucs = "; ".join(f"{g}: " + ", ".join(f"{r} {a:.3f}" for r, a in d.items()) for g, d in self.auc.items())
        return f"FaithfulnessCurves({self.mode} over {self.unit}, AUC {aucs})"


# ---------------------------------------------------------------------------------------------
# rankings


def collect_rankings(source: object, metrics: Sequence[str] | None = None) -> dict[str, dict[str, list]]:
    """Named rankings ``{name: {layer: [neurons, best first]}}`` from scores or explicit rankings.

    Parameters
    ----------
    source : object
        :class:`~neuronviz.NeuronScores` (one ranking per metric), :class:`~neuronviz.PCACEScores`
        or :class:`~neuronviz.LayerRanking` (``"pcace"``), :class:`~neuronviz.BaselineScores`
        (one per computed baseline), an explicit ranking ``{layer: [channels best first]}``
        (``"ranking"``), named rankings ``{name: {layer: [...]}}``, or a list of these.
    metrics : sequence of str, optional
        The metrics of scores to use (default: all of each; e.g. ``["correlation"]``).

    Returns
    -------
    dict
        Rankings by name; NaN scores (and excluded precision neurons) are not ranked.

    Raises
    ------
    NeuronvizError
        A source of another type, a metric none of the sources has, a repeated name.
    """
    found: dict[str, dict[str, list]] = {}
    wanted = None if metrics is None else list(metrics)

    def add(name: str, ranking: Mapping[str, Sequence]) -> None:
        if name in found:
            raise NeuronvizError(f"two rankings are named {name!r}; pass them as {{name: ranking}} with distinct names")
        found[name] = {str(layer): [_neuron(v) for v in seq] for layer, seq in ranking.items()}

    def use(metric: str) -> bool:
        return wanted is None or metric in wanted

    def walk(item: object) -> None:
        if isinstance(item, NeuronScores):
            size = max([int(t.numel()) for t in item.correlation.values()] or [0])
            for metric in METRICS:
                if use(metric):
                    add(metric, _unit_ranking(item, metric) if item.per_unit else item.top(metric, k=size))
        elif isinstance(item, PCACEScores):
            if use("pcace"):
                add("pcace", {item.layer: item.ranking.tolist()})
        elif isinstance(item, LayerRanking):
            if use("pcace"):
                add("pcace", {layer: s.ranking.tolist() for layer, s in item.layers.items()})
        elif isinstance(item, BaselineScores):
            size = 1 << 30
            for metric in BASELINES:
                if getattr(item, metric) and use(metric):
                    add(metric, item.top(metric, k=size))
        elif isinstance(item, Mapping) and item and all(isinstance(v, Mapping) for v in item.values()):
            for name, ranking in item.items():
                add(str(name), ranking)
        elif isinstance(item, Mapping) and item:
            add("ranking", item)
        elif isinstance(item, (list, tuple)) and item:
            for sub in item:
                walk(sub)
        else:
            raise NeuronvizTypeError(
                "ranking must be NeuronScores, PCACEScores, LayerRanking, BaselineScores, {layer: [channels best "
                "first]}, {name: {layer: [...]}} or a list of these; got " + type(item).__name__
            )

    walk(source)
    if not found:
        raise NeuronvizError(f"no ranking found for metrics={wanted}; the scores give other metrics")
    return found


def _unit_ranking(scores: NeuronScores, metric: str) -> dict[str, list]:
    """:meth:`NeuronScores.top` of every unit, the same rule, with the units unravelled at once (fast)."""
    out: dict[str, list] = {}
    for layer, s in scores.metric(metric).items():
        flat = s.reshape(-1)
        keep = ~torch.isnan(flat)
        if metric == "precision" and layer in scores.excluded:
            keep &= ~scores.excluded[layer].reshape(-1)
        valid = torch.nonzero(keep).flatten()
        order = valid[torch.sort(-flat[valid], stable=True).indices].numpy()
        out[layer] = list(zip(*(idx.tolist() for idx in np.unravel_index(order, tuple(s.shape))))) if s.dim() > 1 \
            else order.tolist()
    return out


def _neuron(v: object) -> int | tuple:
    v = plain(v)
    if isinstance(v, (list, tuple)):
        return tuple(int(i) for i in v)
    if isinstance(v, torch.Tensor):
        return int(v.item())
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return int(v)
    raise NeuronvizError(f"a ranked neuron must be a channel index or a unit tuple, got {v!r}")


def _check_ks(ks: object) -> np.ndarray | None:
    if ks is None:
        return None
    try:
        values = [check_int(k, "every k", lo=0) for k in cast(Iterable[Any], ks)]  # else the TypeError below
    except TypeError:
        raise NeuronvizTypeError(f"ks must be a sequence of integers, e.g. range(0, 33, 2); got {ks!r}") from None
    if not values:
        raise NeuronvizError("ks is empty; give the numbers of neurons to knock out, e.g. range(0, 33, 2)")
    return np.unique(np.asarray(values, dtype=int))


def _default_ks(limit: int, points: int = DEFAULT_POINTS, k_max: int = DEFAULT_K) -> np.ndarray:
    top = min(limit, k_max)
    return np.unique(np.round(np.linspace(0, top, points)).astype(int))


def _flat_index(layer: str, neuron: int | tuple, shape: tuple[int, ...], full: bool) -> int:
    """A neuron's index in the layer's flattened channels (or units, when ``full``)."""
    if isinstance(neuron, tuple):
        if len(neuron) != len(shape) or not all(0 <= i < s for i, s in zip(neuron, shape)):
            raise NeuronvizError(f"unit {neuron} is not a unit of layer {layer!r}, whose output is {shape} per image")
        return int(np.ravel_multi_index(neuron, shape)) if full else int(neuron[0])
    if not 0 <= neuron < shape[0]:
        raise NeuronvizError(f"channel {neuron} is out of range for layer {layer!r}, which has {shape[0]} channels")
    return neuron


@dataclass
class _Group:
    """The rankings of one curve group, as positions: ``pos[layer][i]`` is neuron i's rank (big if unranked)."""

    name: str
    layers: list[str]
    rankings: dict[str, dict[str, torch.Tensor]]  # name -> layer -> (n_neurons,) rank positions
    lengths: dict[str, int]
    universe: int
    ks: np.ndarray = field(default_factory=lambda: np.zeros(0, int))


def _build_groups(
    rankings: dict[str, dict[str, list]],
    layers: list[str],
    shapes: dict[str, tuple[int, ...]],
    full: dict[str, bool],
    *,
    per_layer: bool,
    across_layers: bool,
    n_random: int,
    seed: int,
    ks: np.ndarray | None,
) -> list[_Group]:
    sizes = {layer: math.prod(shapes[layer]) if full[layer] else shapes[layer][0] for layer in layers}
    flat = {name: {layer: list(dict.fromkeys(_flat_index(layer, v, shapes[layer], full[layer]) for v in seq))
                   for layer, seq in r.items() if layer in layers}
            for name, r in rankings.items()}
    groups: list[_Group] = []
    specs: list[tuple[str, list[str]]] = []
    if per_layer or len(layers) == 1:
        specs += [(layer, [layer]) for layer in layers]
    if across_layers and len(layers) > 1:
        specs.append((ALL_LAYERS, list(layers)))
    for gname, glayers in specs:
        offsets = np.cumsum([0] + [sizes[layer] for layer in glayers])
        universe = int(offsets[-1])
        group = _Group(gname, glayers, {}, {}, universe)
        for name, r in flat.items():
            if not all(layer in r for layer in glayers):
                continue
            if len(glayers) == 1:
                merged = [(glayers[0], i) for i in r[glayers[0]]]
            else:  # merged by rank: rank 0 of every layer, then rank 1, ...
                depth = max(len(r[layer]) for layer in glayers)
                merged = [(layer, r[layer][d]) for d in range(depth) for layer in glayers if d < len(r[layer])]
            group.rankings[name] = _split(merged, glayers, sizes)
            group.lengths[name] = len(merged)
        for s in range(n_random):
            g = torch.Generator().manual_seed((seed * 1_000_003 + s * 7919 + zlib.crc32(gname.encode())) % (2**63 - 1))
            perm = torch.randperm(universe, generator=g).tolist()
            where = np.searchsorted(offsets, perm, side="right") - 1
            merged = [(glayers[w], p - int(offsets[w])) for p, w in zip(perm, where)]
            group.rankings[f"random {s}"] = _split(merged, glayers, sizes)
            group.lengths[f"random {s}"] = universe
        if not any(not n.startswith("random ") for n in group.rankings) and not n_random:
            continue
        shortest = min(group.lengths.values()) if group.lengths else 0
        if ks is None:
            group.ks = _default_ks(shortest)
        else:
            if int(ks.max()) > shortest:
                short = min(group.lengths, key=group.lengths.__getitem__)
                raise NeuronvizError(
                    f"ks goes up to {int(ks.max())}, but ranking {short!r} of {gname!r} ranks only {shortest} neurons "
                    f"(the others have no valid score); pass ks up to {shortest}"
                )
            group.ks = ks
        groups.append(group)
    return groups


def _split(merged: list[tuple[str, int]], layers: list[str], sizes: dict[str, int]) -> dict[str, torch.Tensor]:
    per: dict[str, list[tuple[int, int]]] = {layer: [] for layer in layers}
    for rank, (layer, i) in enumerate(merged):
        per[layer].append((i, rank))
    out = {}
    for layer in layers:
        pos = torch.full((sizes[layer],), 1 << 40, dtype=torch.long)
        if per[layer]:
            idx, ranks = zip(*per[layer])
            pos[torch.tensor(idx)] = torch.tensor(ranks)
        out[layer] = pos
    return out


def _group_masks(groups: list[_Group], layers: list[str], shapes: dict[str, tuple[int, ...]],
                 full: dict[str, bool], mode: str
                 ) -> tuple[dict[str, torch.Tensor], list[tuple[str, str, int]], list[int]]:
    """Every (group, ranking, k) point's masks, identical ones merged: (masks, points, row of each point)."""
    rows: dict[bytes, int] = {}
    per_layer_rows: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    points: list[tuple[str, str, int]] = []
    index: list[int] = []
    for group in groups:
        ks = torch.as_tensor(group.ks, dtype=torch.long)
        for name, pos in group.rankings.items():
            block = {}
            for layer in layers:
                size = math.prod(shapes[layer]) if full[layer] else shapes[layer][0]
                if layer in pos:
                    chosen = pos[layer][None, :] < ks[:, None]  # (P, size): the top-k of the ranking
                    block[layer] = chosen if mode == "deletion" else ~chosen
                else:
                    block[layer] = torch.zeros((len(ks), size), dtype=torch.bool)
            for p, k in enumerate(group.ks):
                key = b"".join(np.packbits(block[layer][p].numpy()).tobytes() + b"|" for layer in layers)
                if key not in rows:
                    rows[key] = len(rows)
                    for layer in layers:
                        per_layer_rows[layer].append(block[layer][p])
                points.append((group.name, name, int(k)))
                index.append(rows[key])
    masks = {}
    for layer in layers:
        m = torch.stack(per_layer_rows[layer])
        masks[layer] = m.view((m.shape[0],) + tuple(shapes[layer])) if full[layer] else m
    return masks, points, index


def _assemble(groups: list[_Group], points: list[tuple[str, str, int]], values: np.ndarray, original: float,
              mode: str) -> list[Curve]:
    """Curves from the points' values; the random seeds of a group averaged into one curve."""
    by: dict[tuple[str, str], list[float]] = {}
    for (g, name, _), v in zip(points, values):
        by.setdefault((g, name), []).append(float(v))
    curves = []
    for group in groups:
        total = int(group.ks.max()) if len(group.ks) else 0
        frac = group.ks / max(total, 1)
        seeds = []
        for name in group.rankings:
            vals = np.asarray(by[(group.name, name)])
            if name.startswith("random "):
                seeds.append(vals)
                continue
            curves.append(Curve(name, group.name, mode, group.ks.copy(), total, vals,
                                normalised_auc(vals, frac, original), influence=mean_change(vals, frac, original)))
        if seeds:
            curves.append(_random_curve(np.stack(seeds), group.name, mode, group.ks.copy(), total, original))
    return curves


def _random_curve(seeds: np.ndarray, group: str, mode: str, ks: np.ndarray, total: int, original: float) -> Curve:
    frac = ks / max(total, 1)
    aucs = np.array([normalised_auc(s, frac, original) for s in seeds])
    moves = np.array([mean_change(s, frac, original) for s in seeds])
    return Curve("random", group, mode, ks, total, seeds.mean(0), float(aucs.mean()), seeds=seeds, aucs=aucs,
                 influence=float(moves.mean()), influences=moves)


def _check_mode(mode: object) -> str:
    if mode not in MODES:
        raise NeuronvizError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    return str(mode)


def _layouts(rankings_source: object, layers: Sequence[str]) -> dict[str, str]:
    """The layouts the scores among the sources were computed with, "auto" for the other layers."""
    items = rankings_source if isinstance(rankings_source, (list, tuple)) else [rankings_source]
    found: dict[str, str] = {}
    for item in items:
        if isinstance(item, NeuronScores):
            for layer, kind in (item.layouts or {}).items():
                found.setdefault(str(layer), str(kind))
    return {layer: found.get(layer, "auto") for layer in layers}


def _default_target(rankings_source: object, target: TargetSpec, output: str | None) -> tuple[TargetSpec, str]:
    """The scores' own class and output when none is given (the same target rule as the scores)."""
    items = rankings_source if isinstance(rankings_source, (list, tuple)) else [rankings_source]
    if target is None:
        for item in items:
            t = getattr(item, "target", None)
            if isinstance(item, (NeuronScores, PCACEScores)) and isinstance(t, int):
                target = t
                break
    if output is None:
        output = next((item.output for item in items if isinstance(item, NeuronScores)
                       and item.output in ("probability", "logit")), "probability")
    return target, output


@runs_model
@reports_progress(lambda a: is_long({"image": 1, "copies": a.arguments["n_samples"]}.get(
    a.arguments["on"], images_of(a.arguments["samples"])), (a.arguments["random"] + 2) * 16), unit="row")
def deletion_curve(
    model: nn.Module,
    x: torch.Tensor,
    ranking: object,
    *,
    ks: Iterable[int] | None = None,
    mode: str = "deletion",
    layers: str | Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    random: int = 5,
    per_layer: bool = True,
    across_layers: bool = False,
    how: How = "zero",
    reference: torch.Tensor | Iterable | Mapping[str, torch.Tensor] | None = None,
    target: TargetSpec = None,
    output: str | None = None,
    on: str = "image",
    n_samples: int = 32,
    perturbation: Perturbation | str | None = None,
    samples: torch.Tensor | Iterable | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    progress: ProgressArg = None,
    layout: LayoutSpec | None = None,
) -> FaithfulnessCurves:
    """Deletion (or insertion) curves of neuron rankings, against random rankings, in batched passes.

    ``D(k)`` is the target output with the top-k neurons of a ranking knocked out together;
    ``I(k)`` with every neuron of the layer but the top-k knocked out. Every point of every
    ranking (and of ``random`` random rankings) is one knock-out set; all sets run in the
    batched forward passes of :func:`neuronviz.knockout_effect` (about ``ceil(points x
    rankings / batch_size)`` passes and one clean pass). AUCs are normalised by ``o(x)``
    (:func:`normalised_auc`).

    Parameters
    ----------
    model : torch.nn.Module
        The network; left as it was.
    x : torch.Tensor
        The image, (1, C, H, W) or (C, H, W).
    ranking : scores or rankings
        :class:`~neuronviz.NeuronScores` (its correlation and precision rankings),
        :class:`~neuronviz.PCACEScores`, :class:`~neuronviz.LayerRanking`,
        :class:`~neuronviz.BaselineScores`, ``{layer: [channels best first]}``,
        ``{name: {layer: [...]}}``, or a list of these (see :func:`collect_rankings`).
    ks : iterable of int, optional
        The numbers of neurons at the curve's points, e.g. ``range(0, 33, 2)``; None: 17 points
        from 0 to ``min(32, the shortest ranking)`` per layer.
    mode : {"deletion", "insertion"}
        Knock out the top-k, or everything but the top-k.
    layers : str or sequence of str, optional
        The layers to draw curves for (default: every layer the rankings cover).
    metrics : sequence of str, optional
        Which rankings of the scores (e.g. ``["correlation", "precision"]``).
    random : int
        Number of random rankings (seeds); 0 for none.
    per_layer : bool
        A curve per layer.
    across_layers : bool
        Also a curve over all ``layers`` together, the rankings merged by rank.
    how : {"zero", "mean"} or float
        The knock-out (see :func:`neuronviz.knockout`).
    reference : tensor, loader or mapping, optional
        For ``how="mean"``: the reference images or means (default: the copies of ``x``).
    target : None, int or callable
        None: the scores' class when they have one, else the class predicted on ``x``.
    output : {"probability", "logit"}, optional
        None: the scores' output (``NeuronScores.output``), else the probability.
    on : {"image", "copies"}
        Evaluate on ``x``, or on its ``n_samples`` perturbed copies (mean over copies).
    n_samples, perturbation, seed : optional
        The perturbed copies (``on="copies"``, the default reference of ``how="mean"``);
        ``seed`` also seeds the random rankings.
    samples : tensor or iterable, optional
        Evaluate on these images or a loader's instead (mean over them).
    batch_size : int, optional
        Rows (set x image) per forward pass.
    device : str or torch.device, optional
        Where to compute.
    progress : bool, callable or None
        ``True``: a progress bar (:mod:`neuronviz.core.progress`); ``False``: none; None (the
        default): a bar when the images times about 16 points of ``random + 2`` rankings reach
        200 rows, or the samples are a loader. A callable: ``progress(done, total)`` in rows;
        raising from it cancels.
    layout : str or mapping, optional
        Where each layer keeps its channels (see :func:`neuronviz.knockout`): one of
        "channels_first", "channels_last", "tokens", "auto", or ``{layer: name}``. None: the
        layouts the scores were computed with (:attr:`NeuronScores.layouts`), "auto" for
        layers they do not record, so the channels knocked out are the channels ranked.

    Returns
    -------
    FaithfulnessCurves

    Raises
    ------
    NeuronvizError
        Bad rankings, ks beyond a ranking's length, a neuron out of range, an unknown layer,
        a bad mode, ``how`` or target.
    """
    mode = _check_mode(mode)
    n_random = check_int(random, "random", lo=0)
    k_values = _check_ks(ks)
    rankings = collect_rankings(ranking, metrics)
    target, output = _default_target(ranking, target, output)
    covered = list(dict.fromkeys(layer for r in rankings.values() for layer in r))
    if layers is None:
        chosen = covered
    else:
        chosen = [layers] if isinstance(layers, str) else list(layers)
        missing = [layer for layer in chosen if layer not in covered]
        if missing:
            raise NeuronvizError(f"no ranking covers layer(s) {missing}; the rankings cover {covered}")
    if not per_layer and not across_layers:
        raise NeuronvizError("per_layer and across_layers are both False: ask for at least one kind of curve")
    full = {layer: any(isinstance(v, tuple) for r in rankings.values() for v in r.get(layer, ())) for layer in chosen}
    layouts = _layouts(ranking, chosen) if layout is None else check_layout_spec(layout, chosen)
    state: dict[str, Any] = {}

    def make_masks(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
        for layer in chosen:
            full[layer] = full[layer] and len(shapes[layer]) > 1
        groups = _build_groups(rankings, chosen, shapes, full, per_layer=per_layer, across_layers=across_layers,
                               n_random=n_random, seed=seed, ks=k_values)
        if not groups:
            raise NeuronvizError("no curve to draw: no ranking covers every layer asked for")
        masks, points, index = _group_masks(groups, chosen, shapes, full, mode)
        state.update(groups=groups, points=points, index=index)
        return masks

    assert not isinstance(progress, bool)  # reports_progress made True/False a callback or None
    res = run_sets(model, x, chosen, make_masks, target=target, output=output, how=how, reference=reference,
                   on=on, n_samples=n_samples, perturbation=perturbation, samples=samples, seed=seed,
                   batch_size=batch_size, device=device, progress=progress, layout=layouts)
    values = res["values"].numpy().mean(axis=1)
    original = float(res["original"].numpy().mean())
    if original == 0:
        warnings.warn("the target output is 0 without knock-out, so the normalised AUCs are NaN; use "
                      "output='logit' or another target", NeuronvizWarning, stacklevel=3)
    point_values = values[np.asarray(state["index"])]
    curves = _assemble(state["groups"], state["points"], point_values, original, mode)
    tgt = res["target"]
    return FaithfulnessCurves(curves=curves, mode=mode, original=original, target=tgt.class_index, output=tgt.output,
                              how=res["how"], on=res["on"], unit="neurons", n_images=int(res["values"].shape[1]),
                              n_random=n_random, n_sets=int(values.shape[0]), n_forward=int(res["n_forward"]))


# ---------------------------------------------------------------------------------------------
# pixels of an input mask


def _as_mask(mask: object, size: tuple[int, int]) -> torch.Tensor:
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(mask)
    if not isinstance(mask, torch.Tensor):
        raise NeuronvizTypeError(
            f"mask must be a tensor (H, W), an array or an InversionResult, got {type(mask).__name__}")
    m = mask.detach().float().cpu()
    while m.dim() > 2 and m.shape[0] == 1:
        m = m[0]
    if m.dim() != 2 or tuple(m.shape) != tuple(size):
        raise NeuronvizError(f"mask must be (H, W) = {tuple(size)} like the image, got shape {tuple(mask.shape)}")
    if not torch.isfinite(m).all():
        raise NeuronvizError("mask contains NaN or infinite values")
    return m


@runs_model
@reports_progress(lambda a: is_long(images_of(a.arguments["x"]), (a.arguments["random"] + 1) * a.arguments["steps"]),
                  unit="image")
def mask_deletion_curve(
    model: nn.Module,
    x: torch.Tensor,
    mask: torch.Tensor | np.ndarray | InversionResult,
    *,
    mode: str = "deletion",
    steps: int = 16,
    background: str | torch.Tensor = "blur",
    random: int = 5,
    seed: int = 0,
    target: TargetSpec = None,
    output: str = "probability",
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    progress: ProgressArg = None,
) -> FaithfulnessCurves:
    """Deletion (or insertion) curve of an input mask's pixels, against random masks (Petsiuk et al. 2018).

    Pixels are ordered by mask value, highest first (ties by pixel index). Step k of ``steps``
    removes (deletion: replaces by the background) or inserts (insertion: into the background)
    the first ``round(k / steps x H x W)`` pixels, every channel at once. Random masks are
    uniform permutations of the pixels. All images run in batches; AUCs are normalised by the
    output on ``x`` (:func:`normalised_auc`).

    Parameters
    ----------
    model : torch.nn.Module
        The network; left as it was.
    x : torch.Tensor
        The image, (1, C, H, W) or (C, H, W).
    mask : torch.Tensor, numpy.ndarray or InversionResult
        (H, W) saliency at input size; an :class:`~neuronviz.InversionResult` gives its first
        mask (and its class, when ``target`` is None).
    mode : {"deletion", "insertion"}
        Remove the top pixels from ``x``, or insert them into the background.
    steps : int
        Number of steps (``steps + 1`` points, from 0 to every pixel).
    background : {"blur", "mean"} or torch.Tensor
        What removed pixels become: ``x`` blurred (sigma ``11 * W / 224``), its mean colour, or
        a tensor broadcast to ``x`` (see :func:`neuronviz.methods.inversion.make_background`).
    random : int
        Number of random masks; 0 for none.
    seed : int
        Seed of the random masks.
    target : None, int or callable
        None: the class of the InversionResult, else the class predicted on ``x``.
    output : {"probability", "logit"}
        For a class target.
    batch_size : int, optional
        Images per forward pass.
    device : str or torch.device, optional
        Where to compute.
    progress : bool, callable or None
        ``True``: a progress bar (:mod:`neuronviz.core.progress`); ``False``: none; None (the
        default): a bar when the images times ``(random + 1) x steps`` reach 200. A callable:
        ``progress(done, total)`` in images; raising from it cancels.

    Returns
    -------
    FaithfulnessCurves
        With one group, :data:`PIXELS`, and rankings ``"mask"`` and ``"random"``.

    Raises
    ------
    NeuronvizError
        Bad image, a mask of another size, a bad mode, steps, background or target.
    """
    mode = _check_mode(mode)
    steps = check_int(steps, "steps", lo=1)
    n_random = check_int(random, "random", lo=0)
    x = check_image(x, model)
    h, w = x.shape[-2:]
    if isinstance(mask, InversionResult):
        if target is None:
            explained = mask.target[0]
            if explained is None:
                raise NeuronvizError("the inversion explained a callable target: pass that callable as target=")
            target = int(explained)
        mask = mask.mask[0]
    m = _as_mask(mask, (h, w))
    if isinstance(background, str) and background not in ("blur", "mean"):
        raise NeuronvizError(f"background must be 'blur', 'mean' or a tensor, got {background!r} "
                             f"(the inversion's {BACKGROUNDS} include noise, which is not a removal)")
    dev = resolve_device(model, device)
    size = _check_batch_size(batch_size, dev)
    n_pixels = h * w
    order = torch.sort(-m.reshape(-1), stable=True).indices
    orders = [order]
    for s in range(n_random):
        g = torch.Generator().manual_seed((seed * 1_000_003 + s) % (2**63 - 1))
        orders.append(torch.randperm(n_pixels, generator=g))
    pos = torch.stack([torch.empty(n_pixels, dtype=torch.long).scatter_(0, o, torch.arange(n_pixels))
                       for o in orders])
    counts = torch.round(torch.arange(steps + 1, dtype=torch.float64) * n_pixels / steps).long()
    n_rows = len(orders) * (steps + 1)
    values = torch.empty(n_rows, dtype=torch.float64)
    passes = [0]

    with preserved_state(model), on_device(model, dev), torch.no_grad():
        model.eval()
        x = x.to(dev)
        bg = make_background(x, background).expand_as(x)
        out = forward_checked(model, x)
        passes[0] += 1
        tgt = resolve_target(target, output, predict=lambda: out)
        original = float(tgt(out).double()[0])
        pos_dev, counts_dev = pos.to(dev), counts.to(dev)

        def step(r: range) -> None:
            rows = torch.arange(r.start, r.stop, device=dev)
            chosen = pos_dev[rows // (steps + 1)] < counts_dev[rows % (steps + 1)][:, None]  # (b, P) top pixels
            chosen = chosen.view(-1, 1, h, w).to(x.dtype)
            if mode == "deletion":
                imgs = x * (1 - chosen) + bg * chosen
            else:
                imgs = bg * (1 - chosen) + x * chosen
            o = tgt(forward_checked(model, imgs)).double()
            passes[0] += 1
            values[r.start : r.stop] = o.cpu()

        assert not isinstance(progress, bool)  # reports_progress made True/False a callback or None
        run_batched(n_rows, size, step, on_progress=progress)
    if original == 0:
        warnings.warn("the target output is 0 on the image, so the normalised AUCs are NaN", NeuronvizWarning,
                      stacklevel=3)
    table = values.view(len(orders), steps + 1).numpy()
    ks = np.arange(steps + 1)
    frac = ks / steps
    curves = [Curve("mask", PIXELS, mode, ks, steps, table[0], normalised_auc(table[0], frac, original),
                    influence=mean_change(table[0], frac, original))]
    if n_random:
        curves.append(_random_curve(table[1:], PIXELS, mode, ks.copy(), steps, original))
    how = background if isinstance(background, str) else "tensor"
    return FaithfulnessCurves(curves=curves, mode=mode, original=original, target=tgt.class_index, output=tgt.output,
                              how=how, on="image", unit="pixels", n_images=1, n_random=n_random, n_sets=n_rows,
                              n_forward=passes[0])
