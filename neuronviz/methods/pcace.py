"""PCACE: rank the channels of a layer by the maximal correlation of their maps with a class score.

Casacuberta, Suel & Flaxman, "PCACE: A Statistical Approach to Ranking Neurons for CNN
Interpretability", arXiv:2112.15571 (2021). Each channel's activation maps over N images are
standardised position by position, reduced by PCA, and the ACE estimate of the maximal
correlation between the leading component(s) and the class score is the channel's score.
The images go through the network once (never once per channel), or twice when streamed
from a data set too large for memory (first the per-channel position covariances, then the
projections), on one process or across the ranks of a ``torch.distributed`` group; ACE runs
on all channels at once (:func:`neuronviz.methods.ace.ace_batch`).

ACE here follows ``mace.f`` as the ``ace`` package 0.4.2 re-implements it. The paper's authors
(2021) ran ``ace`` 0.3.x, a different algorithm: its transforms start at zero instead of a
least-squares scaling, it uses other smoother spans and no variance floor, and it loops while
``e^2`` decreases (up to 200 outer iterations). Through their pipeline its channel scores
differ from 0.4.2's by up to 0.08-0.11, so their published scores are not reproduced to that
precision (``docs/methods-pcace-ace.md``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import torch
from torch import nn

from ..core.archive import Archived, archived
from ..core.batching import available_bytes, check_fits, default_batch_size
from ..core.capture import ActivationCapture, resolve_layers
from ..core.distributed import Ranks, all_reduce_covariance, shard, use_distributed
from ..core.errors import NeuronvizError, NeuronvizTypeError, NeuronvizWarning
from ..core.locks import runs_model
from ..core.model_state import model_device, on_device, preserved_state, resolve_device
from ..core.progress import ProgressArg, images_of, is_long, reports_progress
from ..core.stats import PositionCovariance
from ..core.streams import RowBuffer, check_reiterable, count_hint, is_batch_stream, iter_batches
from ..core.targets import Target, TargetSpec, resolve_target
from ..core.validation import all_finite, check_batch, check_images_source, check_int, forward_checked
from .ace import ace_batch

if TYPE_CHECKING:
    import pandas

__all__ = [
    "PCACEScores", "LayerRanking", "pcace", "rank_layers", "channel_components", "project", "MIN_IMAGES",
    "shown_maps", "mean_probabilities",
]

#: Fewer images than this make ACE's smoothers meaningless: refused.
MIN_IMAGES = 20
VARIANTS = ("principled", "authors")
# working set of the PCA step, per chunk of channels (float64 copies of the maps)
_CHUNK_BYTES = 256 * 2**20
# matrices up to this size are diagonalised single-threaded on a CPU (see _eigh)
_SMALL_EIGH = 1024
# channels x images x components solved by one ace_batch call (twice the working set it keeps)
_ACE_ELEMENTS = {"cpu": 2**21, "cuda": 2**25}


@archived('PCACEScores')
@dataclass
class PCACEScores(Archived):
    """PCACE scores of every channel of one layer.

    Attributes
    ----------
    scores : torch.Tensor
        (C,) float64 in [0, 1]: the maximal-correlation estimate of each channel.
    ranking : torch.Tensor
        (C,) channel indices, highest score first (ties: lower index first).
    layer : str
        The layer.
    target : int or None
        The class whose logit was the score (None for a callable target).
    n_images : int
        Number of images.
    n_components : int
        Principal components per channel.
    variant : str
        ``"principled"`` or ``"authors"``.
    explained_variance : torch.Tensor
        (C, n_components): fraction of each channel's standardised variance its components
        explain.
    target_values : torch.Tensor
        (N,) the score of each image.
    """

    scores: torch.Tensor
    ranking: torch.Tensor
    layer: str
    target: int | None
    n_images: int
    n_components: int
    variant: str
    explained_variance: torch.Tensor
    target_values: torch.Tensor

    def top(self, k: int = 5) -> list[int]:
        """The ``k`` best channels, best first."""
        return self.ranking[:k].tolist()

    def bottom(self, k: int = 5) -> list[int]:
        """The ``k`` worst channels, worst first."""
        return self.ranking.flip(0)[:k].tolist()

    def as_rows(self) -> list[dict]:
        """One dict per channel, in channel order: ``layer``, ``channel``, ``pcace`` (the score),
        ``rank`` (1 for the best channel) and ``explained_variance`` (of all components).

        Returns
        -------
        list of dict
            Ready for ``csv.DictWriter`` or ``pandas.DataFrame``.
        """
        rank = torch.empty_like(self.ranking)
        rank[self.ranking] = torch.arange(1, self.ranking.numel() + 1, dtype=self.ranking.dtype)
        explained = self.explained_variance.reshape(self.scores.numel(), -1).sum(1)
        return [{"layer": self.layer, "channel": c, "pcace": float(s), "rank": int(r), "explained_variance": float(e)}
                for c, (s, r, e) in enumerate(zip(self.scores.tolist(), rank.tolist(), explained.tolist()))]

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

        return rows_to_frame(self.as_rows(), ["layer", "channel", "pcace", "rank", "explained_variance"])

    def __repr__(self) -> str:
        what = f"class {self.target}" if self.target is not None else "callable target"
        return (
            f"PCACEScores(layer {self.layer!r}, {self.scores.numel()} channels, {self.n_images} images, "
            f"{what}, top {self.top(5)})"
        )


@archived('LayerRanking')
@dataclass
class LayerRanking(Archived):
    """PCACE over several layers, with a per-layer summary.

    Attributes
    ----------
    layers : dict of str to PCACEScores
        Scores per layer, in the order given.
    k : int
        How many top channels the summary averages.
    summary : list of dict
        One row per layer: ``layer``, ``channels``, ``mean_top_k``, ``max``, ``mean``;
        sorted by ``mean_top_k``, highest first.
    """

    layers: dict[str, PCACEScores]
    k: int
    summary: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.summary:
            rows = []
            for name, s in self.layers.items():
                top = s.scores[s.ranking[: self.k]]
                rows.append(
                    {
                        "layer": name,
                        "channels": int(s.scores.numel()),
                        "mean_top_k": float(top.mean()),
                        "max": float(s.scores.max()),
                        "mean": float(s.scores.mean()),
                    }
                )
            self.summary = sorted(rows, key=lambda r: -r["mean_top_k"])

    def best(self) -> str:
        """The layer with the highest mean top-k score."""
        return self.summary[0]["layer"]

    def as_rows(self, per: str = "layer") -> list[dict]:
        """The ranking as rows: per layer (:attr:`summary`, best first) or per channel.

        Parameters
        ----------
        per : {"layer", "channel"}
            ``"layer"``: ``layer``, ``channels``, ``mean_top_k``, ``max``, ``mean``;
            ``"channel"``: every layer's :meth:`PCACEScores.as_rows`, layer by layer.

        Returns
        -------
        list of dict
            Ready for ``csv.DictWriter`` or ``pandas.DataFrame``.

        Raises
        ------
        NeuronvizError
            ``per`` is neither.
        """
        if per == "layer":
            return [dict(r) for r in self.summary]
        if per == "channel":
            return [row for s in self.layers.values() for row in s.as_rows()]
        raise NeuronvizError(f"per must be 'layer' or 'channel', got {per!r}")

    def to_frame(self, per: str = "layer") -> "pandas.DataFrame":
        """:meth:`as_rows` as a pandas DataFrame.

        Parameters
        ----------
        per : {"layer", "channel"}
            One row per layer (the summary) or per channel of every layer.

        Returns
        -------
        pandas.DataFrame

        Raises
        ------
        NeuronvizError
            pandas is not installed, or ``per`` is neither.
        """
        from ..core.tables import rows_to_frame

        columns = ["layer", "channels", "mean_top_k", "max", "mean"] if per == "layer" else \
            ["layer", "channel", "pcace", "rank", "explained_variance"]
        return rows_to_frame(self.as_rows(per), columns)

    def __getitem__(self, layer: str) -> PCACEScores:
        return self.layers[layer]

    def __repr__(self) -> str:
        lines = [f"{'layer':<24} {'channels':>8} {f'mean top-{self.k}':>12} {'max':>6}"]
        lines += [
            f"{r['layer']:<24} {r['channels']:>8} {r['mean_top_k']:>12.3f} {r['max']:>6.3f}" for r in self.summary
        ]
        return "\n".join(lines)


def _eigh(mats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.linalg.eigh`` of a batch of symmetric matrices, single-threaded for small ones on a CPU.

    The CPU LAPACK solves the matrices one after the other, each with its own thread team;
    for small matrices the team's start-up costs more than the work, and on a busy machine
    each fork/join can wait a scheduler time slice (measured on 2 busy cores: 64 matrices of
    256 x 256 took 25-130 s with 2 threads, 0.5 s with 1; 784 x 784 ones were 3 times faster
    with 1).
    """
    if mats.device.type != "cpu" or mats.shape[-1] > _SMALL_EIGH or torch.get_num_threads() == 1:
        return torch.linalg.eigh(mats)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return torch.linalg.eigh(mats)
    finally:
        torch.set_num_threads(threads)


def channel_components(maps: torch.Tensor, n_components: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardise each channel's positions across images and project on its principal components.

    Parameters
    ----------
    maps : torch.Tensor
        (C, N, P): channel, image, position.
    n_components : int
        Components kept per channel.

    Returns
    -------
    projections : torch.Tensor
        (C, N, n_components) float64 principal-component scores. Each component's direction
        is signed so that its weights over the positions sum to >= 0, and images with
        identical maps get identical scores (see :func:`project`).
    explained : torch.Tensor
        (C, n_components) fraction of the standardised variance explained.
    """
    z = maps.double()
    z = z - z.mean(dim=1, keepdim=True)
    std = z.pow(2).mean(dim=1, keepdim=True).sqrt()
    varies = (maps.amax(dim=1, keepdim=True) > maps.amin(dim=1, keepdim=True)) & (std > 0)
    z = torch.where(varies, z / torch.where(varies, std, 1.0), 0.0)  # a constant position stays 0
    n, p = z.shape[1], z.shape[2]
    q = min(n_components, n, p)
    if n <= p:  # Gram matrix of the images is the smaller one; directions follow from its eigenvectors
        evals, u = _eigh(z @ z.transpose(1, 2))
        evals, u = evals.flip(-1)[:, :q].clamp_min(0), u.flip(-1)[:, :, :q]
        root = evals.sqrt().unsqueeze(1)
        directions = torch.where(root > 0, z.transpose(1, 2) @ u / torch.where(root > 0, root, 1.0), 0.0)
    else:
        evals, directions = _eigh(z.transpose(1, 2) @ z)
        evals, directions = evals.flip(-1)[:, :q].clamp_min(0), directions.flip(-1)[:, :, :q]
    directions = directions * torch.where(directions.sum(1, keepdim=True) < 0, -1.0, 1.0)
    proj = project(z.transpose(0, 1), directions).transpose(0, 1)
    total = z.pow(2).sum(dim=(1, 2))
    explained = evals / torch.where(total > 0, total, torch.ones_like(total)).unsqueeze(1)
    if q < n_components:  # more components than the data has: pad with zeros
        pad = n_components - q
        proj = torch.cat([proj, proj.new_zeros(proj.shape[0], n, pad)], dim=2)
        explained = torch.cat([explained, explained.new_zeros(explained.shape[0], pad)], dim=1)
    return proj, explained


def project(maps: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Scores of maps on per-channel directions, summed one position at a time.

    ACE's smoother treats tied values differently from values one rounding error apart, so
    images with identical maps (a channel that is zero on several images, say) must get
    bit-identical scores whatever batch, rank or device computed them. A matrix product
    does not promise that (its summation order can depend on the batch's shape); element-wise
    products summed position by position do.

    Parameters
    ----------
    maps : torch.Tensor
        (B, C, P) maps, already centred (and standardised, if ``directions`` are not scaled).
    directions : torch.Tensor
        (C, P, q).

    Returns
    -------
    torch.Tensor
        (B, C, q) float64.
    """
    by_position = maps.double().movedim(-1, 0).contiguous()  # (P, B, C)
    directions = directions.double()
    out = by_position.new_zeros(*by_position.shape[1:], directions.shape[-1])
    for pos in range(by_position.shape[0]):
        out += by_position[pos].unsqueeze(-1) * directions[:, pos]
    return out


Progress = Callable[[int, int], None]


def _reporter(progress: Progress | None, images: object, passes: int) -> Callable[[int], None]:
    """``report(n)``: ``n`` more images went through the network; calls ``progress(done, total)``.

    ``total`` is ``passes`` times the number of images when it can be known without iterating
    them (:func:`neuronviz.core.streams.count_hint`), else the count so far.
    """
    hint = count_hint(images)
    total = None if hint is None else hint * passes
    done = 0

    def report(n: int) -> None:
        nonlocal done
        done += int(n)
        if progress is not None:
            progress(done, max(total or 0, done))

    return report


_available_bytes = available_bytes


def _check_request(
    maps: dict[str, torch.Tensor], images: object, n_components: int, where: torch.device, store_bytes: int | None
) -> None:
    """Refuse at the first batch what cannot work: more components than positions, or more memory than free.

    ``store_bytes``: bytes per stored activation when the activations are held (None: streaming).
    """
    for name, a in maps.items():
        if n_components > a.shape[2]:
            raise NeuronvizError(
                f"n_components={n_components}, but a channel of layer {name!r} has {a.shape[2]} position(s), so "
                f"it has at most {a.shape[2]} principal component(s); pass n_components <= {a.shape[2]}"
            )
    n = count_hint(images)
    if n is None:
        return
    channels = sum(a.shape[1] for a in maps.values())
    need = 2 * 8.0 * n * channels * n_components  # the (C, N, q) float64 projections and their ACE inputs
    if store_bytes is not None:
        need += float(n) * sum(a.shape[1] * a.shape[2] for a in maps.values()) * store_bytes
    check_fits(need, where, f"PCACE's activations and projections of {n:,} images at {list(maps)}",
               "pass fewer images or fewer layers"
               + (", store_dtype=torch.float16 or offload='cpu'" if store_bytes else ""))


def _maps(a: torch.Tensor, name: str) -> torch.Tensor:
    """A layer's recording as (B, C, P) maps, checked; an (N, F) layer is F channels of one position."""
    if a.dim() < 2:
        raise NeuronvizError(f"layer {name!r} gives a {a.dim()}-D output; PCACE needs (N, C, ...) maps")
    a = a.reshape(a.shape[0], a.shape[1], -1)
    if a.numel() and not all_finite(a):
        raise NeuronvizError(f"layer {name!r} produced NaN or infinite activations")
    return a


def _given(out: object) -> Callable[[], object]:
    """The prediction of the batch just run, for :func:`resolve_target` to check the target on."""
    return lambda: out


def _gather(
    model: nn.Module,
    images: torch.Tensor | Iterable,
    layers: list[str],
    target: TargetSpec,
    batch_size: int | None,
    dev: torch.device,
    store_dtype: torch.dtype,
    store_device: torch.device | None,
    progress: Progress | None = None,
    n_components: int = 1,
) -> tuple[dict[str, list[torch.Tensor]], torch.Tensor, int | None]:
    """One forward pass per batch: every layer's maps (kept once, as chunks) and the target values."""
    report = _reporter(progress, images, 1)
    chunks: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    values: list[torch.Tensor] = []
    held = 0
    tgt = None
    size = batch_size or default_batch_size(dev)
    with preserved_state(model), on_device(model, dev), torch.no_grad(), ActivationCapture(
        model, layers, layout="auto"
    ) as rec:
        model.eval()
        for batch in iter_batches(images, size):
            batch = check_batch(batch, model, what="images").to(dev)
            out = forward_checked(model, batch)
            acts = rec.outputs()
            if tgt is None:
                tgt = resolve_target(target, "logit", predict=_given(out))
                _check_request({n: _maps(acts[n], n) for n in layers}, images, n_components,
                               store_device or dev, torch.finfo(store_dtype).bits // 8)
            values.append(tgt(out).double().cpu())
            for name in layers:
                a = _maps(acts[name], name)
                where = store_device or a.device
                held += a.numel() * torch.finfo(store_dtype).bits // 8
                if held > 0.9 * _available_bytes(where):
                    raise NeuronvizError(
                        f"the activations of {layers} over these images need more than the "
                        f"{_available_bytes(where) / 2**30:.1f} GiB free on {where}; pass "
                        "store_dtype=torch.float16, offload='cpu', fewer images, or fewer layers"
                    )
                chunks[name].append(a.to(device=where, dtype=store_dtype))
            rec.clear()
            report(batch.shape[0])  # inside the hooks' scope: raising here removes them on the way out
    if tgt is None:
        raise NeuronvizError(f"images is empty; PCACE needs at least {MIN_IMAGES} images")
    return chunks, torch.cat(values), tgt.class_index


def _ace_scores(proj: torch.Tensor, y: torch.Tensor, n_components: int, variant: str) -> torch.Tensor:
    """(C,) scores from the projections (C, N, q) and the target values (N,).

    ACE's inputs, transforms and sort orders take tens of float64 values per channel and
    image; solving a few channels at a time bounds that memory, whatever N and C (the
    problems are independent, so the scores are the same).
    """
    n = proj.shape[1]
    step = max(1, _ACE_ELEMENTS.get(proj.device.type, _ACE_ELEMENTS["cpu"]) // max(1, n * proj.shape[2]))
    if proj.shape[0] > step:
        parts = [_ace_scores(proj[lo : lo + step], y, n_components, variant) for lo in range(0, proj.shape[0], step)]
        return torch.cat(parts)
    if proj.shape[0] == 0:
        return proj.new_zeros(0)
    y = y.to(device=proj.device, dtype=torch.float64)
    if variant == "principled" or n_components == 1:
        rho = ace_batch(proj if n_components > 1 else proj[:, :, 0], y).rho
        assert isinstance(rho, torch.Tensor)  # batched: one value per channel
        return rho.clamp(0, 1)
    # the authors' code correlates only the first component's transform with theta
    res = ace_batch(proj, y)
    phi = res.x_transforms[:, :, 0]
    theta = res.y_transform
    phi = phi - phi.mean(1, keepdim=True)
    theta = theta - theta.mean(1, keepdim=True)
    denom = (phi.norm(dim=1) * theta.norm(dim=1)).clamp_min(1e-300)
    return ((phi * theta).sum(1) / denom).abs().clamp(0, 1)


def _score_chunks(
    chunks: list[torch.Tensor], y: torch.Tensor, n_components: int, variant: str, compute: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores (C,) and explained variance (C, q) from the stored maps, channels in bounded chunks."""
    n = sum(c.shape[0] for c in chunks)
    channels, positions = chunks[0].shape[1], chunks[0].shape[2]
    step = max(1, _CHUNK_BYTES // max(1, n * positions * 8))
    projections, explained = [], []
    for lo in range(0, channels, step):
        maps = torch.cat([c[:, lo : lo + step].to(compute) for c in chunks]).transpose(0, 1)  # (c, N, P)
        proj, ev = channel_components(maps, n_components)
        projections.append(proj)
        explained.append(ev)
    scores = _ace_scores(torch.cat(projections), y, n_components, variant)  # (C, N, q) projections
    return scores.cpu(), torch.cat(explained).cpu()


def _check_args(n_components: int, variant: str) -> None:
    if isinstance(n_components, bool) or not isinstance(n_components, int) or n_components < 1:
        raise NeuronvizError(f"n_components must be a positive integer, got {n_components!r}")
    if variant not in VARIANTS:
        raise NeuronvizError(f"variant must be one of {VARIANTS}, got {variant!r}")


def _check_values(y: torch.Tensor) -> None:
    n = y.numel()
    if n < MIN_IMAGES:
        raise NeuronvizError(
            f"PCACE needs at least {MIN_IMAGES} images (ACE's smoothers are meaningless on fewer; "
            f"40 or more are better), got {n}"
        )
    if float(y.max() - y.min()) == 0.0:
        raise NeuronvizError("the target score is the same on every image, so no channel can correlate with it")


def _finish(
    chunks: list[torch.Tensor], y: torch.Tensor, layer: str, target: int | None, n_components: int,
    variant: str, compute: torch.device,
) -> PCACEScores:
    _check_values(y)
    scores, explained = _score_chunks(chunks, y, n_components, variant, compute)
    ranking = torch.sort(-scores, stable=True).indices
    return PCACEScores(scores, ranking, layer, target, y.numel(), n_components, variant, explained, y.float())


# -- streaming: passes over the data that never hold all activations -----------------------------


class _TooBig(NeuronvizError):
    """The position covariances do not fit; holding the activations may still work."""


def _principal_directions(
    cov: PositionCovariance, q: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each channel's first ``q`` principal directions of its standardised positions.

    Returns ``directions`` (C, P, q), already divided by each position's standard deviation
    (0 for a constant position) so that ``(a - mean) @ directions`` are the principal
    component scores of maps ``a``, and ``explained`` (C, q), the fraction of the
    standardised variance each component explains; as :func:`channel_components` gives on
    the whole data.
    """
    channels, positions = cov.mean.shape
    k = min(q, positions)
    inv = cov.std()
    inv = torch.where(inv > 0, 1.0 / torch.where(inv > 0, inv, 1.0), 0.0)
    step = max(1, _CHUNK_BYTES // (3 * 8 * positions * positions))
    directions = torch.zeros(channels, positions, q, dtype=torch.float64, device=cov.mean.device)
    explained = torch.zeros(channels, q, dtype=torch.float64, device=cov.mean.device)
    for lo in range(0, channels, step):
        sl = slice(lo, lo + step)
        corr = cov.correlation(sl)
        evals, evecs = _eigh(corr)
        evals, evecs = evals.flip(-1)[:, :k].clamp_min(0), evecs.flip(-1)[:, :, :k]
        # eigh's sign is arbitrary: fix it so every rank and every run agree
        sign = torch.where(evecs.sum(1, keepdim=True) < 0, -1.0, 1.0)
        directions[sl, :, :k] = evecs * sign * inv[sl].unsqueeze(2)
        total = corr.diagonal(dim1=1, dim2=2).sum(1)  # number of non-constant positions
        explained[sl, :k] = evals / torch.where(total > 0, total, torch.ones_like(total)).unsqueeze(1)
    return directions, explained


def _use_streaming(streaming: bool | None, images: object, distributed: bool) -> bool:
    if streaming is not None and not isinstance(streaming, bool):
        raise NeuronvizError(f"streaming must be True, False or None (automatic), got {streaming!r}")
    if distributed and streaming is False:
        raise NeuronvizError(
            "distributed PCACE reduces streamed statistics across ranks, so streaming=False works in one "
            "process only; pass distributed=False to rank this process's images alone"
        )
    stream = streaming if streaming is not None else distributed or is_batch_stream(images)
    if stream and is_batch_stream(images):
        check_reiterable(images)
    return stream


def _stream_scores(
    model: nn.Module,
    images: torch.Tensor | Iterable,
    names: list[str],
    target: TargetSpec,
    batch_size: int | None,
    dev: torch.device,
    n_components: int,
    variant: str,
    ranks: Ranks,
    may_fall_back: bool,
    progress: Progress | None = None,
) -> dict[str, PCACEScores]:
    """PCACE in two passes over ``images`` whose memory does not grow with their number.

    Pass 1 accumulates each layer's per-channel position covariance (the forward pass stops
    after the last hooked layer); the principal directions follow from it. Pass 2 projects
    every image's maps on them and records the target: N x C x q numbers per layer. ACE then
    scores the channels. Distributed, the covariances are reduced across ranks, the
    directions come from rank 0, the projections are gathered, and each rank solves ACE for
    a block of channels.
    """
    size = batch_size or default_batch_size(dev)
    report = _reporter(progress, images, 2)
    with preserved_state(model), on_device(model, dev), torch.no_grad():
        model.eval()
        # the recording ends each pass after the last layer, except where the output is needed
        with ActivationCapture(model, names, layout="auto") as rec:
            covs: dict[str, PositionCovariance] = {}
            tgt = None
            n_first = 0
            with ranks.together("PCACE's first pass over the images (position covariances)"):
                for raw in iter_batches(images, size):
                    batch = check_batch(raw, model, what="images", min_n=0)
                    if batch.shape[0] == 0:
                        continue
                    rec.stop_after_last = tgt is not None  # the first batch runs whole: the target is checked early
                    out = rec.forward(batch.to(dev))
                    acts = rec.outputs()
                    if tgt is None:
                        tgt = resolve_target(target, "logit", predict=_given(out))
                    maps = {name: _maps(acts[name], name) for name in names}
                    if not covs:
                        _check_request(maps, images, n_components, dev, None)
                    rec.clear()
                    if not covs:
                        _check_fits(maps, dev, may_fall_back)
                        covs = {name: PositionCovariance(a.shape[1], a.shape[2], dev) for name, a in maps.items()}
                    for name, a in maps.items():
                        covs[name].update(a)
                    n_first += batch.shape[0]
                    report(batch.shape[0])
            found_shapes = {n: (c.mean.shape[0], c.mean.shape[1]) for n, c in covs.items()}
            cls, shapes = _agree(ranks, names, n_first, tgt, found_shapes)
            components = {}
            for name in names:
                cov = covs.pop(name, None) or PositionCovariance(*shapes[name], dev)
                cov = all_reduce_covariance(cov, ranks)
                with ranks.together("PCACE's principal components"):
                    if ranks.rank == 0:
                        directions, explained = _principal_directions(cov, n_components)
                    else:
                        directions = torch.empty(*shapes[name], n_components, dtype=torch.float64, device=dev)
                        explained = torch.empty(shapes[name][0], n_components, dtype=torch.float64, device=dev)
                # rank 0's mean too, so that identical maps on different ranks give identical scores
                components[name] = tuple(ranks.broadcast(t) for t in (cov.mean, directions, explained))
                del cov  # the C x P x P matrices are not needed any more

            rec.stop_after_last = False
            f64: dict[str, Any] = dict(dtype=torch.float64, device=dev)
            projections = {name: RowBuffer((shapes[name][0], n_components), **f64) for name in names}
            values = RowBuffer((), **f64)
            with ranks.together("PCACE's second pass over the images (projections)"):
                for raw in iter_batches(images, size):
                    batch = check_batch(raw, model, what="images", min_n=0)
                    if batch.shape[0] == 0:
                        continue
                    out = rec.forward(batch.to(dev))
                    acts = rec.outputs()
                    if tgt is None:  # a loader that was empty on the first pass
                        tgt = resolve_target(target, "logit", predict=_given(out))
                    values.append(tgt(out).double())
                    for name in names:
                        mean, directions, _ = components[name]
                        projections[name].append(project(_maps(acts[name], name).double() - mean, directions))
                    rec.clear()
                    report(batch.shape[0])

    y = ranks.gather_rows(values.rows())
    n_second = y.numel()
    n_total = sum(row[0] for row in ranks.gather_ints([n_first]))
    if n_second != n_total:
        raise NeuronvizError(
            f"the images gave {n_total} images on the first pass and {n_second} on the second; PCACE reads "
            "them twice and needs the same images each time (a DataLoader over a fixed data set, shuffled or "
            "not, does; a stream of new images does not)"
        )
    _check_values(y)
    results = {}
    for name in names:
        explained = components.pop(name)[2]
        channels = shapes[name][0]
        proj = ranks.gather_rows(projections.pop(name).rows()).transpose(0, 1)  # (C, N, q)
        block = shard(channels, ranks.rank, ranks.size)
        with ranks.together("ACE"):
            local = _ace_scores(proj[block.start : block.stop], y, n_components, variant)
        scores = ranks.gather_rows(local).cpu()
        ranking = torch.sort(-scores, stable=True).indices
        results[name] = PCACEScores(
            scores, ranking, name, cls, n_second, n_components, variant, explained.cpu(), y.float().cpu()
        )
    return results


def _check_fits(maps: dict[str, torch.Tensor], dev: torch.device, may_fall_back: bool) -> None:
    need = sum(PositionCovariance.nbytes(a.shape[1], a.shape[2]) for a in maps.values())
    free = _available_bytes(dev)
    if need <= 0.5 * free:
        return
    sizes = ", ".join(f"{name}: {a.shape[1]} x {a.shape[2]} x {a.shape[2]}" for name, a in maps.items())
    raise (_TooBig if may_fall_back else NeuronvizError)(
        f"streaming PCACE holds each layer's per-channel position covariance (C x P x P float64; {sizes}), "
        f"{need / 2**30:.2f} GiB, more than half the {free / 2**30:.1f} GiB free on {dev}; score a later "
        "layer or smaller images, or pass streaming=False (one process) to hold the N x C x P activations "
        "instead"
    )


def _agree(
    ranks: Ranks, names: list[str], n_local: int, tgt: Target | None, shapes: dict[str, tuple[int, int]]
) -> tuple[int | None, dict[str, tuple[int, int]]]:
    """The target class and every layer's (C, P), checked to be the same on every rank that saw images."""
    header = [n_local, -2 if tgt is None else (-1 if tgt.class_index is None else tgt.class_index)]
    for name in names:
        header += list(shapes.get(name, (0, 0)))
    rows = [r for r in ranks.gather_ints(header) if r[0] > 0]
    if not rows:
        raise NeuronvizError(f"images is empty; PCACE needs at least {MIN_IMAGES} images")
    classes = {r[1] for r in rows}
    if len(classes) > 1:
        raise NeuronvizError(
            f"the ranks scored different targets ({sorted(classes)}); pass the same target on every rank"
        )
    agreed: dict[str, tuple[int, int]] = {}
    for i, name in enumerate(names):
        found = {tuple(r[2 + 2 * i : 4 + 2 * i]) for r in rows}
        if len(found) > 1:
            raise NeuronvizError(
                f"layer {name!r} has different (channels, positions) on different ranks: {sorted(found)}"
            )
        channels, positions = found.pop()
        agreed[name] = (channels, positions)
    cls = rows[0][1]
    return (None if cls < 0 else cls), agreed


@runs_model
@reports_progress(lambda a: is_long(images_of(a.arguments["images"])), unit="image")
def pcace(
    model: nn.Module,
    images: torch.Tensor | Iterable,
    layer: str,
    target: TargetSpec,
    *,
    n_components: int = 1,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    variant: str = "principled",
    store_dtype: torch.dtype = torch.float32,
    offload: str | torch.device | None = None,
    streaming: bool | None = None,
    distributed: bool | None = None,
    progress: ProgressArg = None,
) -> PCACEScores:
    """Rank the channels of ``layer`` by PCACE.

    Per channel the maps are standardised position by position across images, projected on
    their first ``n_components`` principal components, and the ACE maximal correlation of
    the projection(s) with the score (the pre-softmax logit of class ``target``, or a
    callable of the model output) is the channel's score; all channels are solved together.

    Two ways to get there, with the same scores up to rounding:

    - In memory (a tensor of images): one forward pass per batch records the layer, whose
      N x C x H x W activations are held once, in ``store_dtype`` on the compute device (or
      on ``offload``); the PCA works on bounded chunks of channels. A request that cannot
      fit fails with a message before running out of memory.
    - Streaming (a DataLoader, or ``streaming=True``): two passes over the images. The first
      accumulates each channel's position covariance (C x P x P float64, whatever the number
      of images; its forward passes stop after the layer), the second projects each image
      on the principal directions and records the score. Memory grows only by the N x C x
      ``n_components`` projections and the N scores (8 bytes each), so data sets far larger
      than memory can be ranked. The images must be the same on both passes (a DataLoader
      over a fixed data set; shuffling is fine).

    Distributed (an initialised ``torch.distributed`` process group of several ranks, e.g.
    under ``torchrun``): each rank passes its own shard (a DataLoader with a
    ``DistributedSampler``, or a tensor), the covariances are reduced across ranks, the
    projections gathered, and every rank returns the ranking of all the images;
    ``target_values`` are then in rank order.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    images : torch.Tensor or iterable
        (N, C, H, W) images, or an iterable of such batches (a DataLoader; ``(images, labels)``
        pairs are accepted), normalised as the model expects. At least 20 images in all.
    layer : str
        The layer (see :func:`neuronviz.layer_summary`); the hook sits on its output (for a
        ``Conv2d``, the raw convolution, as in the authors' code).
    target : int or callable
        The class whose logit is the score, or a callable mapping the model output to (N,).
    n_components : int
        Principal components per channel.
    batch_size : int, optional
        Images per forward pass (when ``images`` is a tensor).
    device : str or torch.device, optional
        Where to compute; None is the model's device. Distributed over NCCL, each rank's own GPU.
    variant : {"principled", "authors"}
        With ``n_components > 1``: ``"principled"`` scores ``sqrt(R^2)`` of the multivariate
        ACE, ``"authors"`` the authors' ``|corr(phi_1, theta)|`` of the first component only.
    store_dtype : torch.dtype
        Precision of the stored activations, in memory (``torch.float16`` halves the memory).
    offload : str or torch.device, optional
        Keep the stored activations there, in memory (e.g. ``"cpu"`` for a big layer on a GPU).
    streaming : bool or None
        None: stream an iterable of batches (or when distributed), hold a tensor's
        activations; if the covariances of a streamed layer would not fit in memory (a layer
        with very many positions), fall back to holding the activations, with a warning.
        True / False: always stream / always hold.
    distributed : bool or None
        None: reduce across ranks when a process group of several ranks is initialised
        (every rank must then make the same call: one rank calling alone would wait for the
        others); False: rank this process's images alone; True: require a process group.
    progress : bool, callable or None
        ``True``: a progress bar (:mod:`neuronviz.core.progress`); ``False``: none; None (the
        default): a bar when ``images`` holds at least 200 images or is a loader or iterable.
        A callable is called as ``progress(done, total)`` after each batch of every forward pass, counting
        images: ``total`` is the number of images (twice that when streaming, which reads them
        twice; for an iterable of unknown length, ``done`` so far). Distributed, each rank
        reports its own counts. An exception it raises (a cancelled job, ``KeyboardInterrupt``)
        stops the call and propagates, with every hook removed and the model as before.

    Returns
    -------
    PCACEScores

    Raises
    ------
    NeuronvizError
        Fewer than 20 images, a constant target, NaN activations, an unknown layer, bad
        images, a target out of range, a request that cannot fit in memory; streaming: a
        one-shot iterator (a generator) or images that differ between the two passes;
        distributed: NCCL with a CPU device, ``streaming=False``, ranks that disagree on the
        target or the layer's shape.
    neuronviz.core.distributed.PeerError
        Distributed, when another rank failed (that rank raises its own error).
    """
    if not isinstance(layer, str):
        raise NeuronvizTypeError(
            f"layer must be one layer name, got {type(layer).__name__}; rank_layers takes several"
        )
    ranking = rank_layers(
        model, images, [layer], target, n_components=n_components, batch_size=batch_size, device=device,
        variant=variant, store_dtype=store_dtype, offload=offload, streaming=streaming, distributed=distributed,
        progress=progress or False,  # already a callback (or nothing): no second bar
    )
    return ranking[layer]


@runs_model
@reports_progress(lambda a: is_long(images_of(a.arguments["images"])), unit="image")
def rank_layers(
    model: nn.Module,
    images: torch.Tensor | Iterable,
    layers: Sequence[str],
    target: TargetSpec,
    *,
    k: int = 5,
    n_components: int = 1,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    variant: str = "principled",
    store_dtype: torch.dtype = torch.float32,
    offload: str | torch.device | None = None,
    streaming: bool | None = None,
    distributed: bool | None = None,
    progress: ProgressArg = None,
) -> LayerRanking:
    """PCACE for several layers from the same passes over the images, and which layers carry the class.

    Parameters
    ----------
    model, images, target, n_components, batch_size, device, variant, store_dtype, offload, streaming, distributed
        As in :func:`pcace`.
    progress : bool, callable or None
        A bar, none, a bar when long, or ``progress(done, total)`` after each batch of the
        forward pass(es), as in :func:`pcace`
        (all layers come from the same passes, so the count is of images, not of layers).
    layers : sequence of str
        The layers to rank.
    k : int
        The summary averages each layer's ``k`` best channel scores.

    Returns
    -------
    LayerRanking

    Raises
    ------
    NeuronvizError
        As :func:`pcace`.
    """
    _check_args(n_components, variant)
    check_images_source(images)
    k = check_int(k, "k (the top channels each layer's summary averages)", 1)
    if batch_size is not None:
        check_int(batch_size, "batch_size (or None: automatic)", 1)
    if store_dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise NeuronvizError(
            f"store_dtype must be a float dtype such as torch.float32 or torch.float16, got {store_dtype!r}"
        )
    if target is None:
        raise NeuronvizError("PCACE needs a target: a class index or a callable of the model output")
    names = list(resolve_layers(model, layers))
    dev = resolve_device(model, device)
    active = use_distributed(distributed)
    assert not isinstance(progress, bool)  # reports_progress made True/False a callback or None
    if _use_streaming(streaming, images, active):
        ranks = Ranks(dev, active)
        try:
            results = _stream_scores(
                model, images, names, target, batch_size, dev, n_components, variant, ranks,
                may_fall_back=streaming is None and not active, progress=progress,
            )
            return LayerRanking(results, k)
        except _TooBig as err:
            warnings.warn(f"{err}; holding the activations instead", NeuronvizWarning, stacklevel=3)
    store = torch.device(offload) if offload is not None else None
    chunks, y, cls = _gather(model, images, names, target, batch_size, dev, store_dtype, store, progress, n_components)
    results = {}
    for name in names:
        results[name] = _finish(chunks.pop(name), y, name, cls, n_components, variant, dev)  # free as we go
    return LayerRanking(results, k)


# -- what the PCACE figures and view draw: the maps of a few images, the classes over the set ----


@runs_model
def shown_maps(
    model: nn.Module, images: torch.Tensor, layers: Sequence[str]
) -> tuple[dict[str, torch.Tensor], object]:
    """One clean forward pass of a few images: every layer's maps, to draw, and the model output.

    Parameters
    ----------
    model : torch.nn.Module
        The network (eval mode, no gradients; modes, flags and hooks restored).
    images : torch.Tensor
        (n, C, H, W) images as the model takes them (a few: the maps are kept).
    layers : sequence of str
        The layers.

    Returns
    -------
    maps : dict of str to torch.Tensor
        Per layer, (n, C, h, w) float32 maps on the CPU in the channel order PCACE ranks; an
        (n, F) layer gives (n, F, 1, 1), an (n, C, L) one (n, C, 1, L).
    output : object
        What the model returned.

    Raises
    ------
    NeuronvizError
        Bad images, an unknown layer, or a layer that did not run.
    """
    names = list(resolve_layers(model, layers))
    x = check_batch(images, model, what="images")
    with preserved_state(model), torch.no_grad(), ActivationCapture(model, names, layout="auto") as rec:
        model.eval()
        out = forward_checked(model, x.to(model_device(model)))
        acts = rec.outputs()
    return {name: _drawable(acts[name].float().cpu()) for name in names}, out


def _drawable(a: torch.Tensor) -> torch.Tensor:
    """(n, C, ...) activations as (n, C, h, w) maps."""
    if a.dim() == 2:
        return a[:, :, None, None]
    if a.dim() == 3:
        return a[:, :, None, :]
    return a.reshape(a.shape[0], a.shape[1], -1, a.shape[-1])


@runs_model
def mean_probabilities(model: nn.Module, images: torch.Tensor, *, batch_size: int = 16) -> torch.Tensor:
    """The softmax class probabilities of a classifier averaged over ``images`` (PCACE's default target).

    Parameters
    ----------
    model : torch.nn.Module
        A classifier returning (N, classes) scores (eval mode, no gradients; restored).
    images : torch.Tensor
        (N, C, H, W) images as the model takes them.
    batch_size : int
        Images per forward pass (>= 1).

    Returns
    -------
    torch.Tensor
        (classes,) float64 on the CPU, summing to 1.

    Raises
    ------
    NeuronvizError
        Bad images, or an output that is not (N, classes) scores.
    """
    from ..core.targets import check_class_output

    images = check_batch(images, model, what="images")
    dev, sums = model_device(model), []
    with preserved_state(model), torch.no_grad():
        model.eval()
        for lo in range(0, images.shape[0], batch_size):
            out = check_class_output(forward_checked(model, images[lo : lo + batch_size].to(dev)))
            sums.append(torch.softmax(out.double(), dim=1).sum(0).cpu())
    return torch.stack(sums).sum(0) / images.shape[0]
