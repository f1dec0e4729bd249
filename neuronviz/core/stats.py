"""Streaming, mergeable moments: of many features with one output, and of positions within channels.

Batches are merged with Chan, Golub & LeVeque's pairwise update of (count, mean, centred
sums), in float64, so the result does not depend on how the samples were batched and the
memory held does not grow with the number of samples.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

__all__ = ["CoMoments", "PositionCovariance", "WeightedCoMoments", "poisson_weights"]


class CoMoments:
    """Running mean, variance, min/max of F features and their covariance with an output.

    Parameters
    ----------
    n_features : int
        Number of features (e.g. C*H*W units of a layer).
    device : torch.device
        Where the accumulators live (the activations' device).

    Attributes
    ----------
    n : int
        Samples seen.
    mean, m2, comoment : torch.Tensor
        (F,) float64: mean, sum of squared deviations, sum of products of deviations with
        the output.
    out_mean, out_m2 : torch.Tensor
        float64 scalars: the output's mean and sum of squared deviations.
    minimum, maximum : torch.Tensor
        (F,) in the activations' dtype: exact extremes, used to tell constant features
        (zero variance) from merely small ones.
    """

    def __init__(self, n_features: int, device: torch.device | str = "cpu") -> None:
        f64: dict[str, Any] = dict(dtype=torch.float64, device=device)
        self.n = 0
        self.mean = torch.zeros(n_features, **f64)
        self.m2 = torch.zeros(n_features, **f64)
        self.comoment = torch.zeros(n_features, **f64)
        self.out_mean = torch.zeros((), **f64)
        self.out_m2 = torch.zeros((), **f64)
        self.minimum = torch.full((n_features,), float("inf"), **f64)
        self.maximum = torch.full((n_features,), float("-inf"), **f64)

    @classmethod
    def from_batch(cls, features: torch.Tensor, output: torch.Tensor) -> "CoMoments":
        """Moments of one batch.

        Parameters
        ----------
        features : torch.Tensor
            (B, F) activations, any float dtype.
        output : torch.Tensor
            (B,) output values.

        Returns
        -------
        CoMoments
        """
        # Within a batch, deviations from the batch mean are small and well conditioned, so
        # they are summed in the activations' own precision (float32 at least); only the
        # merges across batches, where means can differ a lot, need float64.
        a = features if features.dtype in (torch.float32, torch.float64) else features.float()
        # the output may vary little around a large value (a probability near 0.2): centre it in float64
        o = output.to(device=a.device, dtype=torch.float64)
        new = cls.__new__(cls)
        new.n = a.shape[0]
        shift = a.mean(0)  # rounded: the residual mean of d corrects for it below
        d = a - shift  # correctly rounded: its error is relative to d, not to a
        dbar = d.mean(0).double()
        new.out_mean = o.mean()
        do = o - new.out_mean
        new.out_m2 = do @ do
        new.mean = shift.double() + dbar
        new.m2 = torch.einsum("bf,bf->f", d, d).double() - new.n * dbar * dbar
        new.comoment = (do.to(a.dtype) @ d).double()
        new.minimum = a.amin(0).double()
        new.maximum = a.amax(0).double()
        return new

    def update(self, features: torch.Tensor, output: torch.Tensor) -> None:
        """Add a batch: ``features`` (B, F) and ``output`` (B,)."""
        self.merge(CoMoments.from_batch(features, output))

    def merge(self, other: "CoMoments") -> None:
        """Fold the moments of another, disjoint set of samples into these (in place)."""
        if other.n == 0:
            return
        if self.n == 0:
            self.__dict__.update(
                {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in other.__dict__.items()}
            )
            return
        na, nb = self.n, other.n
        n = na + nb
        w = na * nb / n
        delta = other.mean - self.mean
        delta_o = other.out_mean - self.out_mean
        # compute everything before assigning, so a failure leaves the state untouched
        mean = self.mean + delta * (nb / n)
        m2 = self.m2 + other.m2 + delta * delta * w
        comoment = self.comoment + other.comoment + delta * (delta_o * w)
        out_mean = self.out_mean + delta_o * (nb / n)
        out_m2 = self.out_m2 + other.out_m2 + delta_o * delta_o * w
        minimum = torch.minimum(self.minimum, other.minimum)
        maximum = torch.maximum(self.maximum, other.maximum)
        self.n, self.mean, self.m2, self.comoment = n, mean, m2, comoment
        self.out_mean, self.out_m2, self.minimum, self.maximum = out_mean, out_m2, minimum, maximum

    @property
    def constant(self) -> torch.Tensor:
        """(F,) bool: features whose value never changed."""
        return self.maximum == self.minimum

    def variance(self) -> torch.Tensor:
        """(F,) population variance (ddof 0), exactly 0 for constant features."""
        var = (self.m2 / max(self.n, 1)).clamp_min(0)
        return torch.where(self.constant, torch.zeros_like(var), var)

    def correlation(self) -> torch.Tensor:
        """(F,) Pearson correlation with the output; NaN where either side is constant."""
        denom = torch.sqrt(self.m2 * self.out_m2)
        r = self.comoment / denom
        undefined = self.constant | (self.out_m2 <= 0) | (denom <= 0)
        return torch.where(undefined, torch.full_like(r, float("nan")), r.clamp(-1.0, 1.0))

    def to(self, device: torch.device | str) -> "CoMoments":
        """Return a copy on ``device``."""
        new = CoMoments.__new__(CoMoments)
        new.__dict__.update({k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()})
        return new


_MASK64 = 2**64 - 1


def _mix64(z: int) -> int:
    """SplitMix64's finaliser: a well-spread 64-bit key from an integer."""
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def poisson_weights(seed: int, indices: Sequence[int] | range, replicates: int) -> torch.Tensor:
    """Poisson(1) bootstrap weights of samples ``indices``: row i depends only on (seed, indices[i]).

    So a sample gets the same weights however the samples are batched or split over ranks.

    Parameters
    ----------
    seed : int
        Seed of the bootstrap.
    indices : sequence of int
        Sample (copy) indices.
    replicates : int
        B, the number of bootstrap replicates.

    Returns
    -------
    torch.Tensor
        (len(indices), B) float64 on the CPU, non-negative integers with mean 1.
    """
    rows = torch.empty(len(indices), replicates, dtype=torch.float64)
    ones = torch.ones(replicates, dtype=torch.float64)
    g = torch.Generator()
    key = _mix64(int(seed) & _MASK64)
    for r, i in enumerate(indices):
        g.manual_seed(_mix64(key ^ (int(i) & _MASK64)) >> 1)  # a non-negative int64
        rows[r] = torch.poisson(ones, generator=g)
    return rows


class WeightedCoMoments:
    """B weighted copies of :class:`CoMoments` (no min/max): the replicates of a Poisson bootstrap.

    Replicate b weights sample i by ``w_ib``; every moment is the weighted one. The samples are
    summed about a fixed shift per feature (the first batch's mean, so that deviations are of
    the order of the spread and the sums lose nothing in float64), which makes a batch three
    in-place matrix products; two sets of sums merge by moving one to the other's shift. The
    result does not depend on the batching (up to rounding) and memory is B x F float64
    whatever the number of samples.

    Parameters
    ----------
    replicates : int
        B.
    n_features : int
        F.
    device : torch.device
        Where the accumulators live.

    Attributes
    ----------
    weight : torch.Tensor
        (B,) float64 sums of weights.
    mean, m2, comoment : torch.Tensor
        (B, F) float64 weighted mean, weighted sum of squared deviations, weighted sum of
        products of deviations with the output (computed from the sums when read).
    out_mean, out_m2 : torch.Tensor
        (B,) float64.
    tolerance : float
        Relative size of the rounding in ``m2``: a replicate variance under ``tolerance`` times
        the full sample's is a constant feature in that replicate.
    """

    def __init__(self, replicates: int, n_features: int, device: torch.device | str = "cpu") -> None:
        f64: dict[str, Any] = dict(dtype=torch.float64, device=device)
        self.weight = torch.zeros(replicates, **f64)
        self.shift = torch.zeros(n_features, **f64)
        self.out_shift = torch.zeros((), **f64)
        self.s1 = torch.zeros(replicates, n_features, **f64)
        self.s2 = torch.zeros(replicates, n_features, **f64)
        self.sc = torch.zeros(replicates, n_features, **f64)
        self.so1 = torch.zeros(replicates, **f64)
        self.so2 = torch.zeros(replicates, **f64)
        self.started = False
        self.tolerance = 1e-10

    @classmethod
    def from_batch(cls, features: torch.Tensor, output: torch.Tensor, weights: torch.Tensor) -> "WeightedCoMoments":
        """Weighted moments of one batch: ``features`` (n, F), ``output`` (n,), ``weights`` (n, B)."""
        new = cls(weights.shape[1], features.shape[1], features.device)
        new.update(features, output, weights)
        return new

    def update(self, features: torch.Tensor, output: torch.Tensor, weights: torch.Tensor) -> None:
        """Add a batch: ``features`` (n, F), ``output`` (n,) and their ``weights`` (n, B), in place."""
        a = features.to(self.s1.device)
        # float64 where it is cheap (a CPU): a replicate that weights only a unit's zeros then sees a
        # variance far below any real one; accelerators multiply in float32
        dtype = torch.float64 if a.device.type == "cpu" else torch.float32
        self.tolerance = max(self.tolerance, 1e-10 if dtype == torch.float64 else 1e-5)
        o = output.to(device=a.device, dtype=torch.float64)
        if not self.started:
            self.shift, self.out_shift, self.started = a.double().mean(0), o.mean(), True
        d = a.to(dtype) - self.shift.to(dtype)
        do = o - self.out_shift
        w = weights.to(device=a.device, dtype=torch.float64)
        wt = w.T.to(dtype)
        self.weight += w.sum(0)
        wdo = (w * do[:, None]).T.to(dtype)
        if dtype == torch.float64:  # in place: no (B, F) temporaries
            self.s1.addmm_(wt, d)
            self.sc.addmm_(wdo, d)
            d.mul_(d)
            self.s2.addmm_(wt, d)
        else:
            self.s1 += (wt @ d).double()
            self.sc += (wdo @ d).double()
            self.s2 += (wt @ (d * d)).double()
        self.so1 += w.T @ do
        self.so2 += w.T @ (do * do)

    def merge(self, other: "WeightedCoMoments") -> None:
        """Fold the weighted moments of another, disjoint set of samples into these (in place)."""
        if not other.started:
            return
        if not self.started:
            self.__dict__.update({k: v.clone() if isinstance(v, torch.Tensor) else v
                                  for k, v in other.__dict__.items()})
            return
        # other's sums about this shift: d = d' + delta, do = do' + delta_o
        delta, delta_o = other.shift - self.shift, other.out_shift - self.out_shift
        w = other.weight[:, None]
        self.s2 += other.s2 + 2 * delta * other.s1 + w * delta * delta
        self.sc += other.sc + delta_o * other.s1 + delta * other.so1[:, None] + w * delta * delta_o
        self.s1 += other.s1 + w * delta
        self.so2 += other.so2 + 2 * delta_o * other.so1 + other.weight * delta_o * delta_o
        self.so1 += other.so1 + other.weight * delta_o
        self.weight += other.weight
        self.tolerance = max(self.tolerance, other.tolerance)

    @classmethod
    def from_centred(cls, weight: torch.Tensor, mean: torch.Tensor, m2: torch.Tensor, comoment: torch.Tensor,
                     out_mean: torch.Tensor, out_m2: torch.Tensor, tolerance: float) -> "WeightedCoMoments":
        """Moments given in centred form (e.g. reduced across ranks); they take no more batches."""
        new = cls.__new__(cls)
        new.weight, new.shift, new.out_shift = weight, mean, out_mean
        new.s1, new.s2, new.sc = torch.zeros_like(m2), m2, comoment
        new.so1, new.so2 = torch.zeros_like(out_m2), out_m2
        new.started, new.tolerance = True, tolerance
        return new

    def _safe(self) -> torch.Tensor:
        return torch.where(self.weight > 0, self.weight, torch.ones_like(self.weight))[:, None]

    @property
    def mean(self) -> torch.Tensor:
        """(B, F) weighted mean of each replicate."""
        return self.shift + self.s1 / self._safe()

    @property
    def m2(self) -> torch.Tensor:
        """(B, F) weighted sum of squared deviations."""
        return (self.s2 - self.s1 * self.s1 / self._safe()).clamp_min(0)

    @property
    def comoment(self) -> torch.Tensor:
        """(B, F) weighted sum of products of deviations with the output."""
        return self.sc - self.s1 * self.so1[:, None] / self._safe()

    @property
    def out_mean(self) -> torch.Tensor:
        """(B,) weighted mean of the output."""
        return self.out_shift + self.so1 / self._safe()[:, 0]

    @property
    def out_m2(self) -> torch.Tensor:
        """(B,) weighted sum of squared deviations of the output."""
        return (self.so2 - self.so1 * self.so1 / self._safe()[:, 0]).clamp_min(0)

    def columns(self, features: slice) -> "WeightedCoMoments":
        """The moments of a contiguous range of the features: views, no copy (they share the sums).

        Parameters
        ----------
        features : slice
            Which features, e.g. ``slice(lo, hi)``.

        Returns
        -------
        WeightedCoMoments
            B x (hi - lo) moments whose sums are views of these.
        """
        new = WeightedCoMoments.__new__(WeightedCoMoments)
        new.__dict__.update(self.__dict__)
        new.shift = self.shift[..., features]  # (F,), or (B, F) from from_centred
        new.s1, new.s2, new.sc = self.s1[:, features], self.s2[:, features], self.sc[:, features]
        return new

    def variance_and_correlation(self) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`variance` and :meth:`correlation` together, the shared terms computed once.

        Returns
        -------
        (torch.Tensor, torch.Tensor)
            (B, F) each, as the two methods return them.
        """
        safe = self._safe()
        dev = self.s1 / safe  # the mean's offset from the shift
        m2 = torch.addcmul(self.s2, self.s1, dev, value=-1).clamp_min_(0)
        comoment = torch.addcmul(self.sc, dev, self.so1[:, None], value=-1)
        var = m2 / self.weight[:, None]
        denom = m2.mul_(self.out_m2[:, None]).sqrt_()  # m2 is not needed any more
        positive = denom > 0
        r = comoment.div_(denom.masked_fill_(~positive, 1.0)).clamp_(-1.0, 1.0)
        return var, r.masked_fill_(~positive, math.nan)

    def variance(self) -> torch.Tensor:
        """(B, F) weighted population variance of each replicate (NaN for a replicate of zero weight)."""
        return self.m2 / self.weight[:, None]

    def correlation(self) -> torch.Tensor:
        """(B, F) weighted Pearson correlation of each replicate; NaN where a side does not vary."""
        denom = torch.sqrt(self.m2 * self.out_m2[:, None])
        r = self.comoment / torch.where(denom > 0, denom, torch.ones_like(denom))
        return torch.where(denom > 0, r.clamp(-1.0, 1.0), torch.full_like(r, float("nan")))


class PositionCovariance:
    """Running mean and co-moment matrix of the positions of every channel, over samples.

    For a layer's maps (N, C, P) this accumulates, per channel c, the mean (P,) and the
    centred sums of products ``sum_i (a_icj - mean_cj)(a_ick - mean_ck)`` (P, P) over the
    samples i, batch by batch: the statistics of a per-channel PCA over positions, in memory
    that does not grow with N (C x P x P float64).

    Parameters
    ----------
    channels : int
        C.
    positions : int
        P (H*W of a conv layer; 1 for a linear layer).
    device : torch.device
        Where the accumulators live (the activations' device).

    Attributes
    ----------
    n : int
        Samples seen.
    mean : torch.Tensor
        (C, P) float64.
    m2 : torch.Tensor
        (C, P, P) float64 centred sums of products.
    minimum, maximum : torch.Tensor
        (C, P) float64 exact extremes, to tell a constant position from a merely quiet one.
    """

    #: Bytes of float32 products formed at once by :meth:`update` (channels are cut to fit).
    CHUNK_BYTES = 64 * 2**20

    def __init__(self, channels: int, positions: int, device: torch.device | str = "cpu") -> None:
        f64: dict[str, Any] = dict(dtype=torch.float64, device=device)
        self.n = 0
        self.mean = torch.zeros(channels, positions, **f64)
        self.m2 = torch.zeros(channels, positions, positions, **f64)
        self.minimum = torch.full((channels, positions), float("inf"), **f64)
        self.maximum = torch.full((channels, positions), float("-inf"), **f64)

    @staticmethod
    def nbytes(channels: int, positions: int) -> int:
        """Memory held by the accumulators of a (C, P) layer, in bytes."""
        return 8 * channels * positions * (positions + 3)

    def update(self, maps: torch.Tensor) -> None:
        """Add a batch of maps (B, C, P).

        Deviations from the batch mean are multiplied in float64 on a CPU, where that costs
        little next to the forward pass that made the maps, and in the maps' precision
        (float32 at least, as in :meth:`CoMoments.from_batch`) on an accelerator, where
        float64 products can be slow; merges always happen in float64.
        """
        a = maps if maps.dtype in (torch.float32, torch.float64) else maps.float()
        if a.device.type == "cpu":
            a = a.double()
        b, c, p = a.shape
        if b == 0:
            return
        shift = a.mean(0)
        d = a - shift
        dbar = d.mean(0).double()  # the rounding left in shift, corrected below
        batch_mean = shift.double() + dbar
        n = self.n + b
        delta = batch_mean - self.mean
        w = self.n * b / n
        step = max(1, self.CHUNK_BYTES // (12 * p * p))  # float32 products and their float64 copy
        for lo in range(0, c, step):
            sl = slice(lo, lo + step)
            prod = torch.einsum("bcp,bcq->cpq", d[:, sl], d[:, sl]).double()
            # sum (d - dbar)(d - dbar)^T = sum d d^T - b dbar dbar^T; then Chan's cross term
            prod.sub_(b * dbar[sl, :, None] * dbar[sl, None, :])
            prod.add_(w * delta[sl, :, None] * delta[sl, None, :])
            self.m2[sl] += prod
        self.mean += delta * (b / n)
        self.n = n
        self.minimum = torch.minimum(self.minimum, a.amin(0).double())
        self.maximum = torch.maximum(self.maximum, a.amax(0).double())

    def merge(self, other: "PositionCovariance") -> None:
        """Fold the statistics of another, disjoint set of samples into these (in place)."""
        if other.n == 0:
            return
        if self.n == 0:
            self.n = other.n
            self.mean, self.m2 = other.mean.clone(), other.m2.clone()
            self.minimum, self.maximum = other.minimum.clone(), other.maximum.clone()
            return
        n = self.n + other.n
        w = self.n * other.n / n
        delta = other.mean - self.mean
        self.m2 += other.m2 + w * delta.unsqueeze(2) * delta.unsqueeze(1)
        self.mean += delta * (other.n / n)
        self.n = n
        self.minimum = torch.minimum(self.minimum, other.minimum)
        self.maximum = torch.maximum(self.maximum, other.maximum)

    @property
    def constant(self) -> torch.Tensor:
        """(C, P) bool: positions whose value never changed."""
        return self.maximum == self.minimum

    def std(self) -> torch.Tensor:
        """(C, P) population standard deviation of each position, exactly 0 where constant."""
        var = (self.m2.diagonal(dim1=1, dim2=2) / max(self.n, 1)).clamp_min(0)
        return torch.where(self.constant, torch.zeros_like(var), var.sqrt())

    def correlation(self, channels: slice = slice(None)) -> torch.Tensor:
        """(c, P, P) correlation matrices of the positions of ``channels``.

        A constant position has a zero row and column (its standardised values are all 0),
        so the matrix is ``Z^T Z / n`` for the standardised maps Z (N, P) of each channel.
        """
        std = self.std()[channels]
        inv = torch.where(std > 0, 1.0 / torch.where(std > 0, std, 1.0), 0.0) / max(self.n, 1) ** 0.5
        return self.m2[channels] * inv.unsqueeze(2) * inv.unsqueeze(1)
