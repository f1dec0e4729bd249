"""PCACE: rank the channels of a layer by the maximal correlation of their maps with a class score.

Casacuberta, Suel & Flaxman, "PCACE: A Statistical Approach to Ranking Neurons for CNN
Interpretability", arXiv:2112.15571 (2021). Each channel's activation maps over N images are
standardised position by position, reduced by PCA, and the ACE estimate of the maximal
correlation between the leading component(s) and the class score is the channel's score.
The images go through the network once (never once per channel) and ACE runs on all
channels at once (:func:`neuronviz.methods.ace.ace_batch`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch
from torch import nn

from ..core.capture import ActivationCapture, resolve_layers
from ..core.errors import NeuronvizError
from ..core.model_state import on_device, preserved_state, resolve_device
from ..core.batching import default_batch_size
from ..core.targets import TargetSpec, resolve_target
from ..core.validation import check_batch, forward_checked
from .ace import ace_batch

__all__ = ["PCACEScores", "LayerRanking", "pcace", "rank_layers", "channel_components", "MIN_IMAGES"]

#: Fewer images than this make ACE's smoothers meaningless: refused.
MIN_IMAGES = 20
VARIANTS = ("principled", "authors")
# working set of the PCA step, per chunk of channels (float64 copies of the maps)
_CHUNK_BYTES = 256 * 2**20


@dataclass
class PCACEScores:
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

    def __repr__(self) -> str:
        what = f"class {self.target}" if self.target is not None else "callable target"
        return (
            f"PCACEScores(layer {self.layer!r}, {self.scores.numel()} channels, {self.n_images} images, "
            f"{what}, top {self.top(5)})"
        )


@dataclass
class LayerRanking:
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

    def __getitem__(self, layer: str) -> PCACEScores:
        return self.layers[layer]

    def __repr__(self) -> str:
        lines = [f"{'layer':<24} {'channels':>8} {f'mean top-{self.k}':>12} {'max':>6}"]
        lines += [f"{r['layer']:<24} {r['channels']:>8} {r['mean_top_k']:>12.3f} {r['max']:>6.3f}" for r in self.summary]
        return "\n".join(lines)


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
        (C, N, n_components) float64 principal-component scores (sign arbitrary).
    explained : torch.Tensor
        (C, n_components) fraction of the standardised variance explained.
    """
    z = maps.double()
    z = z - z.mean(dim=1, keepdim=True)
    std = z.pow(2).mean(dim=1, keepdim=True).sqrt()
    z = z / torch.where(std > 0, std, torch.ones_like(std))  # a constant position stays 0
    n, p = z.shape[1], z.shape[2]
    q = min(n_components, n, p)
    if n <= p:  # Gram matrix of the images is the smaller one
        evals, evecs = torch.linalg.eigh(z @ z.transpose(1, 2))
        evals, evecs = evals.flip(-1)[:, :q].clamp_min(0), evecs.flip(-1)[:, :, :q]
        proj = evecs * evals.sqrt().unsqueeze(1)
    else:
        evals, evecs = torch.linalg.eigh(z.transpose(1, 2) @ z)
        evals, evecs = evals.flip(-1)[:, :q].clamp_min(0), evecs.flip(-1)[:, :, :q]
        proj = z @ evecs
    total = z.pow(2).sum(dim=(1, 2))
    explained = evals / torch.where(total > 0, total, torch.ones_like(total)).unsqueeze(1)
    if q < n_components:  # more components than the data has: pad with zeros
        pad = n_components - q
        proj = torch.cat([proj, proj.new_zeros(proj.shape[0], n, pad)], dim=2)
        explained = torch.cat([explained, explained.new_zeros(explained.shape[0], pad)], dim=1)
    return proj, explained


def _batches(images: torch.Tensor | Iterable, batch_size: int) -> Iterable[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        for lo in range(0, images.shape[0], batch_size):
            yield images[lo : lo + batch_size]
        return
    for item in images:  # a DataLoader yields (images, labels) pairs
        batch = item[0] if isinstance(item, (tuple, list)) else item
        if not isinstance(batch, torch.Tensor):
            raise NeuronvizError(f"images must yield tensors (N, C, H, W), got {type(batch).__name__}")
        yield batch


def _available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 2**62


def _gather(
    model: nn.Module,
    images: torch.Tensor | Iterable,
    layers: list[str],
    target: TargetSpec,
    batch_size: int | None,
    dev: torch.device,
    store_dtype: torch.dtype,
    store_device: torch.device | None,
) -> tuple[dict[str, list[torch.Tensor]], torch.Tensor, int | None]:
    """One forward pass per batch: every layer's maps (kept once, as chunks) and the target values."""
    chunks: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    values: list[torch.Tensor] = []
    held = 0
    tgt = None
    size = batch_size or default_batch_size(dev)
    with preserved_state(model), on_device(model, dev), torch.no_grad(), ActivationCapture(model, layers) as rec:
        model.eval()
        for batch in _batches(images, size):
            batch = check_batch(batch, model, what="images").to(dev)
            out = forward_checked(model, batch)
            acts = rec.outputs()
            if tgt is None:
                tgt = resolve_target(target, "logit", predict=lambda: out[:1])
            values.append(tgt(out).double().cpu())
            for name in layers:
                a = acts[name]
                if a.dim() < 2:
                    raise NeuronvizError(f"layer {name!r} gives a {a.dim()}-D output; PCACE needs (N, C, ...) maps")
                a = a.reshape(a.shape[0], a.shape[1], -1)  # (N, F) layers: one position per channel
                if not torch.isfinite(a).all():
                    raise NeuronvizError(f"layer {name!r} produced NaN or infinite activations")
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
    if tgt is None:
        raise NeuronvizError("images is empty")
    return chunks, torch.cat(values), tgt.class_index


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
    proj = torch.cat(projections)  # (C, N, q)
    y = y.to(device=compute, dtype=torch.float64)
    if variant == "principled" or n_components == 1:
        res = ace_batch(proj if n_components > 1 else proj[:, :, 0], y)
        scores = res.rho
    else:  # the authors' code correlates only the first component's transform with theta
        res = ace_batch(proj, y)
        phi = res.x_transforms[:, :, 0]
        theta = res.y_transform
        phi = phi - phi.mean(1, keepdim=True)
        theta = theta - theta.mean(1, keepdim=True)
        denom = (phi.norm(dim=1) * theta.norm(dim=1)).clamp_min(1e-300)
        scores = ((phi * theta).sum(1) / denom).abs()
    return scores.clamp(0, 1).cpu(), torch.cat(explained).cpu()


def _check_args(n_components: int, variant: str) -> None:
    if not isinstance(n_components, int) or n_components < 1:
        raise NeuronvizError(f"n_components must be a positive integer, got {n_components!r}")
    if variant not in VARIANTS:
        raise NeuronvizError(f"variant must be one of {VARIANTS}, got {variant!r}")


def _finish(
    chunks: list[torch.Tensor], y: torch.Tensor, layer: str, target: int | None, n_components: int,
    variant: str, compute: torch.device,
) -> PCACEScores:
    n = y.numel()
    if n < MIN_IMAGES:
        raise NeuronvizError(
            f"PCACE needs at least {MIN_IMAGES} images (ACE's smoothers are meaningless on fewer; "
            f"40 or more are better), got {n}"
        )
    if float(y.max() - y.min()) == 0.0:
        raise NeuronvizError("the target score is the same on every image, so no channel can correlate with it")
    scores, explained = _score_chunks(chunks, y, n_components, variant, compute)
    ranking = torch.sort(-scores, stable=True).indices
    return PCACEScores(scores, ranking, layer, target, n, n_components, variant, explained, y.float())


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
) -> PCACEScores:
    """Rank the channels of ``layer`` by PCACE.

    One forward pass per batch of images records the layer for all channels and the target
    score (the pre-softmax logit of class ``target``, or a callable of the model output).
    Per channel the maps are standardised position by position across images, projected on
    their first ``n_components`` principal components, and the ACE maximal correlation of
    the projection(s) with the score is the channel's score; all channels are solved together.

    Memory: the layer's N x C x H x W activations are held once, in ``store_dtype`` on the
    compute device (or on ``offload``); the PCA works on bounded chunks of channels. A request
    that cannot fit fails with a message before running out of memory.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    images : torch.Tensor or iterable
        (N, C, H, W) images, or an iterable of such batches (a DataLoader; ``(images, labels)``
        pairs are accepted), normalised as the model expects. At least 20 images.
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
        Where to compute; None is the model's device.
    variant : {"principled", "authors"}
        With ``n_components > 1``: ``"principled"`` scores ``sqrt(R^2)`` of the multivariate
        ACE, ``"authors"`` the authors' ``|corr(phi_1, theta)|`` of the first component only.
    store_dtype : torch.dtype
        Precision of the stored activations (``torch.float16`` halves the memory).
    offload : str or torch.device, optional
        Keep the stored activations there (e.g. ``"cpu"`` for a big layer on a GPU).

    Returns
    -------
    PCACEScores

    Raises
    ------
    NeuronvizError
        Fewer than 20 images, a constant target, NaN activations, an unknown layer, bad
        images, a target out of range, a request that cannot fit in memory.
    """
    if not isinstance(layer, str):
        raise TypeError(f"layer must be one layer name, got {type(layer).__name__}; rank_layers takes several")
    ranking = rank_layers(
        model, images, [layer], target, n_components=n_components, batch_size=batch_size, device=device,
        variant=variant, store_dtype=store_dtype, offload=offload,
    )
    return ranking[layer]


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
) -> LayerRanking:
    """PCACE for several layers from one pass over the images, and which layers carry the class.

    Parameters
    ----------
    model, images, target, n_components, batch_size, device, variant, store_dtype, offload
        As in :func:`pcace`.
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
    if target is None:
        raise NeuronvizError("PCACE needs a target: a class index or a callable of the model output")
    names = list(resolve_layers(model, layers))
    dev = resolve_device(model, device)
    store = torch.device(offload) if offload is not None else None
    chunks, y, cls = _gather(model, images, names, target, batch_size, dev, store_dtype, store)
    results = {}
    for name in names:
        results[name] = _finish(chunks.pop(name), y, name, cls, n_components, variant, dev)  # free as we go
    return LayerRanking(results, k)
