"""Alternating conditional expectations (ACE) with Friedman's SuperSmoother, batched in torch.

ACE estimates the maximal correlation between a response ``y`` and predictors ``x_1..x_p``:
it finds mean-zero transforms ``theta(y)`` (unit variance) and ``phi_j(x_j)`` minimising
``E[(theta(y) - sum_j phi_j(x_j))^2]``; then ``R^2 = 1 - e^2`` and, for one predictor, the
maximal correlation estimate is ``|corr(theta, phi)|``. Conditional expectations are
estimated with the SuperSmoother, a running-lines smoother whose span is chosen per point
by leave-one-out cross-validation among 0.05, 0.2 and 0.5 of the sample.

The iteration control (initial least-squares scaling of the predictors, acceptance of a new
``phi`` only when ``R^2`` rises, convergence over the last ``nterm`` outer iterations) and
the smoother (window sizes, variance floor, residual carry-over, averaging over tied x,
final tweeter pass) follow Friedman's Fortran ``mace.f``/``supsmu.f`` as re-implemented by the
Python package ``ace`` 0.4.2, so on data without ties the two agree up to floating-point
rounding (``rho`` to 1e-13 in the tests). On tied or near-tied data (many equal values, or
values 1e-12 apart) a smoother decision can turn on rounding and the two may take different
branches: the bound that holds there is ``|rho - rho_ace| <= TIED_RHO_BOUND`` (0.02). Measured
on 440 such problems (n = 40 to 300, 2 to 8 levels), 96% agreed to 1e-8 and the largest
difference was 0.010 (0.6547 against 0.6651, values 1e-12 apart, n = 50). Two decisions
that in the reference can turn on rounding alone, both with tied x, are made on exact
quantities here: a point whose leverage is exactly 1 (alone at the end of a window whose
other points share one x value) reuses the previous residual, as the Fortran intends for
``1 - leverage <= 0``; and residual smooths that differ only by rounding count as a tie,
which goes to the smaller span.

Many independent problems of the same length are solved together: each problem is sorted
once per variable, every running-lines fit is a pair of cumulative sums over the sorted
data indexed by windows that depend only on the sample size, and each problem stops by its
own convergence test: converged problems leave the working set, and problems still waiting
(when the set is kept small, see ``_solve``) join it.

References
----------
L. Breiman and J. H. Friedman, "Estimating optimal transformations for multiple regression
and correlation", Journal of the American Statistical Association 80(391):580-598, 1985.

J. H. Friedman, "A variable span smoother", Technical Report No. 5, Laboratory for
Computational Statistics, Department of Statistics, Stanford University, 1984.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

from ..core.archive import Archived, archived
from ..core.errors import NeuronvizError

if TYPE_CHECKING:
    import pandas

__all__ = ["AceResult", "ace", "ace_batch", "maximal_correlation", "SPANS", "TIED_RHO_BOUND"]

#: Tweeter, midrange and woofer spans of the SuperSmoother (fractions of n), as in supsmu.f.
SPANS = (0.05, 0.2, 0.5)
_TWEETER, _MIDRANGE = 0, 1
#: Relative variance floor of a running-lines window (``eps`` in supsmu.f).
_VARIANCE_EPS = 1.0e-3
#: Below this many observations the three fixed spans hold too few points to choose from.
_RELIABLE_N = 40
#: On tied or near-tied data, ``rho`` is within this of the ``ace`` 0.4.2 package's (see the module docstring).
TIED_RHO_BOUND = 0.02
#: Problems are solved in blocks of at most this many observations (n * (p + 1) each) on a
#: CPU / a GPU, which bounds the memory held by the (block, 3, n) float64 work arrays.
_BLOCK_ELEMENTS = {"cpu": 2**20, "cuda": 2**24}
#: With several CPU threads, blocks are cut so that a (block, 3, n) array stays under torch's
#: grain size for intra-op parallelism (at::internal::GRAIN_SIZE): every op then runs inline
#: on one core. The ops here are small and many; on a busy machine (other processes,
#: DataLoader workers) each OpenMP fork/join can wait a scheduler time slice, many times
#: the cost of the op itself.
_CPU_GRAIN = 32768


@archived('AceResult')
@dataclass
class AceResult(Archived):
    """Transforms found by ACE.

    For :func:`ace` the fields describe one problem (``rho``, ``rsq`` are floats and
    ``iterations`` an int); for :func:`ace_batch` every field has a leading problem
    dimension B.

    Attributes
    ----------
    rho : float or torch.Tensor
        Maximal correlation estimate: ``|corr(phi_1(x), theta(y))|`` for one predictor,
        ``sqrt(max(rsq, 0))`` for several. 0 for a constant predictor.
    rsq : float or torch.Tensor
        ``1 - mean((theta - sum_j phi_j)^2)`` at the last iteration.
    x_transforms : torch.Tensor
        (n, p), or (B, n, p): ``phi_j(x_j)`` at each observation, in the input order.
    y_transform : torch.Tensor
        (n,), or (B, n): ``theta(y)``, mean 0 and unit (population) variance.
    iterations : int or torch.Tensor
        Outer iterations run (at least ``nterm`` unless ``maxit`` is smaller).
    """

    rho: float | torch.Tensor
    rsq: float | torch.Tensor
    x_transforms: torch.Tensor
    y_transform: torch.Tensor
    iterations: int | torch.Tensor

    def as_rows(self) -> list[dict]:
        """One dict per observation: ``observation``, ``x_transform`` (``x_transform_j`` for
        predictor j with several), ``y_transform``; for :func:`ace_batch` also ``problem``.

        Returns
        -------
        list of dict
            Ready for ``csv.DictWriter`` or ``pandas.DataFrame``.
        """
        batched = self.y_transform.dim() == 2
        xs = self.x_transforms if batched else self.x_transforms.unsqueeze(0)
        ys = self.y_transform if batched else self.y_transform.unsqueeze(0)
        p = xs.shape[-1]
        names = ["x_transform"] if p == 1 else [f"x_transform_{j}" for j in range(p)]
        rows: list[dict] = []
        for b, (x, y) in enumerate(zip(xs.tolist(), ys.tolist())):
            for i, (xi, yi) in enumerate(zip(x, y)):
                row: dict = {"problem": b} if batched else {}
                row.update({"observation": i, **dict(zip(names, xi)), "y_transform": yi})
                rows.append(row)
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

        index = ["problem", "observation"] if self.y_transform.dim() == 2 else ["observation"]
        return rows_to_frame(self.as_rows(), index)


def _pad_cumsum(v: torch.Tensor) -> torch.Tensor:
    """Cumulative sums along the last dimension with a leading 0, so sum(v[s:e]) = C[e] - C[s]."""
    return torch.nn.functional.pad(torch.cumsum(v, dim=-1), (1, 0))


class _SortedVariable:
    """One variable of every problem, sorted, with all that depends on it alone precomputed.

    Every smoothing ACE does against this variable uses the same abscissae, so window
    positions, window means and variances of x, slope masks and leverages are computed once.
    A running-lines fit at point i is then ``sum(y) * a_i + sum(x*y) * c_i`` over the window
    of i, the window sums being differences of cumulative sums.

    Parameters
    ----------
    values : torch.Tensor or None
        (B, n) float64, the variable in input order (None: an empty shell for :meth:`take`).
    shared : bool
        ``values`` is (1, n), one variable common to all problems (a shared y); it is sorted
        once and its arrays broadcast over the problems.
    """

    _PER_PROBLEM = ("order", "inverse", "constant", "xs", "a", "c", "inv_denom", "cv_last")
    _COMMON = ("n", "halves", "sizes", "span_values", "has_ties", "all_cv_ok", "shared")
    _TIES = ("group_start", "group_end", "group_size")

    def __init__(self, values: torch.Tensor | None, shared: bool = False) -> None:
        if values is None:
            return
        # shared: one row standing for a variable common to all problems (broadcast)
        self.shared = shared
        b, n = values.shape
        dev = values.device
        self.n = n
        # ace 0.4.2 sorts (value, index) tuples, i.e. a stable sort: tied values keep input order
        self.order = torch.argsort(values, dim=1, stable=True)
        self.inverse = torch.empty_like(self.order).scatter_(
            1, self.order, torch.arange(n, device=dev).expand(b, n)
        )
        xsorted = torch.gather(values, 1, self.order)
        # supsmu.f: "if not x(n) > x(1)" the smooth is the mean of y
        self.constant = ~(xsorted[:, -1] > xsorted[:, 0])

        # Running-lines fits are invariant to an affine change of x (the variance floor
        # scales with x too); standardising keeps the cumulative sums well conditioned.
        mean = xsorted.mean(dim=1, keepdim=True)
        std = xsorted.std(dim=1, unbiased=False, keepdim=True)
        xs = (xsorted - mean) / torch.where(std > 0, std, torch.ones_like(std))
        self.xs = xs

        # Variance floor vsmlsq = (eps * scale)^2 with scale the interquartile spread, widened
        # symmetrically while it is 0 (supsmu.f). Positions are 1-based as in the Fortran;
        # the test for a zero spread is made on the raw values, the spread on the scaled ones.
        lower0 = max(n // 4, 1)
        upper0 = 3 * lower0
        steps = torch.arange(max(n - upper0, lower0 - 1) + 1, device=dev)
        upper = torch.clamp(upper0 + steps, max=n) - 1
        lower = torch.clamp(lower0 - steps, min=1) - 1
        # (index_select/gather rather than advanced indexing, which always runs multithreaded)
        positive = (xsorted.index_select(1, upper) - xsorted.index_select(1, lower)) > 0
        first = torch.argmax(positive.to(torch.uint8), dim=1)  # first step with a positive spread
        first = torch.where(positive.any(dim=1), first, torch.full_like(first, steps.numel() - 1))
        scale = xs.gather(1, upper.index_select(0, first).unsqueeze(1)) - xs.gather(
            1, lower.index_select(0, first).unsqueeze(1)
        )
        vsmlsq = ((_VARIANCE_EPS * scale) ** 2).unsqueeze(1)  # (B, 1, 1)

        # Window of J = 2h + 1 points, h = max(int(0.5 * span * n + 0.5), 2), at most n;
        # centred on i except near the ends, where it stays at the first/last J points
        # (the Fortran only slides it while both i - h >= 1 and i + h <= n-1, 0-based).
        self.halves, self.sizes = [], []
        for span in SPANS:
            h = max(int(0.5 * span * n + 0.5), 2)
            self.halves.append(h)
            self.sizes.append(min(2 * h + 1, n))
        i = torch.arange(n, device=dev)
        size = torch.tensor(self.sizes, dtype=torch.float64, device=dev).view(1, 3, 1)
        start = torch.stack([torch.clamp(i - h, min=0, max=n - w) for h, w in zip(self.halves, self.sizes)])
        self.span_values = torch.tensor(SPANS, dtype=torch.float64, device=dev)
        end = start + torch.tensor(self.sizes, device=dev).unsqueeze(1)

        sx = self._window_sums(_pad_cumsum(xs).unsqueeze(1), None)
        sxx = self._window_sums(_pad_cumsum(xs * xs).unsqueeze(1), None)
        xmean = sx / size
        var = sxx - sx * xmean
        # else the local slope is taken as 0 (a constant x only has rounding errors for a var)
        sloped = (var > vsmlsq) & ~self.constant.view(-1, 1, 1)
        inv_var = torch.where(sloped, 1.0 / torch.where(sloped, var, torch.ones_like(var)), 0.0)
        dx = xs.unsqueeze(1) - xmean
        # fit_i = mean(y) + slope * dx_i with slope = (Sxy - xmean * Sy) / var, i.e. linear in
        # the window sums Sy and Sxy with these coefficients
        self.c = inv_var * dx
        self.a = 1.0 / size - xmean * self.c
        leverage = 1.0 / size + dx * dx * inv_var
        denom = 1.0 - leverage

        new_run = torch.ones_like(xsorted, dtype=torch.bool)  # x[i] > x[i-1]: a new run of ties
        new_run[:, 1:] = xsorted[:, 1:] > xsorted[:, :-1]
        self.has_ties = bool((~new_run).any())
        # supsmu.f: where 1 - leverage is not > 0 the previous point's residual is reused
        cv_ok = denom > 0
        if self.has_ties:
            # The leverage is exactly 1 when every other point of the window shares one x
            # value (the point is then alone at an end of its window). Rounding leaves
            # 1 - leverage at +-1e-16 there, so this case is recognised from the runs of ties.
            runs = _pad_cumsum(new_run.to(torch.int32))

            def cols(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
                return t.index_select(1, idx.flatten()).view(b, 3, n)

            distinct = 1 + cols(runs, end) - cols(runs, start + 1)  # distinct x values in the window
            alone_first = (i == start) & cols(new_run, torch.clamp(start + 1, max=n - 1))
            alone_last = (i == end - 1) & cols(new_run, end - 1)
            cv_ok &= ~(sloped & (distinct == 2) & (alone_first | alone_last))
        self.inv_denom = torch.where(cv_ok, 1.0 / torch.where(cv_ok, denom, torch.ones_like(denom)), 0.0)
        self.all_cv_ok = bool(cv_ok.all())
        self.cv_last = None
        if not self.all_cv_ok:
            self.cv_last = torch.cummax(torch.where(cv_ok, i, torch.full_like(i, -1)), dim=2).values

        # Runs of tied x (consecutive after sorting): each smooth is averaged over a run,
        # as supsmu.f does at the end of every fixed-span smooth.
        if self.has_ties:
            self.group_start = torch.cummax(torch.where(new_run, i, torch.zeros_like(i)), dim=1).values
            last_of_run = torch.ones_like(new_run)
            last_of_run[:, :-1] = new_run[:, 1:]
            rev = torch.where(last_of_run, i, torch.full_like(i, n - 1)).flip(1)
            self.group_end = torch.cummin(rev, dim=1).values.flip(1) + 1  # exclusive
            self.group_size = (self.group_end - self.group_start).to(torch.float64).unsqueeze(1)

    def take(self, ids: torch.Tensor) -> "_SortedVariable":
        """The same variable restricted to the problems ``ids``."""
        if self.shared:
            return self
        new = _SortedVariable(None)
        for name in self._COMMON:
            setattr(new, name, getattr(self, name))
        for name in self._PER_PROBLEM + (self._TIES if self.has_ties else ()):
            t = getattr(self, name)
            setattr(new, name, None if t is None else t.index_select(0, ids))
        return new

    def cat(self, other: "_SortedVariable") -> "_SortedVariable":
        """The problems of this variable followed by those of ``other`` (same n)."""
        if self.shared:
            return self
        if self.has_ties != other.has_ties:
            self._with_ties()
            other._with_ties()
        if self.all_cv_ok != other.all_cv_ok:
            self._with_cv_last()
            other._with_cv_last()
        new = _SortedVariable(None)
        for name in self._COMMON:
            setattr(new, name, getattr(self, name))
        for name in self._PER_PROBLEM + (self._TIES if self.has_ties else ()):
            a, b = getattr(self, name), getattr(other, name)
            setattr(new, name, None if a is None else torch.cat([a, b]))
        return new

    def _with_ties(self) -> None:
        """Tie runs of length 1 (an untied variable), so it can join a tied one."""
        if not self.has_ties:
            b, n = self.xs.shape
            self.group_start = torch.arange(n, device=self.xs.device).expand(b, n).contiguous()
            self.group_end = self.group_start + 1
            self.group_size = torch.ones_like(self.xs).unsqueeze(1)
            self.has_ties = True

    def _with_cv_last(self) -> None:
        """Residual carry-over indices for a variable that needs none, so it can join one that does."""
        if self.all_cv_ok:
            b, n = self.xs.shape
            self.cv_last = torch.arange(n, device=self.xs.device).expand(b, 3, n).contiguous()
            self.all_cv_ok = False

    def sort(self, v: torch.Tensor) -> torch.Tensor:
        """Sort ``v`` (B, n), given in input order, like this variable."""
        return torch.gather(v, 1, self.order.expand_as(v))

    def unsort(self, v: torch.Tensor) -> torch.Tensor:
        """Put ``v`` (B, n), sorted like this variable, back in input order."""
        return torch.gather(v, 1, self.inverse.expand_as(v))

    # -- smoothing -------------------------------------------------------------------------

    def _window_sums(self, c: torch.Tensor, k: int | None) -> torch.Tensor:
        """Window sums ``c[end] - c[start]`` from padded cumulative sums c (B, m, n+1).

        With k None, series 0 of c is summed with each of the three spans (result m = 3);
        otherwise every series with span k. Interior windows are shifts of one another (a
        slice difference); the first and last windows are repeated for the points near the
        ends. (Slices, not gathers: cheaper, and they never go multithreaded here.)
        """
        n = self.n
        b, m = c.shape[0], c.shape[1]
        out = c.new_empty(b, 3 if k is None else m, n)
        for j, s in enumerate(range(3) if k is None else [k]):
            w, h = self.sizes[s], self.halves[s]
            src = c[:, :1] if k is None else c
            dst = out[:, j : j + 1] if k is None else out
            left = h if w < n else 0
            inner = n - w + 1  # the distinct windows
            torch.sub(src[..., w:], src[..., :inner], out=dst[..., left : left + inner])
            if left:
                dst[..., :left] = dst[..., left : left + 1]
            if left + inner < n:
                dst[..., left + inner :] = dst[..., left + inner - 1 : left + inner]
        return out

    def _average_ties(self, smooth: torch.Tensor) -> torch.Tensor:
        """Replace the smooth of tied x by the mean over their run; smooth is (B, m, n)."""
        if not self.has_ties:
            return smooth
        b, m, n = smooth.shape
        c = _pad_cumsum(smooth)
        lo = self.group_start.unsqueeze(1).expand(b, m, n)
        hi = self.group_end.unsqueeze(1).expand(b, m, n)
        mean = (torch.gather(c, 2, hi) - torch.gather(c, 2, lo)) / self.group_size
        return torch.where(self.group_size > 1, mean, smooth)

    def _fit(self, v: torch.Tensor, k: int | None) -> torch.Tensor:
        """Running-lines fit (before tie averaging) of v (B, m, n); k as in _window_sums."""
        b, m, n = v.shape
        cy = v.new_empty(b, m, n + 1)  # padded cumulative sums of y and of x*y
        cxy = v.new_empty(b, m, n + 1)
        cy[..., 0] = 0.0
        cxy[..., 0] = 0.0
        torch.cumsum(v, -1, out=cy[..., 1:])
        torch.mul(v, self.xs.unsqueeze(1), out=cxy[..., 1:])
        cxy[..., 1:].cumsum_(-1)
        sy = self._window_sums(cy, k)
        sxy = self._window_sums(cxy, k)
        a, c = (self.a, self.c) if k is None else (self.a[:, k : k + 1], self.c[:, k : k + 1])
        return sy.mul_(a).addcmul_(sxy, c)

    def primary(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fixed-span smooths of y (B, n) with all three spans and their CV residuals.

        Returns
        -------
        smooth, residual : torch.Tensor
            (B, 3, n) each: tie-averaged smooths and absolute leave-one-out residuals.
        """
        y = y.unsqueeze(1)
        smooth = self._fit(y, None)
        resid = (y - smooth).abs_().mul_(self.inv_denom)
        if not self.all_cv_ok:
            # a point whose leverage is >= 1 gets the last usable residual before it (0 if none)
            assert self.cv_last is not None  # set whenever not all_cv_ok
            last = self.cv_last.expand_as(resid)
            resid = torch.where(last >= 0, torch.gather(resid, 2, last.clamp(min=0)), 0.0)
        return self._average_ties(smooth), resid

    def fixed(self, v: torch.Tensor, k: int) -> torch.Tensor:
        """Tie-averaged fixed-span smooth of v (B, m, n) with span index k."""
        return self._average_ties(self._fit(v, k))

    def supersmooth(self, y: torch.Tensor) -> torch.Tensor:
        """Friedman's SuperSmoother of y (B, n, sorted like this variable), bass enhancement off."""
        smooths, resid = self.primary(y)
        # Cross-validated residuals smoothed with the midrange span; per point the span with
        # the smallest one, the first on a tie as with the Fortran's strict '<'. With tied x
        # two spans often give the same fit (e.g. both windows hold the same two runs of ties),
        # so equal residual smooths differ only by rounding: values within 1e-10 of the
        # problem's residual scale count as equal, so the choice does not hang on rounding.
        r = self.fixed(resid, _MIDRANGE)
        r0, r1, r2 = r.unbind(1)
        tol = 1e-10 * r.abs().amax(dim=(1, 2)).unsqueeze(1)
        lowest = torch.minimum(torch.minimum(r0, r1), r2) + tol
        spans = self.span_values
        best = torch.where(r0 <= lowest, spans[0], torch.where(r1 <= lowest, spans[1], spans[2]))
        best = self.fixed(best.unsqueeze(1), _MIDRANGE)[:, 0]
        # linear interpolation between the primary smooths at the smoothed span (numpy.interp)
        p0, p1, p2 = smooths.unbind(1)
        lo = (p1 - p0) / (SPANS[1] - SPANS[0]) * (best - SPANS[0]) + p0
        hi = (p2 - p1) / (SPANS[2] - SPANS[1]) * (best - SPANS[1]) + p1
        mixed = torch.where(best < SPANS[1], lo, hi)
        mixed = torch.where(best <= SPANS[0], p0, torch.where(best >= SPANS[2], p2, mixed))
        # supsmu.f ends with a tweeter-span smooth of the interpolated values
        out = self.fixed(mixed.unsqueeze(1), _TWEETER)[:, 0]
        return torch.where(self.constant.unsqueeze(1), y.mean(dim=1, keepdim=True), out)


# -- input handling ------------------------------------------------------------------------


def _as_float64(a: object, name: str, device: torch.device | None) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        t = a.detach()
    else:
        try:
            t = torch.as_tensor(np.asarray(a))
        except (TypeError, ValueError) as exc:
            raise NeuronvizError(f"{name} must be an array or tensor of numbers: {exc}") from None
    if t.is_complex():
        raise NeuronvizError(f"{name} must be real, got dtype {t.dtype}")
    if device is not None:
        t = t.to(device)
    return t.to(torch.float64)


def _check_finite(t: torch.Tensor, name: str) -> None:
    # on a CPU through numpy: a whole-batch torch reduction would start threads for one check
    if t.device.type == "cpu":
        bad = int(np.count_nonzero(~np.isfinite(t.numpy())))
    else:
        bad = int((~torch.isfinite(t)).sum())
    if bad:
        raise NeuronvizError(
            f"{name} contains {bad} NaN or infinite value(s) out of {t.numel()}; ACE needs finite data"
        )


def _check_controls(delrsq: float, maxit: int, nterm: int) -> tuple[float, int, int]:
    def is_int(v: object) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))

    if not (isinstance(delrsq, (int, float, np.integer, np.floating)) and math.isfinite(delrsq) and delrsq >= 0):
        raise NeuronvizError(f"delrsq must be a finite number >= 0, got {delrsq!r}")
    if not (is_int(maxit) and maxit >= 1):
        raise NeuronvizError(f"maxit must be an int >= 1, got {maxit!r}")
    if not (is_int(nterm) and nterm >= 1):
        raise NeuronvizError(f"nterm must be an int >= 1, got {nterm!r}")
    return float(delrsq), int(maxit), int(nterm)


def _prepare(x: object, y: object) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Batched inputs as float64 x (B, p, n), y (B, n) on x's device, checked; y shared or not."""
    x_t = _as_float64(x, "x", None)
    y_t = _as_float64(y, "y", x_t.device)
    if x_t.dim() == 2:
        x_t = x_t.unsqueeze(2)
    if x_t.dim() != 3:
        raise NeuronvizError(f"x must be (B, n) or (B, n, p), got shape {tuple(x_t.shape)}")
    b, n, p = x_t.shape
    if b == 0 or p == 0:
        raise NeuronvizError(f"x must hold at least one problem and one predictor, got shape {tuple(x_t.shape)}")
    shared = y_t.dim() == 1
    if shared:
        y_t = y_t.unsqueeze(0).expand(b, -1)
    if y_t.dim() != 2 or y_t.shape != (b, n):
        raise NeuronvizError(
            f"y must be (n,) shared by all problems or (B, n) = ({b}, {n}), got shape {tuple(y_t.shape)}"
        )
    _check_finite(x_t, "x")
    _check_finite(y_t, "y")
    if n < 4:
        raise NeuronvizError(f"ACE needs at least 4 observations, got n = {n}")
    if y_t.device.type == "cpu":
        y_np = y_t.numpy()
        flat = torch.from_numpy(y_np.max(axis=1) <= y_np.min(axis=1))
    else:
        flat = y_t.amax(dim=1) <= y_t.amin(dim=1)
    if bool(flat.any()):
        which = torch.nonzero(flat).flatten().tolist()
        shown = ", ".join(map(str, which[:10])) + (", ..." if len(which) > 10 else "")
        raise NeuronvizError(
            f"y is constant in {len(which)} problem(s) (index {shown}); its transform and the "
            "maximal correlation are undefined"
        )
    if n < _RELIABLE_N:
        warnings.warn(
            f"n = {n} < {_RELIABLE_N}: the SuperSmoother's spans (0.05, 0.2, 0.5 of n) hold too few "
            "points to choose from reliably; the ACE estimate is very noisy at this size",
            UserWarning,
            stacklevel=3,
        )
    return x_t.transpose(1, 2).contiguous(), y_t, shared


# -- the algorithm -------------------------------------------------------------------------


def _initial_scale(phi: torch.Tensor, theta: torch.Tensor, delrsq: float) -> torch.Tensor:
    """Scale the centred predictors by a least-squares fit to theta (``scale`` in mace.f).

    Conjugate gradients, p passes of at most p steps; a pass stops early on a zero gradient
    and the passes stop once no coefficient moved by ``delrsq`` or more, per problem.

    Parameters
    ----------
    phi : torch.Tensor
        (B, p, n) centred predictors.
    theta : torch.Tensor
        (B, n) standardised y.
    delrsq : float
        Tolerance on the coefficients.

    Returns
    -------
    torch.Tensor
        (B, p, n) ``c_j * phi_j``.
    """
    b, p, n = phi.shape
    coef = phi.new_zeros(b, p)
    last_dir = phi.new_zeros(b, p)
    last_g2 = phi.new_ones(b)
    passing = torch.ones(b, dtype=torch.bool, device=phi.device)
    for _ in range(p):
        previous = coef.clone()
        stepping = passing.clone()
        for step in range(p):
            resid = theta - torch.einsum("bpn,bp->bn", phi, coef)
            grad = -2.0 * torch.einsum("bn,bpn->bp", resid, phi) / n
            g2 = (grad * grad).sum(1)
            stepping = stepping & (g2 > 0)
            if step == 0:
                direction = -grad
            else:
                direction = -grad + (g2 / last_g2).unsqueeze(1) * last_dir
            proj = torch.einsum("bpn,bp->bn", phi, direction)
            pp = (proj * proj).sum(1)
            move = stepping & (pp > 0)
            alpha = (proj * resid).sum(1) / torch.where(pp > 0, pp, torch.ones_like(pp))
            coef = torch.where(move.unsqueeze(1), coef + alpha.unsqueeze(1) * direction, coef)
            last_g2 = torch.where(stepping, g2, last_g2)
            last_dir = torch.where(stepping.unsqueeze(1), direction, last_dir)
        passing = passing & ~((coef - previous).abs().amax(1) < delrsq)
    return coef.unsqueeze(2) * phi


class _WorkingSet:
    """The problems being iterated: their state and their sorted variables.

    Problems join in groups (the constructor, then :meth:`extend`), iterate together
    (:meth:`outer_iteration`) and leave as they converge (:meth:`take`), so that a working
    set kept small on a CPU also stays full.

    Parameters
    ----------
    x : torch.Tensor
        (B, p, n) predictors of the joining problems.
    y : torch.Tensor
        (B, n) their responses.
    ids : torch.Tensor
        (B,) their positions in the whole batch.
    yvar : _SortedVariable or None
        The sorted y when it is shared by all problems; None to sort each problem's own.
    delrsq, nterm
        Iteration controls (for the initial scaling and the R^2 history).
    """

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor, yvar: _SortedVariable | None, delrsq: float,
        nterm: int,
    ) -> None:
        b, p, _ = x.shape
        self.ids = ids
        theta = y - y.mean(dim=1, keepdim=True)
        self.theta = theta / theta.std(dim=1, unbiased=False, keepdim=True)
        self.xconst = x.amax(dim=2) <= x.amin(dim=2)  # (B, p)
        # a constant predictor gets phi = 0 exactly (its centred values can be a rounding error)
        phi = torch.where(self.xconst.unsqueeze(2), torch.zeros_like(x), x - x.mean(dim=2, keepdim=True))
        self.phi = _initial_scale(phi, self.theta, delrsq)
        self.rsq = x.new_zeros(b)
        # mace.f seeds the history with 100 so that at least nterm outer iterations run
        self.history = x.new_full((b, nterm), 100.0)
        self.iterations = torch.zeros(b, dtype=torch.long, device=x.device)
        self.yvar = yvar if yvar is not None else _SortedVariable(y)
        self.xvars = [_SortedVariable(x[:, k]) for k in range(p)]

    _STATE = ("ids", "theta", "xconst", "phi", "rsq", "history", "iterations")

    @property
    def size(self) -> int:
        return self.ids.numel()

    def take(self, rows: torch.Tensor) -> "_WorkingSet":
        """The working set restricted to ``rows``."""
        new = _WorkingSet.__new__(_WorkingSet)
        for name in self._STATE:
            setattr(new, name, getattr(self, name).index_select(0, rows))
        new.yvar = self.yvar.take(rows)
        new.xvars = [v.take(rows) for v in self.xvars]
        return new

    def extend(self, other: "_WorkingSet") -> None:
        """Append the problems of ``other``."""
        for name in self._STATE:
            setattr(self, name, torch.cat([getattr(self, name), getattr(other, name)]))
        self.yvar = self.yvar.cat(other.yvar)
        self.xvars = [a.cat(b) for a, b in zip(self.xvars, other.xvars)]

    def rho(self, rows: torch.Tensor) -> torch.Tensor:
        """Maximal correlation estimates of ``rows``: |corr(phi, theta)| for one predictor, else sqrt(R^2)."""
        if self.phi.shape[1] == 1:
            return _abs_corr(self.phi[:, 0].index_select(0, rows), self.theta.index_select(0, rows))
        return self.rsq.index_select(0, rows).clamp(min=0).sqrt()

    def outer_iteration(self, delrsq: float, maxit: int, nterm: int) -> torch.Tensor:
        """One outer iteration of mace.f for every problem; returns which have converged."""
        p = self.phi.shape[1]
        theta, phi, rsq = self.theta, self.phi, self.rsq
        # inner loop (backfitting over the predictors); a single pass when p == 1
        inner = torch.ones_like(rsq, dtype=torch.bool)
        for inner_it in range(maxit):
            rsq_before = rsq.clone()
            rest = theta - phi.sum(dim=1)  # theta - sum_j phi_j
            for k in range(p):
                v = self.xvars[k]
                target_sorted = v.sort(rest + phi[:, k])
                smooth = v.supersmooth(target_sorted)
                smooth = smooth - smooth.mean(dim=1, keepdim=True)
                smooth = torch.where(self.xconst[:, k : k + 1], 0.0, smooth)
                sv = 1.0 - ((target_sorted - smooth) ** 2).mean(dim=1)
                # mace.f keeps the new phi_k only if it raises R^2
                accept = inner & (sv > rsq)
                new_phi = v.unsort(smooth)
                rsq = torch.where(accept, sv, rsq)
                rest = torch.where(accept.unsqueeze(1), v.unsort(target_sorted) - new_phi, rest)
                phi[:, k] = torch.where(accept.unsqueeze(1), new_phi, phi[:, k])
            if p == 1:
                break
            inner = inner & (rsq - rsq_before > delrsq)
            if inner_it + 1 >= maxit or not bool(inner.any()):
                break

        # theta <- E[sum_j phi_j | y], centred, unit variance
        smooth = self.yvar.supersmooth(self.yvar.sort(phi.sum(dim=1)))
        smooth = smooth - smooth.mean(dim=1, keepdim=True)
        sd = smooth.std(dim=1, unbiased=False, keepdim=True)
        # all phi zero (constant predictors): theta stays as it is instead of 0/0
        usable = sd > 0
        theta = torch.where(usable, self.yvar.unsort(smooth / torch.where(usable, sd, 1.0)), theta)

        rsq = 1.0 - ((theta - phi.sum(dim=1)) ** 2).mean(dim=1)
        self.history.scatter_(1, (self.iterations % nterm).unsqueeze(1), rsq.unsqueeze(1))
        self.iterations += 1
        self.theta, self.rsq = theta, rsq
        return (self.history.amax(1) - self.history.amin(1) <= delrsq) | (self.iterations >= maxit)


class _Solved(NamedTuple):
    """The batched fields of an :class:`AceResult`, all tensors."""

    rho: torch.Tensor
    rsq: torch.Tensor
    x_transforms: torch.Tensor
    y_transform: torch.Tensor
    iterations: torch.Tensor


def _solve(x: torch.Tensor, y: torch.Tensor, y_shared: bool, delrsq: float, maxit: int, nterm: int) -> _Solved:
    """ACE on checked inputs x (B, p, n), y (B, n); returns batched transforms.

    Problems are iterated in a working set of bounded size, which bounds the memory of the
    work arrays and, with several CPU threads, keeps every op below torch's parallel grain
    (see ``_CPU_GRAIN``). Converged problems leave the set and waiting ones join it when it
    is half empty, so the set stays full. The problems are independent: how they are grouped
    does not change the results.
    """
    b, p, n = x.shape
    dev = x.device
    capacity = max(1, _BLOCK_ELEMENTS.get(dev.type, 2**20) // (n * (p + 1)))
    if dev.type == "cpu" and torch.get_num_threads() > 1:
        capacity = min(capacity, max(1, _CPU_GRAIN // (3 * n)))

    out_theta = x.new_empty(b, n)
    out_phi = x.new_empty(b, p, n)
    out_rsq = x.new_empty(b)
    out_rho = x.new_empty(b)
    out_iters = torch.empty(b, dtype=torch.long, device=dev)
    yvar = _SortedVariable(y[:1], shared=True) if y_shared else None

    work: _WorkingSet | None = None
    joined = 0
    while True:
        room = capacity - (work.size if work is not None else 0)
        if joined < b and (work is None or room >= (capacity + 1) // 2):
            hi = min(b, joined + room)
            ids = torch.arange(joined, hi, device=dev)
            new = _WorkingSet(x[joined:hi], y[joined:hi], ids, yvar, delrsq, nterm)
            joined = hi
            if work is None:
                work = new
            else:
                work.extend(new)
        if work is None:
            break
        done = work.outer_iteration(delrsq, maxit, nterm)
        if bool(done.any()):
            rows = torch.nonzero(done).flatten()
            fin = work.ids.index_select(0, rows)
            out_theta.index_copy_(0, fin, work.theta.index_select(0, rows))
            out_phi.index_copy_(0, fin, work.phi.index_select(0, rows))
            out_rsq.index_copy_(0, fin, work.rsq.index_select(0, rows))
            out_iters.index_copy_(0, fin, work.iterations.index_select(0, rows))
            out_rho.index_copy_(0, fin, work.rho(rows))
            keep = torch.nonzero(~done).flatten()
            work = work.take(keep) if keep.numel() else None
            if work is None and joined >= b:
                break

    return _Solved(
        rho=out_rho, rsq=out_rsq, x_transforms=out_phi.transpose(1, 2), y_transform=out_theta, iterations=out_iters
    )


def _abs_corr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|Pearson correlation| along the last dimension; 0 where either side is constant."""
    a = a - a.mean(dim=-1, keepdim=True)
    b = b - b.mean(dim=-1, keepdim=True)
    den = torch.sqrt((a * a).sum(-1) * (b * b).sum(-1))
    ok = den > 0
    r = (a * b).sum(-1).abs() / torch.where(ok, den, torch.ones_like(den))
    return torch.where(ok, r, 0.0).clamp(max=1.0)


# -- public API ----------------------------------------------------------------------------


def ace_batch(
    x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray, *, delrsq: float = 0.01, maxit: int = 20, nterm: int = 3
) -> AceResult:
    """ACE on B independent problems of the same size at once, returning all transforms.

    Parameters
    ----------
    x : array_like or torch.Tensor
        (B, n) one predictor per problem, or (B, n, p). Computation runs on x's device.
    y : array_like or torch.Tensor
        (n,) shared by all problems, or (B, n).
    delrsq : float, optional
        Convergence threshold on R^2 (mace.f default 0.01).
    maxit : int, optional
        Maximum number of outer iterations, and of inner (backfitting) iterations.
    nterm : int, optional
        A problem stops when its last ``nterm`` R^2 values lie within ``delrsq``.

    Returns
    -------
    AceResult
        Fields with a leading B dimension, float64 on x's device: ``rho`` (B,), ``rsq`` (B,),
        ``x_transforms`` (B, n, p), ``y_transform`` (B, n), ``iterations`` (B,).

    Raises
    ------
    NeuronvizError
        (a ValueError) for NaN/Inf, fewer than 4 observations, a constant y, bad shapes or
        bad control values.

    Warns
    -----
    UserWarning
        When n < 40, where the SuperSmoother's span choice is unreliable.
    """
    delrsq, maxit, nterm = _check_controls(delrsq, maxit, nterm)
    xt, yt, shared = _prepare(x, y)
    return AceResult(**_solve(xt, yt, shared, delrsq, maxit, nterm)._asdict())


def maximal_correlation(
    x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray, *, delrsq: float = 0.01, maxit: int = 20, nterm: int = 3
) -> torch.Tensor:
    """ACE estimate of the maximal correlation for B independent problems, vectorised.

    Parameters
    ----------
    x : array_like or torch.Tensor
        (B, n) one predictor per problem, or (B, n, p). Computation runs on x's device.
    y : array_like or torch.Tensor
        (n,) shared by all problems, or (B, n).
    delrsq, maxit, nterm : optional
        Iteration controls, as in :func:`ace_batch`.

    Returns
    -------
    torch.Tensor
        (B,) float64: ``|corr(phi(x), theta(y))|`` for one predictor, ``sqrt(R^2)`` for
        several; 0 where the predictor is constant.

    Raises
    ------
    NeuronvizError
        (a ValueError) for NaN/Inf, fewer than 4 observations, a constant y, bad shapes or
        bad control values.

    Warns
    -----
    UserWarning
        When n < 40, where the SuperSmoother's span choice is unreliable.

    Notes
    -----
    The estimate is unchanged by a positive affine map of x or y, and nearly (not exactly)
    by other increasing maps: the running-lines smooths work in the units of the variable.
    ACE is biased upwards on small samples (independent data with n = 300 give about 0.2).
    """
    delrsq, maxit, nterm = _check_controls(delrsq, maxit, nterm)
    xt, yt, shared = _prepare(x, y)
    return _solve(xt, yt, shared, delrsq, maxit, nterm).rho


def ace(
    x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray, *, delrsq: float = 0.01, maxit: int = 20, nterm: int = 3
) -> AceResult:
    """ACE (Breiman & Friedman 1985) for one problem.

    Equals the ``ace`` 0.4.2 package up to rounding on data without ties; with ties or
    near-ties (values 1e-12 apart) within ``TIED_RHO_BOUND`` = 0.02 in ``rho`` (see the module
    docstring).

    Parameters
    ----------
    x : array_like or torch.Tensor
        (n,) one predictor or (n, p) several. Computation runs on x's device.
    y : array_like or torch.Tensor
        (n,) response.
    delrsq : float, optional
        Convergence threshold on R^2 (mace.f default 0.01).
    maxit : int, optional
        Maximum number of outer iterations, and of inner (backfitting) iterations.
    nterm : int, optional
        Iteration stops when the last ``nterm`` R^2 values lie within ``delrsq``.

    Returns
    -------
    AceResult
        ``rho`` and ``rsq`` as floats, ``x_transforms`` (n, p) and ``y_transform`` (n,) as
        float64 tensors on x's device, ``iterations`` as an int.

    Raises
    ------
    NeuronvizError
        (a ValueError) for NaN/Inf, fewer than 4 observations, a constant y, bad shapes or
        bad control values.

    Warns
    -----
    UserWarning
        When n < 40, where the SuperSmoother's span choice is unreliable.
    """
    delrsq, maxit, nterm = _check_controls(delrsq, maxit, nterm)
    x_t = _as_float64(x, "x", None)
    if x_t.dim() not in (1, 2):
        raise NeuronvizError(f"x must be (n,) or (n, p), got shape {tuple(x_t.shape)}")
    y_t = _as_float64(y, "y", x_t.device)
    if y_t.dim() != 1:
        raise NeuronvizError(f"y must be (n,), got shape {tuple(y_t.shape)}")
    if y_t.shape[0] != x_t.shape[0]:
        raise NeuronvizError(
            f"x and y must have the same number of observations, got {x_t.shape[0]} and {y_t.shape[0]}"
        )
    xt, yt, _ = _prepare(x_t.unsqueeze(0), y_t.unsqueeze(0))
    res = _solve(xt, yt, False, delrsq, maxit, nterm)
    return AceResult(
        rho=float(res.rho[0]),
        rsq=float(res.rsq[0]),
        x_transforms=res.x_transforms[0],
        y_transform=res.y_transform[0],
        iterations=int(res.iterations[0]),
    )
