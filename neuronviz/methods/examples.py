"""Data-set examples: the images of a data set that excite each channel most, in one streaming pass.

:func:`top_examples` runs the images of a tensor, a ``Dataset`` or any loader through the model
once and keeps, per channel of each layer, the k largest activations (the maximum over positions,
or the mean) with their image index and position: a running top-k merged batch by batch, so
memory is k x C whatever the number of images. Ties are broken by the smaller image index (then
by the smaller position within an image), so every batching and every split across ranks gives
the same answer.

Generality (the measurable side of "generalisable features") is kept in the same pass as
per-channel histograms (see :meth:`TopExamples.generality`).

The pass costs little more than the forward passes themselves: outputs are read without a copy,
the maximum over positions without its arg-max, whose position is found only for the images
that can enter a channel's top k, and the histograms are counted a block of batches at a time
(:class:`_Stream`). Measurements: ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, NamedTuple, Sequence

import torch
from torch import nn

from ..core.archive import Archived, archived
from ..core.batching import default_batch_size
from ..core.capture import ActivationCapture, resolve_layers
from ..core.distributed import Ranks, shard, use_distributed
from ..core.errors import NeuronvizError, NeuronvizTypeError
from ..core.layouts import LayoutSpec
from ..core.locks import hold_model, runs_model
from ..core.model_state import on_device, preserved_state, resolve_device
from ..core.progress import ProgressArg, images_of, is_long, reports_progress
from ..core.receptive_field import ReceptiveField, receptive_field
from ..core.streams import count_hint, is_batch_stream
from ..core.tables import rows_to_frame
from ..core.validation import check_batch, check_int, check_number

if TYPE_CHECKING:
    import pandas

__all__ = ["TopExamples", "Example", "Crop", "Generality", "top_examples"]

#: Bins of the per-channel histograms generality is read from (over [-2^e, 2^e), e per channel).
HIST_BINS = 512
#: Fine bins per coarse bin of the per-label histograms (kept only when labels are given).
LABEL_GROUP = 8
_LABEL_SHIFT = LABEL_GROUP.bit_length() - 1
assert 1 << _LABEL_SHIFT == LABEL_GROUP, "LABEL_GROUP must be a power of two"
#: Positions per image counted into the activation histogram (evenly spaced; all when fewer).
HIST_POSITIONS = 4
#: Counters per channel while counting: a few more than the bins, so that the channels' counters
#: are not a multiple of 4 KiB apart (on x86, counters that far apart evict each other from the
#: cache, and ``bincount`` runs 20 times slower).
_STRIDE = HIST_BINS + 8
#: Smallest histogram range exponent (a channel that stays at 0 gets [-2^-20, 2^-20)).
_MIN_EXP = -20


@archived("Example")
class Example(NamedTuple):
    """One data-set example of a channel: the image, where in it, how strongly."""

    image: int
    position: Any  # (row, column) on a spatial layer, a flat index otherwise, None for by="mean"
    value: float


@archived('Crop')
@dataclass
class Crop(Archived):
    """The receptive-field crop of one example, from the data set itself.

    Attributes
    ----------
    image, position, value : as :class:`Example`
    box : tuple of int
        ``(top, left, bottom, right)`` in the image (bottom, right exclusive).
    pixels : torch.Tensor
        (C, h, w) the image inside ``box``, as the data set holds it (normalised if it is).
    heat : torch.Tensor or None
        (h, w) the channel's activation map upsampled to the image and cut to ``box`` (given a model).
    label : int or None
        The image's label, when the data set has labels.
    """

    image: int
    position: Any
    value: float
    box: tuple[int, int, int, int]
    pixels: torch.Tensor
    heat: torch.Tensor | None = None
    label: int | None = None


@archived('Generality')
@dataclass
class Generality(Archived):
    """How broadly each channel of a layer fires over the data set.

    Attributes
    ----------
    share : torch.Tensor
        (C,) the share of images whose maximum activation of the channel is at least its threshold.
    threshold : torch.Tensor
        (C,) the threshold: the upper edge of the histogram bin holding the ``quantile`` of the
        channel's activations over the positions of every image (up to :data:`HIST_POSITIONS`
        sampled per image).
    entropy : torch.Tensor or None
        (C,) the entropy in bits of the labels of the images on which the channel fires (NaN where
        it fires on none); None without labels.
    quantile : float
    """

    share: torch.Tensor
    threshold: torch.Tensor
    entropy: torch.Tensor | None
    quantile: float


@archived("TopExamples.histogram")
class _Hist:
    """Per-channel histograms over [-2^e_c, 2^e_c) whose bins nest when the range doubles, so merges are exact.

    ``values``: (C, bins) activations at up to :data:`HIST_POSITIONS` fixed positions per image;
    ``maxima``: (C, bins) per-image maxima; ``labelled``: (labels, C, bins / LABEL_GROUP) per-image
    maxima by label, or None. Bin b of a value v is ``floor(v / w) + bins / 2`` with w = 2^(e+1) / bins,
    exact in floating point (w is a power of two), so a value lands in the same nested bin whatever
    range it was first counted at.
    """

    def __init__(self, channels: int, device: torch.device) -> None:
        self.exp = torch.full((channels,), _MIN_EXP, dtype=torch.int64, device=device)
        self.values = torch.zeros((channels, HIST_BINS), dtype=torch.int64, device=device)
        self.maxima = torch.zeros((channels, HIST_BINS), dtype=torch.int64, device=device)
        self.labelled: torch.Tensor | None = None
        self._offsets: dict[int, torch.Tensor] = {}
        self._scale: torch.Tensor | None = None  # (1, C, p1) of the current ranges, until they widen

    def grow(self, exp: torch.Tensor) -> None:
        """Widen the channels whose range is below ``exp`` (each doubling merges pairs of bins)."""
        below = self.exp < exp
        if not bool(below.any()):  # the usual case once the first blocks are counted
            return
        self._scale = None
        # a channel with nothing counted yet takes the range at once (its bins would merge into nothing)
        jump = below & (self.maxima.sum(1) == 0) & (self.values.sum(1) == 0)
        self.exp = torch.where(jump, exp, self.exp)
        while True:
            small = (self.exp < exp).nonzero().flatten()
            if small.numel() == 0:
                return
            for name in ("values", "maxima", "labelled"):
                h = getattr(self, name)
                if h is None:
                    continue
                part = h[..., small, :]
                nb = part.shape[-1]
                merged = part.reshape(*part.shape[:-1], nb // 2, 2).sum(-1)
                part = torch.zeros_like(part)
                part[..., nb // 4 : 3 * nb // 4] = merged
                h[..., small, :] = part
            self.exp[small] += 1

    def count(self, x: torch.Tensor, labels: torch.Tensor | None) -> None:
        """Count a block of images: (n, C, p + 1) values, p sampled activations then the maximum
        (overwritten; NaN and infinities count as 0).

        One pass of a few elementwise operations and one ``bincount`` for both histograms (and one
        more for the labels (n,), or None).
        """
        n, c, p1 = x.shape
        # the range: the block's largest magnitude, from per-channel maxima and minima
        lo, hi = x.amin(0).amin(1), x.amax(0).amax(1)
        finite, signed = (bool(v) for v in torch.stack([(lo > -math.inf).all() & (hi < math.inf).all(),
                                                        (lo < 0).any()]).tolist())
        if not finite:  # NaN propagates into hi (and lo), an infinity shows there
            x.nan_to_num_(nan=0.0, neginf=0.0, posinf=0.0)
            lo, hi = x.amin(0).amin(1), x.amax(0).amax(1)
            signed = bool((lo < 0).any())
        m = torch.maximum(hi, -lo)
        need = torch.where(m > 0, torch.frexp(m)[1].long(), _MIN_EXP).clamp_min(_MIN_EXP)  # m < 2^need
        self.grow(need)
        half, size = HIST_BINS // 2, c * _STRIDE
        scale, key = self._scale_and_key(p1)
        # x * scale is exact (scale is a power of two) and lies in (-half, half): every |x| < 2^exp,
        # so its bin needs no clamp; truncation towards 0 is the floor where no value is negative
        q = x.mul_(scale)
        if signed:
            q.floor_()
        q = q.int()  # the bin, from -half
        top = None if labels is None else (q[:, :, -1] + half) >> _LABEL_SHIFT  # (n, C) coarse bins
        both = torch.bincount(q.add_(key).flatten(), minlength=2 * size)  # integers below 2^24: exact
        self.values += both[:size].view(c, _STRIDE)[:, :HIST_BINS]
        self.maxima += both[size:].view(c, _STRIDE)[:, :HIST_BINS]
        if labels is None or top is None:
            return
        self.labels_at_least(int(labels.max()) + 1 if labels.numel() else 0)
        assert self.labelled is not None  # labels_at_least made it
        coarse = HIST_BINS // LABEL_GROUP
        chan = torch.arange(c, device=x.device, dtype=torch.int32).view(1, c) * coarse
        lab = (labels.int() * (c * coarse)).unsqueeze(1) + chan + top  # (n, C): label, channel, coarse bin
        self.labelled += torch.bincount(lab.flatten(), minlength=self.labelled.numel()).view(self.labelled.shape)

    def _scale_and_key(self, p1: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, C, p1) float 1 / bin width per channel and int32 offsets: bin ``half`` of the channel's
        values, then of its maxima after them.

        Full shapes, not (1, C, 1): broadcasting over a last dimension of a few values costs about
        seven times as much as over a whole (C, p1) slab.
        """
        c = self.exp.shape[0]
        scale = getattr(self, "_scale", None)  # a histogram saved before it had one: None
        if scale is None or scale.shape[2] != p1:
            scale = torch.pow(2.0, (HIST_BINS.bit_length() - 2 - self.exp).float()).view(c, 1)
            scale = self._scale = scale.expand(c, p1).contiguous().unsqueeze(0)
        key = self._offsets.get(p1)
        if key is None:
            off = torch.arange(c, device=self.exp.device, dtype=torch.int32).view(c, 1) * _STRIDE + HIST_BINS // 2
            off = off.expand(c, p1).clone()
            off[:, -1] += c * _STRIDE
            key = self._offsets[p1] = off.unsqueeze(0)
        return scale, key

    def labels_at_least(self, n: int) -> None:
        c = self.exp.shape[0]
        have = 0 if self.labelled is None else self.labelled.shape[0]
        if n > have:
            extra = torch.zeros((n - have, c, HIST_BINS // LABEL_GROUP), dtype=torch.int32, device=self.exp.device)
            self.labelled = extra if self.labelled is None else torch.cat([self.labelled, extra])


def _n_samples(positions: int) -> int:
    """Positions of an image the activation histogram counts: up to HIST_POSITIONS, every ``step``-th."""
    return -(-positions // -(-positions // HIST_POSITIONS))


def _samples_into(a: torch.Tensor, top: torch.Tensor, out: torch.Tensor, turns: torch.Tensor | None) -> None:
    """Write into ``out`` (B, C, p + 1) the activations of ``a`` (B, C, P) at p positions of each image,
    then the (B, C) maxima ``top``.

    Each image's positions are an evenly spaced pattern (every ceil(P / HIST_POSITIONS)-th:
    ``turns``, (p,), or None for every position) turned by an offset taken from the image's own
    activations (the bits of the sum of its maxima): every position is as likely to be sampled,
    whatever the layout of the images (a fixed set would favour some columns, e.g. the blank
    border of centred digits), and the choice depends on neither the batching, nor the image's
    index, nor the rank.
    """
    b, c, n = a.shape
    p = out.shape[2] - 1
    if turns is not None:
        # (offset + j * step) mod P, with offset the sum's bits (remainder is the floor modulo: non-negative)
        where = (top.sum(1).view(torch.int32).long().view(b, 1) + turns).remainder_(n)
        torch.gather(a, 2, where.view(b, 1, p).expand(b, c, p), out=out[:, :, :p])
    else:
        out[:, :, :p].copy_(a)
    out[:, :, p].copy_(top)


def _turns(positions: int, device: torch.device) -> torch.Tensor | None:
    """The evenly spaced pattern of :func:`_samples_into` for a grid of ``positions`` (None: all of them)."""
    p = _n_samples(positions)
    return torch.arange(p, device=device) * -(-positions // HIST_POSITIONS) if p < positions else None


def _tie_key(idx: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """One integer per candidate in (image index, position) order."""
    return idx * (pos.max().clamp_min(0) + 1) + pos if pos.numel() else idx


def _merge_order(vals: torch.Tensor, idx: torch.Tensor, pos: torch.Tensor | None, k: int, *,
                 ordered: bool = False) -> torch.Tensor:
    """(C, <= k) the columns of the k best of (C, n) candidates, in the order of :func:`_merge`.

    ``pos`` may be None where ``ordered`` (it only breaks ties of a reordering).
    """
    if ordered:
        return torch.argsort(vals, dim=1, descending=True, stable=True)[:, :k]
    assert pos is not None  # unordered candidates are put in (index, position) order first
    first = torch.argsort(_tie_key(idx, pos), dim=1, stable=True)
    return first.gather(1, torch.argsort(vals.gather(1, first), dim=1, descending=True, stable=True)[:, :k])


def _merge(vals: torch.Tensor, idx: torch.Tensor, pos: torch.Tensor, k: int, *, ordered: bool = False
           ) -> tuple[torch.Tensor, ...]:
    """The k best of (C, n) candidates: larger value first, then smaller image index, then smaller position.

    ``ordered``: the candidates are already in (image index, position) order where their values tie
    (kept entries, then a batch of larger indices in increasing order), so one stable sort suffices.
    """
    order = _merge_order(vals, idx, pos, k, ordered=ordered)
    return vals.gather(1, order), idx.gather(1, order), pos.gather(1, order)


def _amax(a: torch.Tensor) -> torch.Tensor:
    """(B, C) maximum of (B, C, P) over positions, NaN where any is NaN (as ``amax``).

    Over few positions (a late layer's small grid) halving the last dimension with elementwise
    maxima is about twice as fast as ``amax``, whose reduction of a short inner dimension is slow.
    """
    if a.shape[2] > 32:
        return a.amax(2)
    while a.shape[2] > 1:
        h = a.shape[2] // 2
        m = torch.maximum(a[..., :h], a[..., h : 2 * h])
        a = torch.cat([m, a[..., 2 * h :]], 2) if a.shape[2] % 2 else m
    return a[..., 0]


def _merge_flat(kept: tuple[torch.Tensor, ...], cand: tuple[torch.Tensor, ...], k: int, *,
                ordered: bool) -> tuple[torch.Tensor, ...]:
    """The k best per channel of (C, m >= k) kept entries and flat candidates, in the order of :func:`_merge`.

    ``cand``: (n,) values, image indices, channels and positions. ``ordered``: every candidate's
    index is larger than any kept one's, and the candidates come in increasing index order.
    """
    kv, ki, kp = kept
    c, m = kv.shape
    v, i = torch.cat([kv.flatten(), cand[0]]), torch.cat([ki.flatten(), cand[1]])
    ch = torch.cat([torch.arange(c, device=kv.device).repeat_interleave(m), cand[2]])
    p = torch.cat([kp.flatten(), cand[3]])
    # stable sorts, least significant key first: (image, position), then value down, then channel
    if not ordered:
        order = torch.argsort(_tie_key(i, p), stable=True)
        v, i, p, ch = v[order], i[order], p[order], ch[order]
    order = torch.argsort(v, descending=True, stable=True)
    order = order[torch.argsort(ch[order], stable=True)]
    # every channel has at least m >= k entries: its best k are the first k of its run
    counts = torch.bincount(ch, minlength=c)
    take = order[((counts.cumsum(0) - counts).view(c, 1) + torch.arange(k, device=kv.device)).flatten()]
    return v[take].view(c, k), i[take].view(c, k), p[take].view(c, k)


#: Candidates (image, channel) a layer may hold back, per channel, before they are merged into
#: its kept entries.
_PENDING_PER_CHANNEL = 16
#: Sampled values a layer's histograms hold back before counting them in one go (the dozen small
#: operations of a count then cost per block, not per batch).
_PENDING_VALUES = 1 << 18


class _Stream:
    """One layer's running top-k and histograms over the batches of a pass.

    Once k entries are kept, a batch's (image, channel) pairs are screened against each channel's
    k-th value as of the last merge (a lower bound of the current one, so no image that could
    enter is dropped): only the few that pass have their arg-max position found (the full
    (B, C, P) arg-max costs more than a small network's forward pass), and they wait, with their
    values, to be merged a block at a time. The sampled activations wait likewise for the
    histograms. Both waits are bounded (:data:`_PENDING_PER_CHANNEL`, :data:`_PENDING_VALUES`), so
    memory does not grow with N.
    """

    def __init__(self, k: int, by: str, generality: bool) -> None:
        self.k, self.by, self.generality = k, by, generality
        self.kept: tuple[torch.Tensor, ...] | None = None  # (C, m) values, image indices, positions
        self.kth: torch.Tensor | None = None  # (C,) the k-th kept value, once k are kept
        # waiting candidates: (n,) values, row * C + channel over the waiting batches, positions
        self.pending: list[tuple[torch.Tensor, ...]] = []
        self.pending_index: list[torch.Tensor] = []  # the image indices of those batches' rows
        self.rows, self.waiting, self.ordered = 0, 0, True
        self.hist: _Hist | None = None
        # the samples wait in a buffer that is reused (a fresh tensor per batch costs page faults)
        self.block: torch.Tensor | None = None  # (rows, C, p + 1): sampled activations, then the maximum
        self.block_labels: torch.Tensor | None = None
        self.filled, self.labelled = 0, False
        self.turns: dict[int, torch.Tensor | None] = {}

    def _positions(self, a: torch.Tensor) -> torch.Tensor:
        if self.by == "max":
            return torch.max(a, dim=2).indices  # the first position holding the maximum
        return torch.full(a.shape[:2], -1, dtype=torch.int64, device=a.device)

    def add(self, a: torch.Tensor, idx: torch.Tensor, labels: torch.Tensor | None, ordered: bool) -> None:
        """Take in a batch: (B, C, P) activations, (B,) image indices, labels (B,) or None.

        ``ordered``: every index is larger than any taken in before, in increasing order.
        """
        if self.hist is None:
            self.hist = _Hist(a.shape[1], a.device)
        stat = _amax(a) if self.by == "max" else a.mean(2)  # (B, C)
        # NaN ranks below everything, infinities as the largest and smallest floats (as nan_to_num does)
        v = torch.nan_to_num(stat, nan=-math.inf)
        if self.kth is None:
            self._merge_dense(v, idx, a, ordered)
        else:
            # ordered: a tie with the k-th comes from a larger index and loses; else it may win
            hit = v > self.kth if ordered else v >= self.kth
            flat = hit.view(-1).nonzero().view(-1)  # row by row: increasing index within a channel
            if flat.numel():
                b, c = v.shape
                # the position only where the image passed for that channel: an entry that did not
                # pass cannot enter the top k (k kept entries beat it), so its position never counts
                pos = (a.reshape(b * c, -1).index_select(0, flat).max(dim=1).indices if self.by == "max"
                       else torch.full_like(flat, -1))
                # (row, channel) as one number over the waiting batches' rows; split at the merge
                self.pending.append((v.view(-1).index_select(0, flat), flat.add_(self.rows * c), pos))
                self.pending_index.append(idx)
                self.rows += b
                self.waiting += int(flat.numel())
                self.ordered = self.ordered and ordered
                if self.waiting >= _PENDING_PER_CHANNEL * c:
                    self.flush_kept()
        if self.generality:
            self._hold(a, stat if self.by == "max" else a.amax(2), labels)

    def _hold(self, a: torch.Tensor, top: torch.Tensor, labels: torch.Tensor | None) -> None:
        """Put a batch's samples in the buffer, counting the buffer first when it is full."""
        b, c, n = a.shape
        p1 = _n_samples(n) + 1
        block = self.block
        fits = block is not None and tuple(block.shape[1:]) == (c, p1)  # another image size: another grid
        full = block is not None and self.filled + b > block.shape[0]
        if block is not None and (not fits or full or (labels is not None) != self.labelled):
            self.flush_hist()
        if block is None or not fits or block.shape[0] < b:
            rows = max(b, _PENDING_VALUES // (c * p1))
            self.block = block = torch.empty((rows, c, p1), device=a.device)
            self.block_labels = torch.empty(rows, dtype=torch.int64, device=a.device)
        assert self.block_labels is not None  # made with the block
        if n not in self.turns:
            self.turns[n] = _turns(n, a.device)
        _samples_into(a, top, block[self.filled : self.filled + b], self.turns[n])
        if labels is not None:
            self.block_labels[self.filled : self.filled + b].copy_(labels)
        self.labelled = labels is not None
        self.filled += b

    def _merge_dense(self, v: torch.Tensor, idx: torch.Tensor, a: torch.Tensor, ordered: bool) -> None:
        """Merge a whole batch, (B, C) values of (B, C, P) maps, while fewer than k are kept.

        In order, positions are found only for the batch's entries that are kept (positions
        then break no tie: a channel has one entry per image).
        """
        b, c = v.shape
        kept = self.kept if self.kept is not None else (v.new_empty((c, 0)), idx.new_empty((c, 0)),
                                                         idx.new_empty((c, 0)))
        m = kept[0].shape[1]
        vv, ii = torch.cat([kept[0], v.t()], 1), torch.cat([kept[1], idx.unsqueeze(0).expand(c, -1)], 1)
        if not ordered:
            self.kept = _merge(vv, ii, torch.cat([kept[2], self._positions(a).t()], 1), self.k)
        else:
            order = _merge_order(vv, ii, None, self.k, ordered=True)
            new = order >= m
            pos = kept[2].gather(1, order.clamp_max(m - 1)) if m else torch.full_like(order, -1)
            if self.by == "max":
                # (row, channel) of each kept entry of the batch, as a row of the (B * C, P) maps
                at = (order - m) * c + torch.arange(c, device=v.device).view(c, 1)
                pos[new] = a.reshape(b * c, -1).index_select(0, at[new]).max(dim=1).indices
            else:
                pos[new] = -1
            self.kept = vv.gather(1, order), ii.gather(1, order), pos
        if self.kept[0].shape[1] == self.k:
            self.kth = self.kept[0][:, -1].contiguous()

    def flush_kept(self) -> None:
        """Merge the pending candidates into the kept entries."""
        if self.pending:
            assert self.kept is not None and self.kth is not None  # candidates wait only once k are kept
            c = self.kth.shape[0]
            at = torch.cat([p[1] for p in self.pending])
            rows = at.div(c, rounding_mode="floor")
            cand = (torch.cat([p[0] for p in self.pending]), torch.cat(self.pending_index)[rows], at - rows * c,
                    torch.cat([p[2] for p in self.pending]))
            self.kept = _merge_flat(self.kept, cand, self.k, ordered=self.ordered)
            self.kth = self.kept[0][:, -1].contiguous()
        self.pending, self.pending_index, self.rows, self.waiting, self.ordered = [], [], 0, 0, True

    def flush_hist(self) -> None:
        """Count the buffered samples into the histograms."""
        if self.filled and self.block is not None and self.hist is not None:
            x = self.block[: self.filled]
            labels = self.block_labels[: self.filled] if self.labelled and self.block_labels is not None else None
            self.hist.count(x, labels)
        self.filled = 0

    def finish(self) -> None:
        self.flush_kept()
        self.flush_hist()


class _Source:
    """The batches of a tensor, a map-style Dataset or a loader, with each image's index and label."""

    def __init__(self, source: Any, labels: Any, batch_size: int, ranks: Ranks) -> None:
        self.source, self.ranks, self.batch_size = source, ranks, batch_size
        self.given_labels = labels
        self.global_index = True  # False: indices are positions on this rank, offset at the merge
        self.total: int | None
        if isinstance(source, torch.Tensor):
            self.kind, self.total = "tensor", int(source.shape[0])
        elif isinstance(source, torch.utils.data.Dataset) and hasattr(source, "__len__") \
                and hasattr(source, "__getitem__") \
                and not isinstance(source, torch.utils.data.IterableDataset):
            self.kind, self.total = "dataset", len(source)
        elif is_batch_stream(source):
            self.kind, self.total = "loader", count_hint(source)
        else:
            raise NeuronvizTypeError(
                f"source must be images (N, C, H, W), a torch Dataset or a loader of (images, labels) batches, "
                f"got {type(source).__name__}"
            )
        if labels is not None and self.kind != "tensor":
            raise NeuronvizError("labels= is for a tensor source; a Dataset or loader gives its own labels")
        if labels is not None:
            labels = torch.as_tensor(labels)
            if labels.shape != (self.total,) or labels.dtype.is_floating_point or bool((labels < 0).any()):
                raise NeuronvizError(f"labels must be {self.total} non-negative integers, one per image")
            self.given_labels = labels.long()

    def __iter__(self):
        r, size = self.ranks, self.batch_size
        if self.kind == "tensor":
            block = shard(self.total, r.rank, r.size)
            for lo in range(block.start, block.stop, size):
                hi = min(lo + size, block.stop)
                lab = self.given_labels[lo:hi] if self.given_labels is not None else None
                yield self.source[lo:hi], torch.arange(lo, hi), lab
            return
        if self.kind == "dataset":
            block = shard(self.total, r.rank, r.size)
            for lo in range(block.start, block.stop, size):
                items = [self.source[i] for i in range(lo, min(lo + size, block.stop))]
                images, labels = _collate(items)
                yield images, torch.arange(lo, lo + len(items)), labels
            return
        indices = _sampler_indices(self.source)
        self.global_index = indices is not None or not r.active
        done = 0
        for item in self.source:
            images = item[0] if isinstance(item, (tuple, list)) and item else item
            if not isinstance(images, torch.Tensor):
                raise NeuronvizError(
                    "source must yield image tensors (B, C, H, W) or (images, labels) pairs, "
                    f"got {type(images).__name__}"
                )
            labels = item[1] if isinstance(item, (tuple, list)) and len(item) > 1 else None
            labels = _as_labels(labels, images.shape[0])
            n = images.shape[0]
            if indices is not None and done + n <= len(indices):
                idx = torch.as_tensor(indices[done : done + n], dtype=torch.int64)
            else:
                idx = torch.arange(done, done + n)
            done += n
            yield images, idx, labels


def _sampler_indices(loader: Any) -> list[int] | None:
    """The data-set indices a DataLoader visits, when its sampler is deterministic (sequential or distributed)."""
    if not isinstance(loader, torch.utils.data.DataLoader):
        return None
    sampler = loader.sampler
    deterministic = (torch.utils.data.SequentialSampler, torch.utils.data.distributed.DistributedSampler)
    if not isinstance(sampler, deterministic) or loader.batch_size is None:
        return None
    try:
        return [int(i) for i in iter(sampler)]
    except TypeError:
        return None


def _as_labels(labels: Any, n: int) -> torch.Tensor | None:
    if isinstance(labels, torch.Tensor) and labels.shape == (n,) and not labels.dtype.is_floating_point:
        return labels.long()
    return None


def _collate(items: list) -> tuple[torch.Tensor, torch.Tensor | None]:
    if items and isinstance(items[0], (tuple, list)):
        images = torch.stack([torch.as_tensor(it[0]) for it in items])
        labels = [it[1] for it in items] if len(items[0]) > 1 else None
        if labels is not None and all(isinstance(v, int) or (isinstance(v, torch.Tensor) and v.numel() == 1
                                                              and not v.dtype.is_floating_point) for v in labels):
            return images, torch.tensor([int(v) for v in labels], dtype=torch.int64)
        return images, None
    return torch.stack([torch.as_tensor(it) for it in items]), None


def dataset_item(dataset: Any, i: int) -> tuple[torch.Tensor, int | None]:
    """Image ``i`` of a tensor or Dataset, and its label."""
    if isinstance(dataset, torch.Tensor):
        return dataset[i], None
    item = dataset[i]
    if isinstance(item, (tuple, list)):
        label = item[1] if len(item) > 1 else None
        label = (int(label) if isinstance(label, int) or (isinstance(label, torch.Tensor) and label.numel() == 1)
                 else None)
        return torch.as_tensor(item[0]), label
    return torch.as_tensor(item), None


class _LayerExamples:
    """``ex[layer]``: the examples of one layer; ``[channel]`` gives its k rows, best first."""

    def __init__(self, ex: "TopExamples", layer: str) -> None:
        self.ex, self.layer = ex, layer

    def __getitem__(self, channel: int) -> list[Example]:
        return self.ex.examples(self.layer, channel)

    def __len__(self) -> int:
        return self.ex.values[self.layer].shape[1]

    def __iter__(self):
        return (self[c] for c in range(len(self)))


@archived('TopExamples')
@dataclass
class TopExamples(Archived):
    """The k data-set examples of every channel of some layers (see :func:`top_examples`).

    ``ex[layer][channel]`` is a list of at most k :class:`Example` rows ``(image, position,
    value)``, best first.

    Attributes
    ----------
    layers : list of str
    k : int
    by : {"max", "mean"}
        The statistic ranked: the maximum over positions (with its position) or the mean.
    values, images, positions : dict of str to torch.Tensor
        (k, C) per layer: the values, image indices and flat positions (-1 where there were
        fewer than k images; position -1 for ``by="mean"``).
    grids : dict of str to tuple or None
        The (H, W) of each spatial layer's positions (None for a layer without positions).
    n_images : int
        Images seen (over every rank).
    receptive_fields : dict of str to ReceptiveField
        Spatial layers only.
    quantile : float
        The default quantile of :meth:`generality`.
    """

    layers: list[str]
    k: int
    by: str
    values: dict[str, torch.Tensor]
    images: dict[str, torch.Tensor]
    positions: dict[str, torch.Tensor]
    grids: dict[str, tuple[int, int] | None]
    n_images: int
    receptive_fields: dict[str, ReceptiveField]
    quantile: float = 0.99
    has_labels: bool = False
    _hists: dict[str, _Hist] = field(default_factory=dict, repr=False)

    def __getitem__(self, layer: str) -> _LayerExamples:
        self._check_layer(layer)
        return _LayerExamples(self, layer)

    def _check_layer(self, layer: str) -> None:
        if layer not in self.values:
            raise NeuronvizError(f"no examples for layer {layer!r}; these layers have them: {self.layers}")

    def _position(self, layer: str, flat: int) -> Any:
        if self.by == "mean" or flat < 0:
            return None
        grid = self.grids[layer]
        return divmod(int(flat), grid[1]) if grid is not None else int(flat)

    def examples(self, layer: str, channel: int) -> list[Example]:
        """The k rows of one channel, best first (fewer when the data set had fewer images).

        Parameters
        ----------
        layer : str
        channel : int

        Returns
        -------
        list of Example

        Raises
        ------
        NeuronvizError
            Unknown layer or channel.
        """
        self._check_layer(layer)
        c = check_int(channel, "channel", 0, self.values[layer].shape[1] - 1)
        v, i, p = self.values[layer][:, c], self.images[layer][:, c], self.positions[layer][:, c]
        return [Example(int(i[j]), self._position(layer, int(p[j])), float(v[j]))
                for j in range(v.shape[0]) if i[j] >= 0]

    def box(self, layer: str, example: Example) -> tuple[int, int, int, int] | None:
        """The input box of an example (None: the whole image)."""
        rf = self.receptive_fields.get(layer)
        if rf is None or example.position is None:
            return None
        return rf.box(example.position)

    def crops(
        self, dataset: Any, layer: str, channel: int, *, model: nn.Module | None = None
    ) -> list[Crop]:
        """The receptive-field crops of one channel's examples, cut from the data set itself.

        Parameters
        ----------
        dataset : torch.Tensor or torch.utils.data.Dataset
            The images the examples were found in, indexed as they were (``dataset[i]`` is image i;
            a Dataset may give ``(image, label)``).
        layer : str
        channel : int
        model : torch.nn.Module, optional
            The model: each crop then carries the channel's activation map over it (one forward pass
            of the k images; the model is left as it was).

        Returns
        -------
        list of Crop
            Best first.

        Raises
        ------
        NeuronvizError
            Unknown layer or channel, an index the data set does not have.
        """
        rows = self.examples(layer, channel)
        rf = self.receptive_fields.get(layer)
        if rf is not None:
            rf.measure([r.position for r in rows if r.position is not None])  # one batch for all of them
        pictures, labels = [], []
        for row in rows:
            try:
                img, label = dataset_item(dataset, row.image)
            except (IndexError, KeyError):
                raise NeuronvizError(
                    f"the data set has no image {row.image}; pass the data set the examples were found in"
                ) from None
            pictures.append(img)
            labels.append(label)
        heats: list[torch.Tensor | None] = [None] * len(rows)
        if model is not None and rows:
            heats = list(_channel_maps(model, layer, int(channel), torch.stack(pictures)))
        out = []
        for row, img, label, heat in zip(rows, pictures, labels, heats):
            box = self.box(layer, row) or (0, 0, int(img.shape[-2]), int(img.shape[-1]))
            top, left, bottom, right = box
            out.append(Crop(row.image, row.position, row.value, box, img[..., top:bottom, left:right].clone(),
                            None if heat is None else heat[top:bottom, left:right].clone(), label))
        return out

    def generality_available(self, layer: str) -> bool:
        """Whether :meth:`generality` can answer for ``layer`` (found with ``generality=True``).

        Parameters
        ----------
        layer : str

        Returns
        -------
        bool
        """
        h = self._hists.get(layer)
        return h is not None and int(h.maxima.sum()) > 0

    def generality(self, layer: str, quantile: float | None = None) -> Generality:
        """Per channel: the share of images on which it fires, and the entropy of their labels.

        A channel fires on an image when its maximum over positions is at least its threshold, the
        ``quantile`` of the channel's activations over the positions of every image, read from a
        histogram of 512 bins over the channel's range (the upper edge of the bin holding the
        quantile), so any quantile can be asked after the one pass. The histogram counts up to
        :data:`HIST_POSITIONS` positions of each image, spread evenly and turned per image so
        that every position is as likely (accuracy: ``docs/methods/dataset-examples.md``); the
        per-image maxima are exact.

        Parameters
        ----------
        layer : str
        quantile : float, optional
            In (0, 1); default the one given to :func:`top_examples` (0.99).

        Returns
        -------
        Generality

        Raises
        ------
        NeuronvizError
            Unknown layer, a quantile outside (0, 1).
        """
        self._check_layer(layer)
        q = self.quantile if quantile is None else check_number(quantile, "quantile", 0.0, 1.0)
        if not 0.0 < q < 1.0:
            raise NeuronvizError(f"quantile must be in (0, 1), got {q}")
        h = self._hists.get(layer)
        if h is None or int(h.maxima.sum()) == 0:
            raise NeuronvizError(
                "these examples were found with generality=False; run top_examples(..., generality=True)"
            )
        cum = h.values.double().cumsum(1)
        total = cum[:, -1:].clamp_min(1)
        b = (cum < q * total).sum(1).clamp_max(HIST_BINS - 1)  # the bin holding the quantile
        hi = torch.pow(2.0, h.exp.double())
        threshold = -hi + (b + 1).double() * (2 * hi / HIST_BINS)
        above = torch.arange(HIST_BINS).unsqueeze(0) > b.unsqueeze(1)  # (C, bins)
        share = (h.maxima.double() * above).sum(1) / max(self.n_images, 1)
        entropy = None
        if self.has_labels and h.labelled is not None:
            # coarse bins: the threshold rounded up to the next coarse edge
            first = (b + LABEL_GROUP) // LABEL_GROUP
            coarse_above = torch.arange(h.labelled.shape[2]).unsqueeze(0) >= first.unsqueeze(1)
            per_label = (h.labelled.double() * coarse_above.unsqueeze(0)).sum(2)  # (labels, C)
            fired = per_label.sum(0)
            p = per_label / fired.clamp_min(1)
            terms = torch.where(p > 0, -p * torch.log2(p.clamp_min(1e-300)), torch.zeros_like(p))
            entropy = torch.where(fired > 0, terms.sum(0), torch.full_like(fired, math.nan))
        return Generality(share.cpu(), threshold.float().cpu(), entropy, float(q))

    def as_rows(self) -> list[dict]:
        """One dict per example: layer, channel, rank, image, row, col, value.

        Returns
        -------
        list of dict
            ``row``/``col`` are None without a position (``by="mean"``, a layer without positions
            has ``row`` None and ``col`` the flat index).
        """
        rows = []
        for layer in self.layers:
            for c in range(self.values[layer].shape[1]):
                for rank, e in enumerate(self.examples(layer, c)):
                    pos = e.position
                    row, col = (pos if isinstance(pos, tuple) else (None, pos))
                    rows.append({"layer": layer, "channel": c, "rank": rank, "image": e.image,
                                 "row": row, "col": col, "value": e.value})
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
        return rows_to_frame(self.as_rows(), ["layer", "channel", "rank", "image", "row", "col", "value"])

    def __repr__(self) -> str:
        shapes = ", ".join(f"{n}: {self.values[n].shape[1]} channels" for n in self.layers)
        return f"TopExamples(k={self.k}, by={self.by!r}, {self.n_images} images; {shapes})"


def _channel_maps(model: nn.Module, layer: str, channel: int, images: torch.Tensor) -> torch.Tensor:
    """(n, H, W) the channel's map of each image, upsampled bilinearly to the image size."""
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    with hold_model(model), preserved_state(model), torch.no_grad():
        model.eval()
        with ActivationCapture(model, [layer], stop_after_last=True) as rec:
            rec.forward(images.to(dev, next((p.dtype for p in model.parameters()), torch.float32)))
            a = rec[layer]
    if a.dim() != 4:
        return torch.zeros(images.shape[0], *images.shape[-2:])
    m = a[:, channel : channel + 1].float()
    return torch.nn.functional.interpolate(m, size=tuple(images.shape[-2:]), mode="bilinear",
                                           align_corners=False)[:, 0].cpu()


def _estimate(a: Any) -> bool:
    src = a.arguments["source"]
    return is_long(images_of(src) if isinstance(src, torch.Tensor) else None)


@runs_model
@reports_progress(_estimate, unit="image")
def top_examples(
    model: nn.Module,
    source: torch.Tensor | torch.utils.data.Dataset | Iterable,
    layers: str | Sequence[str],
    k: int = 9,
    *,
    by: str = "max",
    labels: torch.Tensor | Sequence[int] | None = None,
    quantile: float = 0.99,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    receptive_fields: bool = True,
    generality: bool = True,
    layout: LayoutSpec = "channels_first",
    progress: ProgressArg = None,
    distributed: bool | None = None,
) -> TopExamples:
    """The k images of a data set that excite each channel of some layers most, in one pass.

    Per channel, each image is summarised by its maximum activation over positions (and where it
    is), or its mean; the k largest are kept with a running top-k merged batch by batch, so memory
    is O(k x C), never O(N). Ties go to the smaller image index, then the smaller position, so the
    answer does not depend on the batching or the rank split. Several layers share the pass.

    Image indices: a tensor's rows and a Dataset's items are numbered as they are; a DataLoader
    over a sequential or distributed sampler gives the data-set indices its sampler visits; any
    other loader numbers its images in the order they come (across ranks: rank 0's first).

    Inside an initialised ``torch.distributed`` process group every rank reads its share (its
    block of a tensor or Dataset, or its own loader, e.g. with a ``DistributedSampler``) and the
    ranks merge their k x C entries and histograms exactly: every rank gets the single process's
    result.

    Parameters
    ----------
    model : torch.nn.Module
        The network; left as it was (no hook, same modes, device and ``requires_grad``).
    source : torch.Tensor, torch.utils.data.Dataset or iterable
        (N, C, H, W) images; a map-style Dataset of images or ``(image, label)`` items; or a
        loader / iterable of (B, C, H, W) batches or ``(images, labels)`` pairs.
    layers : str or sequence of str
        Layers with a channel dimension (N, C, ...).
    k : int
        Examples per channel.
    by : {"max", "mean"}
        Rank images by the channel's maximum over positions (default; the position is kept) or by
        its mean over positions.
    labels : tensor or sequence of int, optional
        One label per image of a tensor source (a Dataset or loader gives its own).
    quantile : float
        Default quantile of the generality threshold (:meth:`TopExamples.generality`).
    batch_size : int, optional
        Images per forward pass for a tensor or Dataset (a loader's batches are used as they come).
    device : str or torch.device, optional
        Where to run; default the model's device.
    receptive_fields : bool
        Find each spatial layer's receptive field (exact for chains, measured otherwise; see
        :mod:`neuronviz.core.receptive_field`) for crops.
    generality : bool
        Keep the histograms :meth:`TopExamples.generality` reads (default); False saves their cost.
    layout : str or mapping
        How the layers' outputs are read (see :class:`neuronviz.ActivationCapture`).
    progress : bool, callable or None
        ``True`` a bar, ``False`` none, None a bar for a loader or at least 200 images; a callable
        is called as ``progress(done, total)`` after each batch, and an exception it raises stops
        the pass with the model left as it was.
    distributed : bool or None
        None: merge across ranks when a process group of several ranks is initialised.

    Returns
    -------
    TopExamples

    Raises
    ------
    NeuronvizError
        Bad k, by, quantile, batch size, labels; an unknown layer; a source that is not images;
        no images; images the model refuses; a layer without a channel dimension.
    neuronviz.core.distributed.PeerError
        Distributed, when another rank failed.
    """
    modules = resolve_layers(model, layers)
    names = list(modules)
    k = check_int(k, "k", 1)
    if by not in ("max", "mean"):
        raise NeuronvizError(f"by must be 'max' (the maximum over positions) or 'mean', got {by!r}")
    quantile = check_number(quantile, "quantile", 0.0, 1.0)
    if not 0.0 < quantile < 1.0:
        raise NeuronvizError(f"quantile must be in (0, 1), got {quantile}")
    if batch_size is not None:
        batch_size = check_int(batch_size, "batch_size", 1)
    dev = resolve_device(model, device)
    active = use_distributed(distributed)
    ranks = Ranks(dev, active)
    src = _Source(source, labels, batch_size or default_batch_size(dev), ranks)

    kept: dict[str, tuple[torch.Tensor, ...]] = {}
    hists: dict[str, _Hist] = {}
    streams = {n: _Stream(k, by, generality) for n in names}
    grids: dict[str, tuple[int, int] | None] = {}
    probe: dict[str, torch.Tensor] = {}
    assert not isinstance(progress, bool)  # reports_progress made True/False a callback or None
    seen, any_labels, last = 0, src.given_labels is not None, -1
    batch_of: dict[str, Any] = {}  # the batch being run: its image indices, labels and order

    def consume(name: str, a: torch.Tensor) -> None:
        if a.dim() < 2:
            raise NeuronvizError(f"layer {name!r} gives a {a.dim()}-D output; (N, C, ...) is needed")
        if name not in grids:
            grids[name] = (int(a.shape[2]), int(a.shape[3])) if a.dim() == 4 else None
        streams[name].add(a.float().reshape(a.shape[0], a.shape[1], -1), batch_of["index"], batch_of["labels"],
                          batch_of["ordered"])

    with preserved_state(model), on_device(model, dev), torch.no_grad():
        model.eval()
        # Each layer's output is taken in as its module returns it, inside the forward pass: no
        # copy, nothing a later module changes in place (ReLU(inplace=True)) can reach it, and no
        # map outlives the pass, so the pass allocates, frees and reuses memory as a plain one
        # does (keeping the maps until the pass ends costs page faults and cache misses that
        # are a large share of a small network's pass).
        with ActivationCapture(model, names, stop_after_last=True, layout=layout, consume=consume) as rec:
            with ranks.together("top_examples' pass over the images"):
                for images, index, labs in src:
                    batch = check_batch(images, model, what="source", min_n=0)
                    if batch.shape[0] == 0:
                        continue
                    if "x" not in probe:
                        probe["x"] = batch[:1].clone()
                    any_labels = any_labels or labs is not None
                    # larger indices than any kept, in increasing order: ties are already in index order
                    ordered = int(index[0]) > last and bool((index[1:] > index[:-1]).all())
                    last = max(last, int(index.max()))
                    batch_of.update(index=index.to(dev), labels=None if labs is None else labs.to(dev),
                                    ordered=ordered)
                    rec.forward(batch.to(dev))
                    rec.outputs()  # every layer ran
                    rec.clear()
                    seen += batch.shape[0]
                    if progress is not None:
                        progress(seen, max(src.total or 0, seen))
        for name in names:
            streams[name].finish()
            if streams[name].kept is not None:
                kept[name] = streams[name].kept  # type: ignore[assignment]
                hists[name] = streams[name].hist  # type: ignore[assignment]
        n_images = seen
        if active:
            counts = [row[0] for row in ranks.gather_ints([seen, int(any_labels)])]
            flags = [row[1] for row in ranks.gather_ints([seen, int(any_labels)])]
            n_images, any_labels = sum(counts), any(flags)
            offset = sum(counts[: ranks.rank])
            for name in names:
                kept[name], hists[name] = _merge_ranks(kept.get(name), hists.get(name), ranks, k,
                                                       0 if src.global_index else offset)
        if n_images == 0:
            raise NeuronvizError("source gave no images; top_examples needs at least one")
        fields: dict[str, ReceptiveField] = {}
        x0 = probe.get("x")
        if receptive_fields and x0 is not None and by == "max":
            for name in names:
                if grids.get(name) is not None:
                    # a measured field probes each position only when a crop needs it
                    fields[name] = receptive_field(model, name, x0.to(dev))

    return TopExamples(
        layers=names, k=k, by=by,
        values={n: kept[n][0].t().contiguous().cpu() for n in names},
        images={n: kept[n][1].t().contiguous().cpu() for n in names},
        positions={n: kept[n][2].t().contiguous().cpu() for n in names},
        grids=grids, n_images=n_images, receptive_fields=fields, quantile=float(quantile),
        has_labels=bool(any_labels), _hists={n: _to_cpu(hists[n]) for n in names},
    )


def _to_cpu(h: _Hist) -> _Hist:
    h.exp, h.values, h.maxima = h.exp.cpu(), h.values.cpu(), h.maxima.cpu()
    h.labelled = None if h.labelled is None else h.labelled.cpu()
    return h


def _merge_ranks(
    mine: tuple[torch.Tensor, ...] | None, h: _Hist | None, ranks: Ranks, k: int, offset: int
) -> tuple[tuple[torch.Tensor, ...], _Hist]:
    """Every rank's k x C entries merged, and every rank's histograms summed (the same on every rank)."""
    channels = ranks.gather_ints([h.values.shape[0] if h is not None else -1])
    c = max(row[0] for row in channels)
    if c < 0:
        raise NeuronvizError("no rank saw any image")
    if any(row[0] not in (c, -1) for row in channels):
        raise NeuronvizError(f"the ranks disagree on the layer's channel count: {[row[0] for row in channels]}")
    dev = ranks.compute_device
    if mine is None:
        empty = torch.empty((c, 0), device=dev)
        mine = (empty, empty.long(), empty.long())
        h = _Hist(c, dev)
    assert h is not None  # a rank with images has its histograms
    v, i, p = mine
    i = torch.where(i >= 0, i + offset, i)
    # gather_rows concatenates along the first dimension: send (n, C), merge (C, n)
    v, i, p = (ranks.gather_rows(t.t().contiguous()).t().contiguous() for t in (v, i, p))
    merged = _merge(v, i, p, k)
    h.grow(ranks.all_max(h.exp.clone()))
    labels = max(row[0] for row in ranks.gather_ints([0 if h.labelled is None else h.labelled.shape[0]]))
    h.labels_at_least(labels)
    h.values = ranks.all_sum(h.values)
    h.maxima = ranks.all_sum(h.maxima)
    if h.labelled is not None:
        h.labelled = ranks.all_sum(h.labelled)
    return merged, h
