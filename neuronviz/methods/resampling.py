"""Neurons scored by correlation with the output and by activation precision over input resampling.

Lengerich, Konam, Xing, Rosenthal & Veloso, "Towards Visual Explanations for Convolutional
Neural Networks via Input Resampling", ICML 2017 Workshop on Visualization for Deep Learning,
arXiv:1707.09641.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from ..core.archive import Archived, archived
from ..core.batching import check_batch_request, default_batch_size, run_batched
from ..core.capture import ActivationCapture, resolve_layers
from ..core.distributed import Ranks, all_reduce_comoments, all_reduce_weighted, shard, use_distributed
from ..core.errors import NeuronvizError, NeuronvizTypeError, NeuronvizWarning
from ..core.layouts import LayoutSpec
from ..core.locks import runs_model
from ..core.model_state import on_device, preserved_state, resolve_device
from ..core.perturb import Perturbation
from ..core.perturb import make as make_perturbation
from ..core.progress import ProgressArg, images_of, is_long, reports_progress
from ..core.stats import CoMoments, WeightedCoMoments, poisson_weights
from ..core.streams import RowBuffer, count_hint, is_batch_stream, iter_batches
from ..core.tables import Row, rows_to_frame
from ..core.targets import Target, TargetSpec, resolve_target
from ..core.validation import check_batch, check_image, check_images_source, forward_checked

if TYPE_CHECKING:
    import pandas

__all__ = ["NeuronScores", "score_neurons", "overlap", "METRICS"]

METRICS = ("correlation", "precision")
#: With ``on_batch``, the most samples in the first batch of :func:`score_neurons`.
FIRST_BATCH = 8

Selection = Mapping[str, Sequence]


@archived('NeuronScores')
@dataclass
class NeuronScores(Archived):
    """Correlation and precision of every neuron of the scored layers.

    Attributes
    ----------
    correlation : dict of str to torch.Tensor
        Per layer, (C,) mean over positions of |Pearson(activation, output)| (positions with
        constant activation left out; NaN if all are), or (C, H, W) per unit.
    precision : dict of str to torch.Tensor
        Per layer, (C,) ``1 / mean over positions of Var(activation)`` (population variance),
        ``+inf`` for a constant channel, NaN for a channel that is both excluded (see
        ``excluded``) and constant over the copies (a dead channel has no precision to rank);
        or (C, H, W) per unit. An excluded channel whose map varies keeps its value, so that
        it can be drawn, but is never selected by :meth:`top`.
    excluded : dict of str to torch.Tensor
        Per layer, a bool mask shaped like ``precision``: the neurons left out of the precision
        selection, by the rule named in ``exclusion_rule``.
    exclusion_rule : dict of str to str
        Per layer, why neurons were excluded. ``"mean"``, for a layer that never takes a
        negative value on any copy (post-ReLU, the paper's setting): the input-resampling
        paper's rule exactly, a mean activation (over copies and positions) under
        ``dead_threshold`` (silent or dead channels). ``"dead"``, for a layer that takes
        negative values (a raw convolution, a linear bottleneck, SiLU/GELU): a negative mean
        says nothing about whether a channel works, so only a dead neuron is excluded: one that
        is constant over the copies at every position, or whose largest magnitude over every
        copy and position stays under ``dead_threshold``.
    mean_activation : dict of str to torch.Tensor
        Per layer, the mean activation over samples (and positions, unless per unit).
    outputs : torch.Tensor
        (N,) target value of each perturbed sample.
    target : int or None
        The explained class (None for a callable target).
    output : str
        ``"probability"``, ``"logit"`` or ``"callable"``.
    shapes : dict of str to tuple
        Per layer, the activation shape without the batch, e.g. (C, H, W) or (F,).
    n_samples : int
        Number of perturbed samples.
    per_unit : bool
        Whether scores are per unit (channel x position) rather than per channel.
    perturbation : Perturbation or None
        The perturbation used (None when ``samples`` were given).
    seed : int
        Seed of the perturbed set.
    dead_threshold : float
        The threshold of the exclusion rules (see ``exclusion_rule``).
    channel_means : dict of str to torch.Tensor or None
        With ``keep_channel_means=True``: per layer, (N, C) float32 activation of every
        channel on every sample, averaged over positions (what the widgets plot against
        ``outputs``); None otherwise.
    maps : dict of str to torch.Tensor or None
        With ``keep_maps``: per layer, the (len(keep_maps), C, ...) float32 CPU activations of
        the kept samples, in the order of ``map_indices`` (with a perturbation whose copy 0 is
        the image itself, ``Perturbation.first_is_original``, index 0 gives the clean maps);
        None otherwise.
    map_indices : list of int
        Which samples ``maps`` holds.
    layouts : dict of str to str
        Per layer, where its output keeps the channels ("channels_first", "channels_last" or
        "tokens", see ``layout``); scores, shapes and maps are channels first in every case.
    replicates : dict or None
        With ``bootstrap=B``: ``replicates[metric][layer]``, the ``(B, *shape)`` scores of the B
        Poisson-bootstrap replicates (see :meth:`interval`, :meth:`rank_interval`,
        :meth:`tied`); None otherwise. ``excluded`` is the full sample's in every replicate.
    bootstrap_seed : int or None
        Seed of the replicate weights (None without a bootstrap).
    """

    correlation: dict[str, torch.Tensor]
    precision: dict[str, torch.Tensor]
    mean_activation: dict[str, torch.Tensor]
    outputs: torch.Tensor
    target: int | None
    output: str
    shapes: dict[str, tuple[int, ...]]
    n_samples: int
    per_unit: bool = False
    perturbation: Perturbation | None = None
    seed: int = 0
    dead_threshold: float = 0.1
    layers: list[str] = field(default_factory=list)
    channel_means: dict[str, torch.Tensor] | None = None
    excluded: dict[str, torch.Tensor] = field(default_factory=dict)
    exclusion_rule: dict[str, str] = field(default_factory=dict)
    maps: dict[str, torch.Tensor] | None = None
    map_indices: list[int] = field(default_factory=list)
    layouts: dict[str, str] = field(default_factory=dict)
    replicates: dict[str, dict[str, torch.Tensor]] | None = None
    bootstrap_seed: int | None = None

    def __post_init__(self) -> None:
        if not self.layers:
            self.layers = list(self.correlation)
        for layer, prec in self.precision.items():
            # scores built by hand: NaN precision is what is left out
            self.excluded.setdefault(layer, torch.isnan(prec))

    def n_excluded(self) -> dict[str, int]:
        """How many neurons of each layer are left out of the precision selection.

        Returns
        -------
        dict of str to int
            Per layer; ``exclusion_rule`` says why.
        """
        return {layer: int(self.excluded[layer].sum()) for layer in self.layers}

    def metric(self, name: str) -> dict[str, torch.Tensor]:
        """The scores of one metric, ``"correlation"`` or ``"precision"``.

        Raises
        ------
        ValueError
            Unknown metric name.
        """
        if name not in METRICS:
            raise NeuronvizError(f"metric must be one of {METRICS}, got {name!r}")
        return getattr(self, name)

    def top(self, metric: str, k: int = 5, *, stable: bool = False, level: float = 0.9) -> dict[str, list]:
        """The ``k`` best neurons of each layer by ``metric``, best first.

        NaN scores are never selected, nor, for precision, the ``excluded`` neurons;
        ``+inf`` precision ranks first. Ties keep the lower index first.

        Parameters
        ----------
        metric : {"correlation", "precision"}
            Which score.
        k : int
            How many per layer (fewer when a layer has fewer valid neurons).
        stable : bool
            Keep only the neurons of the top ``k`` that are distinguishable from the
            (k+1)-th (not :meth:`tied` with it at ``level``); needs ``bootstrap``.
        level : float
            Level of the bootstrap interval used with ``stable``.

        Returns
        -------
        dict of str to list
            Channel indices, or ``(c, h, w)`` tuples when scored per unit.

        Raises
        ------
        NeuronvizError
            ``k < 0``, an unknown metric, or ``stable=True`` on scores without replicates.
        """
        if stable:
            ties = self.tied(metric, k, level)
            return {
                layer: [n for n, t in zip(chosen, ties[layer]) if not t]
                for layer, chosen in self.top(metric, k).items()
            }
        if k < 0:
            raise NeuronvizError(f"k must be >= 0, got {k}")
        out: dict[str, list] = {}
        for layer, s in self.metric(metric).items():
            flat = s.reshape(-1)
            keep = ~torch.isnan(flat)
            if metric == "precision" and layer in self.excluded:
                keep &= ~self.excluded[layer].reshape(-1)
            valid = torch.nonzero(keep).flatten()
            # stable sort on -score: +inf first, ties by index
            order = valid[torch.sort(-flat[valid], stable=True).indices][:k].tolist()
            if self.per_unit and s.dim() > 1:
                order = [tuple(int(v) for v in torch.unravel_index(torch.tensor(i), s.shape)) for i in order]
            out[layer] = order
        return out

    def interval(self, metric: str, level: float = 0.9) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per neuron, the bootstrap percentile interval of ``metric``.

        Parameters
        ----------
        metric : {"correlation", "precision"}
            Which score.
        level : float
            Coverage, in (0, 1): the (1 - level) / 2 and (1 + level) / 2 quantiles of the replicates.

        Returns
        -------
        dict of str to (torch.Tensor, torch.Tensor)
            Per layer, (lower, upper) shaped like the scores (NaN where every replicate is NaN).

        Raises
        ------
        NeuronvizError
            Scores without replicates (score with ``bootstrap=B``), an unknown metric or a bad level.
        """
        from .stability import replicate_interval

        return {layer: replicate_interval(r, metric, level) for layer, r in self._replicates(metric).items()}

    def rank_interval(self, metric: str, level: float = 0.9) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per neuron, the bootstrap percentile interval of its rank by ``metric`` (1 = best).

        A neuron that cannot be selected in a replicate (NaN, or excluded from precision)
        ranks after every one that can.

        Parameters
        ----------
        metric : {"correlation", "precision"}
            Which score.
        level : float
            Coverage, in (0, 1).

        Returns
        -------
        dict of str to (torch.Tensor, torch.Tensor)
            Per layer, (lower, upper) ranks shaped like the scores (float, from the quantiles).

        Raises
        ------
        NeuronvizError
            Scores without replicates, an unknown metric or a bad level.
        """
        from .stability import replicate_rank_interval

        return {layer: replicate_rank_interval(r, metric, level, self._selectable(metric, layer))
                for layer, r in self._replicates(metric).items()}

    def tied(self, metric: str, k: int = 5, level: float = 0.9) -> dict[str, list[bool]]:
        """Which neurons of each layer's top ``k`` are tied with the (k+1)-th.

        Neuron i of the top ``k`` is tied when the bootstrap interval (at ``level``) of the
        replicate difference between it and the (k+1)-th neuron contains 0 (for precision the
        difference of variances, so that infinite precision compares). None is tied when the
        layer has no (k+1)-th selectable neuron.

        Parameters
        ----------
        metric : {"correlation", "precision"}
            Which score.
        k : int
            Size of the selection.
        level : float
            Coverage of the interval, in (0, 1).

        Returns
        -------
        dict of str to list of bool
            Per layer, one flag per entry of ``top(metric, k)``, in its order.

        Raises
        ------
        NeuronvizError
            Scores without replicates, an unknown metric, ``k < 0`` or a bad level.
        """
        from .stability import replicate_ties

        reps = self._replicates(metric)
        chosen = self.top(metric, k + 1)
        return {
            layer: replicate_ties(reps[layer], metric, chosen[layer], k, level, self.per_unit) for layer in self.layers
        }

    def _replicates(self, metric: str) -> dict[str, torch.Tensor]:
        self.metric(metric)  # checks the name
        if not self.replicates:
            raise NeuronvizError("these scores have no bootstrap replicates: score with bootstrap=B (e.g. 200)")
        return self.replicates[metric]

    def _selectable(self, metric: str, layer: str) -> torch.Tensor:
        ok = ~torch.isnan(self.metric(metric)[layer])
        return ok & ~self.excluded[layer] if metric == "precision" and layer in self.excluded else ok

    def as_rows(self) -> list[dict]:
        """One dict per neuron: ``layer``, ``channel`` (and ``position``, the flat index of the
        position in the map, per unit), ``correlation``, ``precision``, ``mean_activation``,
        ``excluded``.

        The columns are those of every result's :meth:`to_frame` and of the explorer's CSV
        export. ``row["neuron"]``, the old name of the channel (or flat unit) column, still
        reads, with a :class:`DeprecationWarning`.

        Returns
        -------
        list of dict
            Ready for ``csv.DictWriter`` or ``pandas.DataFrame``.
        """
        rows: list[dict] = []
        for layer in self.layers:
            corr = self.correlation[layer].reshape(-1).tolist()
            prec = self.precision[layer].reshape(-1).tolist()
            mean = self.mean_activation[layer].reshape(-1).tolist()
            out = self.excluded[layer].reshape(-1).tolist()
            per_channel = max(1, len(corr) // max(1, self.correlation[layer].shape[0])) if self.per_unit else 1
            for i, (c, p, m, e) in enumerate(zip(corr, prec, mean, out)):
                where = {"channel": i // per_channel, "position": i % per_channel} if self.per_unit else {"channel": i}
                rows.append(Row(layer=layer, **where, correlation=c, precision=p, mean_activation=m, excluded=e,
                                neuron=i))
        return rows

    def to_frame(self) -> "pandas.DataFrame":
        """:meth:`as_rows` as a pandas DataFrame, one row per neuron.

        Returns
        -------
        pandas.DataFrame

        Raises
        ------
        NeuronvizError
            pandas is not installed.
        """
        where = ["layer", "channel", "position"] if self.per_unit else ["layer", "channel"]
        return rows_to_frame(self.as_rows(), where + ["correlation", "precision", "mean_activation", "excluded"])

    def __repr__(self) -> str:
        layers = ", ".join(f"{name}: {self.shapes[name]}" for name in self.layers)
        what = f"class {self.target}" if self.target is not None else "callable target"
        return f"NeuronScores({self.n_samples} samples, {what} ({self.output}), layers {{{layers}}})"


def overlap(a: Selection, b: Selection, kind: str = "paper") -> float:
    """Overlap of two neuron selections, summed over layers.

    Parameters
    ----------
    a, b : mapping of str to sequence
        Selections as returned by :meth:`NeuronScores.top`.
    kind : {"paper", "jaccard"}
        ``"paper"``: ``sum |A ∩ B| / sum (|A| + |B|)`` (maximum 0.5, the input-resampling
        paper's measure); ``"jaccard"``: ``sum |A ∩ B| / sum |A ∪ B|`` (maximum 1).

    Returns
    -------
    float
        NaN when both selections are empty.

    Raises
    ------
    NeuronvizError
        Unknown ``kind``, selections that are not mappings or cover different layers.
    """
    if kind not in ("paper", "jaccard"):
        raise NeuronvizError(f"kind must be 'paper' or 'jaccard', got {kind!r}")
    for name, sel in (("a", a), ("b", b)):
        if not isinstance(sel, Mapping):
            raise NeuronvizTypeError(
                f"{name} must be a selection {{layer: [channels]}} as NeuronScores.top() returns, "
                f"got {type(sel).__name__}"
            )
    if set(a) != set(b):
        raise NeuronvizError(f"the selections cover different layers: {sorted(a)} vs {sorted(b)}")
    inter = denom = 0
    for layer in a:
        sa, sb = {_hashable(v) for v in a[layer]}, {_hashable(v) for v in b[layer]}
        inter += len(sa & sb)
        denom += len(sa) + len(sb) if kind == "paper" else len(sa | sb)
    return inter / denom if denom else math.nan


def _hashable(v: object) -> object:
    return tuple(v) if isinstance(v, list) else v


def _as_features(act: torch.Tensor) -> torch.Tensor:
    """(B, C, ...) -> (B, C * positions); a (B, F) layer is F channels of one position."""
    return act.reshape(act.shape[0], -1)


def _finalise(
    moments: CoMoments, shape: tuple[int, ...], per_unit: bool, dead_threshold: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """The spec's formulas from the accumulated moments: correlation, precision, mean activation,
    the excluded neurons and the rule that excluded them (see :class:`NeuronScores`).
    """
    c = shape[0]
    corr_unit = moments.correlation().abs().view(c, -1)
    var_unit = moments.variance().view(c, -1)
    mean_unit = moments.mean.view(c, -1)
    lo, hi = moments.minimum.view(c, -1), moments.maximum.view(c, -1)
    constant_unit = hi == lo
    magnitude_unit = torch.maximum(lo.abs(), hi.abs())
    if per_unit:
        corr, var, mean, constant, magnitude = corr_unit, var_unit, mean_unit, constant_unit, magnitude_unit
        view = shape if len(shape) > 1 else (c,)
    else:
        corr = torch.nanmean(corr_unit, dim=1)  # NaN when every position is constant
        var, mean = var_unit.mean(1), mean_unit.mean(1)
        constant, magnitude = constant_unit.all(1), magnitude_unit.amax(1)
        view = (c,)
    # the paper's rule presumes post-ReLU maps; a layer that goes negative only loses dead neurons
    rule = "mean" if bool((lo >= 0).all()) else "dead"
    with torch.no_grad():
        if rule == "mean":
            excluded = mean < dead_threshold
        else:
            excluded = constant | (magnitude < dead_threshold)
        precision = torch.where(var > 0, 1.0 / var, torch.full_like(var, math.inf))
        precision = torch.where(excluded & constant, torch.full_like(precision, math.nan), precision)
    return (corr.reshape(view).cpu(), precision.reshape(view).cpu(), mean.reshape(view).cpu(),
            excluded.reshape(view).cpu(), rule)


@runs_model
@reports_progress(lambda a: is_long(a.arguments["n_samples"] if a.arguments["samples"] is None
                                    else images_of(a.arguments["samples"])), unit="image")
def score_neurons(
    model: nn.Module,
    x: torch.Tensor,
    layers: str | Sequence[str],
    *,
    target: TargetSpec = None,
    output: str = "probability",
    n_samples: int = 50,
    perturbation: Perturbation | str | None = None,
    samples: torch.Tensor | Iterable | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    per_unit: bool = False,
    dead_threshold: float = 0.1,
    progress: ProgressArg = None,
    keep_channel_means: bool = False,
    distributed: bool | None = None,
    keep_maps: Sequence[int] = (),
    layout: LayoutSpec = "auto",
    bootstrap: int = 0,
    bootstrap_seed: int | None = None,
    on_batch: Callable[[NeuronScores], None] | None = None,
) -> NeuronScores:
    """Score every neuron of ``layers`` by correlation with the output and by precision.

    The image is perturbed ``n_samples`` times (by default the input-resampling paper's
    multiplicative Gaussian scheme), or the ``samples`` are read (a tensor, or the batches of
    a DataLoader over a data set of any size); the images are run through the model in
    batches with the layers recorded, and per-unit moments are accumulated batch by batch in
    float64: the statistics held do not grow with the number of samples. Then, per channel k,
    ``correlation_k = mean over positions of |Pearson_i(a_k(h, w, i), o_i)|`` (positions of
    constant activation left out) and
    ``precision_k = 1 / mean over positions of Var_i(a_k(h, w, i))`` (ddof 0).

    What does grow with the number of samples N: :attr:`NeuronScores.outputs`, 8 bytes a
    sample, and with ``keep_channel_means`` the (N, C) float32 channel means of each layer.

    Inside an initialised ``torch.distributed`` process group (e.g. under ``torchrun``) every
    rank scores its own share and the statistics are reduced exactly across ranks, so every
    rank returns the scores of all the samples: with ``samples``, each rank passes its own
    shard (a DataLoader with a ``DistributedSampler``, or a tensor); without, the
    ``n_samples`` perturbed copies are split into contiguous blocks, one per rank (copy i
    depends only on (seed, i), so the scores equal a single process's). ``outputs`` and
    ``channel_means`` are then in rank order (rank 0's samples first). A
    ``DistributedSampler`` that pads its shards to equal size (``drop_last=False`` with a
    data set size not divisible by the number of ranks) repeats a few samples, and they count.

    The model runs in eval mode under ``torch.no_grad()``; its modes, ``requires_grad``
    flags, device and hooks are as before when this returns or raises.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    x : torch.Tensor
        The image, (1, C, H, W) or (C, H, W), normalised as the model expects; with
        ``target=None`` the class predicted on it is explained.
    layers : str or sequence of str
        Layer names (see :func:`neuronviz.layer_summary`).
    target : None, int or callable
        ``None``: the class predicted on ``x``; an int: that class; a callable: maps the
        model output (N, ...) to (N,) values (``output`` is then ignored).
    output : {"probability", "logit"}
        The softmax probability of the class (the paper's) or its logit.
    n_samples : int
        Number of perturbed copies (at least 3).
    perturbation : Perturbation, str or None
        A :mod:`neuronviz.perturb` object or kind name; None is
        ``MultiplicativeGaussian(sigma_step=0.1)``.
    samples : torch.Tensor or iterable, optional
        Images to use instead of generated copies (your own perturbations or a data set),
        normalised as the model expects: an (N, C, H, W) tensor, or an iterable of (B, C, H, W)
        batches or of ``(images, labels, ...)`` tuples, such as a
        ``torch.utils.data.DataLoader`` too large to hold in memory (read once). At least 3
        images in all; ``n_samples`` and ``perturbation`` are then ignored.
    seed : int
        Seed of the perturbed set; copy i depends only on (seed, i).
    batch_size : int, optional
        Images per forward pass; automatic when None (with a DataLoader: its batches),
        halved on out-of-memory.
    device : str or torch.device, optional
        Where to compute; None is the model's device. A model elsewhere is moved there for
        the call and moved back. Distributed over NCCL, each rank's own GPU.
    per_unit : bool
        Score every unit (channel x position) instead of every channel.
    dead_threshold : float
        Threshold of the exclusion from the precision selection. On a layer that is never
        negative (post-ReLU), the paper's rule: neurons whose mean activation is under it. On a
        layer that takes negative values, only dead neurons: constant over the copies, or never
        larger in magnitude than it. See :attr:`NeuronScores.excluded`; an excluded neuron that
        is also constant gets NaN precision.
    progress : bool, callable or None
        ``True``: a progress bar (:mod:`neuronviz.core.progress`); ``False``: none; None (the
        default): a bar when at least 200 images go through the network or ``samples`` is a
        loader. A callable is called as ``progress(done, total)`` after each batch with this
        rank's counts (for a DataLoader, ``total`` is the length of its sampler, or ``done``
        when unknown); an exception it raises (e.g. to cancel) stops the run and propagates,
        with the model left as before.
    keep_channel_means : bool
        Also keep every channel's position-averaged activation on every sample
        (:attr:`NeuronScores.channel_means`, N x C floats per layer).
    distributed : bool or None
        None: reduce across ranks when a process group of several ranks is initialised
        (every rank must then make the same call: one rank calling alone would wait for the
        others); False: score this process's samples alone; True: require a process group.
    keep_maps : sequence of int
        Samples (copy indices, or rows of a ``samples`` tensor) whose activations of every
        layer are kept during the scoring pass (:attr:`NeuronScores.maps`), so that showing a
        few copies, or the clean image (copy 0), needs no other forward pass. Not with a
        DataLoader nor across ranks.
    layout : str or mapping, default "auto"
        Where each layer keeps its channels: "channels_first" (N, C, H, W) or (N, F);
        "channels_last" (N, H, W, C), e.g. Swin stages; "tokens" (N, L, D), e.g. ViT encoder
        layers, scored as (D, h, w) on their patch grid with a leading class token left out;
        "auto" detects it from the output's shape and the module's type
        (:mod:`neuronviz.core.layouts`). One name for every layer, or ``{layer: name}``.
        Scores, shapes and maps are channels first whatever the layout.
    bootstrap : int
        B >= 2: also compute B Poisson-bootstrap replicates of every score in the same pass
        (:attr:`NeuronScores.replicates`, for :meth:`NeuronScores.interval`,
        :meth:`~NeuronScores.rank_interval` and :meth:`~NeuronScores.tied`). Every sample gets
        B Poisson(1) weights drawn from (``bootstrap_seed``, its copy index), so batching and
        the split over ranks do not change them (with your own ``samples`` over several ranks,
        the index is the rank's row); each replicate accumulates the weighted moments. Memory
        grows with B x features, not with the number of samples. 0 (the default): none.
    bootstrap_seed : int, optional
        Seed of the replicate weights; None uses ``seed``.
    on_batch : callable, optional
        Called as ``on_batch(scores)`` after every batch with the :class:`NeuronScores` of
        the samples seen so far by this process (once at least 3 were; without replicates or
        maps), e.g. to draw a picture that refines while the pass runs; an exception it
        raises stops the run as a progress callback's does. With it, the first batch holds at
        most :data:`FIRST_BATCH` samples, so that the first call comes early.

    Returns
    -------
    NeuronScores

    Raises
    ------
    NeuronvizError
        Bad image or samples, fewer than 3 samples, unknown layer (closest names suggested),
        a layer that produced no output, a target out of range, a model output that is not
        (N, classes) without a callable target, input the model refuses; distributed: no
        process group with ``distributed=True``, NCCL with a CPU device, ranks that disagree
        on the layer shapes or the target class.
    neuronviz.core.distributed.PeerError
        Distributed, when another rank failed (that rank raises its own error).
    """
    modules = resolve_layers(model, layers)
    names = list(modules)
    dev = resolve_device(model, device)
    x = check_image(x, model)
    active = use_distributed(distributed)
    if samples is not None:
        check_images_source(samples, "samples")
    assert not isinstance(progress, bool)  # reports_progress made True/False a callback or None
    stream = samples is not None and is_batch_stream(samples)
    fixed: torch.Tensor | None = None  # the samples as one checked tensor
    if samples is not None and not stream:
        # a rank's shard may be small; the total is checked once the ranks have reported
        samples = fixed = check_batch(samples, model, what="samples", min_n=1 if active else 3)
        pert = None
    elif samples is None:
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 3:
            raise NeuronvizError(
                f"n_samples must be an integer >= 3 (a variance needs several copies), got {n_samples!r}"
            )
        pert = make_perturbation(perturbation)
    else:
        pert = None
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise NeuronvizError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    check_batch_request(x, n_samples if samples is None else None, batch_size, dev)
    for flag, value in (("per_unit", per_unit), ("keep_channel_means", keep_channel_means)):
        if not isinstance(value, bool):
            raise NeuronvizTypeError(f"{flag} must be True or False, got {value!r}")
    if not isinstance(dead_threshold, (int, float)) or math.isnan(dead_threshold):
        raise NeuronvizError(f"dead_threshold must be a number, got {dead_threshold!r}")
    keep = _check_keep_maps(keep_maps, None if stream or active else (n_samples if fixed is None else len(fixed)))
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 0 or bootstrap == 1:
        raise NeuronvizError(f"bootstrap must be 0 (none) or a number of replicates >= 2, got {bootstrap!r}")
    if bootstrap_seed is not None and (isinstance(bootstrap_seed, bool) or not isinstance(bootstrap_seed, int)):
        raise NeuronvizError(f"bootstrap_seed must be an integer or None (the seed), got {bootstrap_seed!r}")
    if on_batch is not None and not callable(on_batch):
        raise NeuronvizError(f"on_batch must be a callable taking the scores so far, got {on_batch!r}")
    boot_seed = seed if bootstrap_seed is None else bootstrap_seed

    with preserved_state(model), on_device(model, dev), torch.no_grad():
        model.eval()
        ranks = Ranks(dev, active)
        x = x.to(dev)
        moments: dict[str, CoMoments] = {}
        weighted: dict[str, WeightedCoMoments] = {}
        shapes: dict[str, tuple[int, ...]] = {}
        outputs = RowBuffer((), torch.float64)
        channel_means: dict[str, RowBuffer] = {}
        kept_maps: dict[str, dict[int, torch.Tensor]] = {}
        state: dict[str, Any] = {}  # "t": the Target, once resolved; "seen": the samples scored so far
        size = batch_size or default_batch_size(dev)
        head = FIRST_BATCH if on_batch is not None else 0  # a small first batch: an early first partial

        def get_target(first_out: object, is_first_copy: bool) -> Target:
            if "t" not in state:
                clean_copy = pert is not None and pert.first_is_original and isinstance(first_out, torch.Tensor)
                if is_first_copy and clean_copy:
                    # copy 0 is x itself: its output is the clean prediction, no extra forward
                    predict = lambda: first_out  # noqa: E731  (its first row is x's)
                else:
                    predict = lambda: forward_checked(model, x)  # noqa: E731
                state["t"] = resolve_target(target, output, predict=predict)
            return state["t"]

        with ActivationCapture(model, names, layout=layout) as rec:

            def score(batch: torch.Tensor, is_first_copy: bool = False, index: range = range(0)) -> None:
                out = forward_checked(model, batch)
                acts = rec.outputs()
                o = get_target(out, is_first_copy)(out).double()
                if not torch.isfinite(o).all():
                    raise NeuronvizError("the target gave NaN or infinite values on the perturbed samples")
                updates, means_upd, maps_upd, w_upd = {}, {}, {}, {}
                if bootstrap:
                    # a stream's samples are numbered as they come; a rank's own samples by rank and row
                    rows_at = index if len(index) else range(state.get("seen", 0), state.get("seen", 0) + len(o))
                    offset = (ranks.rank << 40) if (samples is not None and ranks.active) else 0
                    weights = poisson_weights(boot_seed, [offset + i for i in rows_at], bootstrap)
                for name in names:
                    a = acts[name]
                    if name not in shapes:
                        if a.dim() < 2:
                            raise NeuronvizError(
                                f"layer {name!r} gives a {a.dim()}-D output per batch; a layer with a channel "
                                "dimension, (N, C, ...) or (N, F), is needed"
                            )
                        shapes[name] = tuple(a.shape[1:])
                    updates[name] = CoMoments.from_batch(_as_features(a), o)
                    if bootstrap:  # summed at the commit below, in place
                        w_upd[name] = _as_features(a)
                    if keep_channel_means:
                        means_upd[name] = a.reshape(a.shape[0], a.shape[1], -1).float().mean(2).cpu()
                    rows = [(j, i) for j, i in enumerate(index) if i in keep]
                    if rows:
                        # a copy of its own: a view would keep the whole batch's recording alive
                        maps_upd[name] = {i: a[j].float().cpu().clone() for j, i in rows}
                rec.clear()
                for name, m in updates.items():  # commit only once the whole batch succeeded
                    moments.setdefault(name, CoMoments(m.mean.numel(), m.mean.device)).merge(m)
                for name, feats in w_upd.items():
                    if name not in weighted:  # not setdefault: it would allocate B x F sums every batch
                        weighted[name] = WeightedCoMoments(bootstrap, feats.shape[1], feats.device)
                    weighted[name].update(feats, o, weights)
                state["seen"] = state.get("seen", 0) + len(o)
                for name, mu in means_upd.items():
                    channel_means.setdefault(name, RowBuffer(mu.shape[1:], torch.float32)).append(mu)
                for name, kept_rows in maps_upd.items():
                    kept_maps.setdefault(name, {}).update(kept_rows)
                outputs.append(o.cpu())
                if on_batch is not None and outputs.n >= 3:
                    on_batch(_partial_scores(moments, shapes, names, outputs, channel_means, get_target(None, False),
                                             per_unit, dead_threshold, pert, seed, dict(rec.layouts)))

            with ranks.together("score_neurons' pass over the samples"):
                if stream:
                    assert samples is not None  # a stream of batches
                    _score_stream(samples, model, dev, batch_size, score, progress)
                elif fixed is not None:
                    _run_batches(fixed.shape[0], size, lambda r: score(fixed[r.start : r.stop].to(dev), False, r),
                                 progress, head)
                else:
                    block = shard(n_samples, ranks.rank, ranks.size)

                    def step(r: range) -> None:
                        assert pert is not None  # made above when no samples are given
                        copies = range(block.start + r.start, block.start + r.stop)
                        score(pert.sample(x, copies, seed=seed), copies.start == 0, copies)

                    _run_batches(len(block), size, step, progress, head)
                if "t" not in state:  # no sample on this rank: the target still comes from x
                    get_target(None, False)
                    rec.clear()

        tgt = state["t"]
        n_total = _agree(ranks, names, shapes, outputs.n, tgt)
        all_outputs = ranks.gather_rows(outputs.rows()).cpu()
        if keep_channel_means:
            kept = {}
            for name in names:
                mine = channel_means.pop(name, None) or RowBuffer((shapes[name][0],), torch.float32)
                kept[name] = ranks.gather_rows(mine.rows()).cpu()
        if float(all_outputs.var()) == 0.0:
            warnings.warn(
                "the target value is the same on every perturbed sample, so every correlation is NaN; "
                "use output='logit', a stronger perturbation, or another target",
                NeuronvizWarning,
                stacklevel=3,  # the caller of the public function (runs_model wraps it)
            )
        corr, prec, mean, excluded, rules = {}, {}, {}, {}, {}
        replicates: dict[str, dict[str, torch.Tensor]] = {"correlation": {}, "precision": {}}
        for name in names:
            m = moments.pop(name, None) or CoMoments(math.prod(shapes[name]), dev)  # a rank without samples
            m = all_reduce_comoments(m, ranks)
            corr[name], prec[name], mean[name], excluded[name], rules[name] = _finalise(
                m, shapes[name], per_unit, dead_threshold)
            if bootstrap:
                wm = weighted.pop(name, None) or WeightedCoMoments(bootstrap, math.prod(shapes[name]), dev)
                wm = all_reduce_weighted(wm, ranks)
                replicates["correlation"][name], replicates["precision"][name] = _finalise_replicates(
                    wm, m, shapes[name], per_unit, excluded[name])
        moments.clear()  # free the accumulators before returning
        weighted.clear()

    return NeuronScores(
        correlation=corr,
        precision=prec,
        mean_activation=mean,
        outputs=all_outputs,
        target=tgt.class_index,
        output=tgt.output,
        shapes=shapes,
        n_samples=n_total,
        per_unit=per_unit,
        perturbation=pert,
        seed=seed,
        dead_threshold=float(dead_threshold),
        layers=names,
        channel_means=kept if keep_channel_means else None,
        maps={name: torch.stack([kept_maps[name][i] for i in keep_maps]) for name in names} if keep else None,
        map_indices=[int(i) for i in keep_maps],
        layouts={name: str(rec.layouts.get(name, "channels_first")) for name in names},
        excluded=excluded,
        exclusion_rule=rules,
        replicates=replicates if bootstrap else None,
        bootstrap_seed=boot_seed if bootstrap else None,
    )


#: Elements (replicates x features) of the sums finalised at once by :func:`_finalise_replicates`.
_REPLICATE_CHUNK = 2**16


def _finalise_replicates(
    wm: WeightedCoMoments, m: CoMoments, shape: tuple[int, ...], per_unit: bool, excluded: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, *view) correlation and precision of every replicate, by the formulas of :func:`_finalise`.

    A unit constant over all samples is constant in every replicate; one that varies but whose
    weighted variance in a replicate is rounding (its varying samples all got weight 0) counts
    as constant in that replicate.
    """
    b, c = wm.weight.numel(), shape[0]
    p = math.prod(shape[1:])
    var_all, constant = m.variance().view(c, p), m.constant.view(c, p)
    out = excluded.to(var_all.device).reshape(c, -1)
    # a few channels at a time: the (B, channels, P) temporaries stay in the cache, where the
    # dozen elementwise steps cost little next to reading the sums once from memory
    step = max(1, _REPLICATE_CHUNK // max(1, b * p))
    corrs, precs = [], []
    for lo in range(0, c, step):
        hi = min(c, lo + step)
        var, corr = wm.columns(slice(lo * p, hi * p)).variance_and_correlation()
        var, corr = var.view(b, hi - lo, p), corr.abs_().view(b, hi - lo, p)
        flat = (constant[lo:hi] | (var <= wm.tolerance * var_all[lo:hi])) & torch.isfinite(var)
        corr.masked_fill_(flat, math.nan)
        var.masked_fill_(flat, 0.0)
        if not per_unit:
            corr, var, flat = torch.nanmean(corr, dim=2), var.mean(2), flat.all(2)
        precision = torch.where(var > 0, 1.0 / var, torch.full_like(var, math.inf))
        precision.masked_fill_((out[lo:hi].reshape(var.shape[1:]) & flat) | torch.isnan(var), math.nan)
        corrs.append(corr)
        precs.append(precision)
    view = (b, *shape) if per_unit and len(shape) > 1 else (b, c)
    corr, precision = torch.cat(corrs, 1), torch.cat(precs, 1)
    return corr.reshape(view).cpu(), precision.reshape(view).cpu()


def _partial_scores(
    moments: dict[str, CoMoments], shapes: dict[str, tuple[int, ...]], names: list[str], outputs: RowBuffer,
    channel_means: dict[str, RowBuffer], tgt: Target, per_unit: bool, dead_threshold: float,
    pert: Perturbation | None, seed: int, layouts: dict,
) -> NeuronScores:
    """The scores of the samples seen so far (for ``on_batch``)."""
    parts: dict[str, dict[str, torch.Tensor]] = {k: {} for k in ("corr", "prec", "mean", "excl")}
    rules = {}
    for name in names:
        (parts["corr"][name], parts["prec"][name], parts["mean"][name], parts["excl"][name],
         rules[name]) = _finalise(moments[name], shapes[name], per_unit, dead_threshold)
    return NeuronScores(
        correlation=parts["corr"], precision=parts["prec"], mean_activation=parts["mean"], outputs=outputs.rows().cpu(),
        target=tgt.class_index, output=tgt.output, shapes=dict(shapes), n_samples=outputs.n, per_unit=per_unit,
        perturbation=pert, seed=seed, dead_threshold=float(dead_threshold), layers=list(names),
        channel_means={n: b.rows() for n, b in channel_means.items()} if channel_means else None,
        excluded=parts["excl"], exclusion_rule=rules, layouts={n: str(layouts.get(n, "channels_first")) for n in names},
    )


def _run_batches(n: int, size: int, step: Callable[[range], None], progress: Callable[[int, int], None] | None,
                 head: int) -> None:
    """:func:`run_batched` over ``0..n-1``, the first range at most ``head`` long (0: no limit)."""
    first = min(n, head) if 0 < head < size else 0

    def report(offset: int) -> Callable[[int, int], None] | None:
        return None if progress is None else (lambda done, _n: progress(offset + done, n))

    if first:
        run_batched(first, first, step, on_progress=report(0))
    run_batched(n - first, size, lambda r: step(range(r.start + first, r.stop + first)), on_progress=report(first))


def _check_keep_maps(keep_maps: Sequence[int], n: int | None) -> set[int]:
    """The samples ``keep_maps`` names, checked against the ``n`` samples (None: maps cannot be kept)."""
    try:
        wanted = [int(i) for i in keep_maps if not isinstance(i, bool) and int(i) == i]
    except (TypeError, ValueError):
        wanted = []
    if len(wanted) != len(keep_maps):
        raise NeuronvizError(f"keep_maps must be a list of sample indices, got {keep_maps!r}")
    if wanted and n is None:
        raise NeuronvizError("keep_maps needs the samples in one process: not with a DataLoader or across ranks")
    bad = [i for i in wanted if not 0 <= i < (n or 0)]
    if bad:
        raise NeuronvizError(f"keep_maps: samples {bad} do not exist; there are {n} (indices 0..{(n or 1) - 1})")
    return set(wanted)


def _score_stream(
    samples: Iterable,
    model: nn.Module,
    dev: torch.device,
    batch_size: int | None,
    score: Callable[[torch.Tensor], None],
    progress: Callable[[int, int], None] | None,
) -> None:
    """Score the batches of an iterable as they come, each cut to ``batch_size`` and halved on out-of-memory."""
    total = count_hint(samples)
    done = 0
    for raw in iter_batches(samples, 1, what="samples"):
        batch = check_batch(raw, model, what="samples", min_n=0)

        def step(r: range, batch: torch.Tensor = batch) -> None:
            score(batch[r.start : r.stop].to(dev))

        def report(d: int, _: int, before: int = done) -> None:
            if progress is not None:
                progress(before + d, max(total or 0, before + d))

        run_batched(batch.shape[0], batch_size or max(1, batch.shape[0]), step, on_progress=report)
        done += batch.shape[0]


def _agree(
    ranks: Ranks, names: list[str], shapes: dict[str, tuple[int, ...]], n_local: int, tgt: Target
) -> int:
    """Check that the ranks scored the same layers and target; fill in shapes a rank never saw.

    Returns the number of samples over all ranks.
    """
    dims = 8
    header = [n_local, -1 if tgt.class_index is None else tgt.class_index]
    for name in names:
        shape = shapes.get(name, ())
        if len(shape) > dims:
            raise NeuronvizError(f"layer {name!r} has {len(shape)} dimensions per sample; at most {dims} are supported")
        header += [len(shape), *shape, *[-1] * (dims - len(shape))]
    rows = ranks.gather_ints(header)
    n_total = sum(r[0] for r in rows)
    if n_total < 3:
        where = f" over {ranks.size} ranks" if ranks.size > 1 else ""
        raise NeuronvizError(f"samples holds {n_total} image(s){where}; at least 3 are needed")
    if len({r[1] for r in rows}) > 1:
        raise NeuronvizError(
            f"the ranks explain different classes ({sorted({r[1] for r in rows})}); pass the same image x "
            "on every rank, or an explicit target"
        )
    seen = [r for r in rows if r[0] > 0]
    for i, name in enumerate(names):
        lo = 2 + i * (dims + 1)
        found = {tuple(r[lo + 1 : lo + 1 + r[lo]]) for r in seen}
        if len(found) > 1:
            raise NeuronvizError(f"layer {name!r} has different shapes on different ranks: {sorted(found)}")
        shapes[name] = found.pop()
    return n_total
