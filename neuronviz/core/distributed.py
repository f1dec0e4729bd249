"""torch.distributed plumbing: exact reductions of streaming statistics across ranks, errors that reach every rank.

Each rank streams its own shard of the data into mergeable statistics; these helpers combine
them so that every rank ends with the statistics of the whole data set. Means are combined
from the per-rank counts and sums, and centred sums with the k-group form of Chan, Golub &
LeVeque's update, ``M2 = sum_r [M2_r + n_r (mean_r - mean)(mean_r - mean)^T]``, in float64:
the result equals a single process's up to rounding, whatever the sharding.

A rank whose local work raises must not leave the others waiting in a collective until the
backend's timeout: :meth:`Ranks.together` makes every rank exchange a status after each piece
of local work, so the failing rank raises its own error and every other rank raises
:class:`PeerError` naming it.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
import torch.distributed as dist

from .errors import NeuronvizError
from .stats import CoMoments, PositionCovariance, WeightedCoMoments

__all__ = [
    "PeerError",
    "Ranks",
    "initialised",
    "use_distributed",
    "shard",
    "all_reduce_comoments",
    "all_reduce_covariance",
    "all_reduce_weighted",
]

#: Bytes of an error message passed to the other ranks (longer messages are cut).
_MESSAGE_BYTES = 1000


class PeerError(RuntimeError):
    """Another rank failed, so this rank stops too; the failing rank raises the original error."""


def initialised() -> bool:
    """Whether a torch.distributed process group is initialised in this process."""
    return dist.is_available() and dist.is_initialized()


def use_distributed(distributed: bool | None) -> bool:
    """Resolve a ``distributed`` argument.

    Parameters
    ----------
    distributed : bool or None
        None: distributed when a process group of more than one rank is initialised;
        True: required; False: this process alone, even inside a process group.

    Returns
    -------
    bool

    Raises
    ------
    NeuronvizError
        ``distributed=True`` without an initialised process group, or a value that is not
        a bool or None.
    """
    if distributed is None:
        return initialised() and dist.get_world_size() > 1
    if not isinstance(distributed, bool):
        raise NeuronvizError(f"distributed must be True, False or None (automatic), got {distributed!r}")
    if distributed and not initialised():
        raise NeuronvizError(
            "distributed=True needs an initialised torch.distributed process group: launch with "
            "torchrun and call torch.distributed.init_process_group() first ('nccl' for GPUs, 'gloo' "
            "for CPUs), or pass distributed=False"
        )
    return distributed


def shard(n: int, rank: int, size: int) -> range:
    """The contiguous block of ``range(n)`` that ``rank`` of ``size`` handles (sizes differ by at most 1)."""
    return range(n * rank // size, n * (rank + 1) // size)


def _comm_device(backend: str, device: torch.device) -> torch.device:
    names = backend.lower()
    if device.type == "cuda" and "nccl" in names:
        return device
    if "gloo" in names:
        return torch.device("cpu")
    if "nccl" in names:
        raise NeuronvizError(
            f"torch.distributed was initialised with the NCCL backend, which reduces CUDA tensors only, "
            f"but this rank computes on {device}; pass device=f'cuda:{{local_rank}}' (one GPU per rank) or "
            "initialise the process group with backend='gloo' to run on CPUs"
        )
    return device  # another backend (mpi, ucc): give it the compute device's tensors


class Ranks:
    """The ranks taking part in one computation, with the collectives the methods need.

    Inactive (one process, no process group), every collective is the identity, so a method
    runs the same code alone and distributed.

    Parameters
    ----------
    device : torch.device
        Where this rank computes.
    active : bool
        Whether to communicate (see :func:`use_distributed`).

    Attributes
    ----------
    rank, size : int
        This rank and the number of ranks (0 and 1 when inactive).
    device : torch.device
        Where collectives run: the compute device under NCCL, the CPU under gloo.

    Raises
    ------
    NeuronvizError
        A backend that cannot reduce tensors of ``device`` (NCCL with a CPU device).
    """

    def __init__(self, device: torch.device, active: bool) -> None:
        self.active = active
        self.compute_device = device
        if active:
            self.rank, self.size = dist.get_rank(), dist.get_world_size()
            self.device = _comm_device(str(dist.get_backend()), device)
        else:
            self.rank, self.size, self.device = 0, 1, device

    def __repr__(self) -> str:
        return f"Ranks(rank {self.rank} of {self.size}, collectives on {self.device})"

    # -- errors ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def together(self, what: str) -> Iterator[None]:
        """Run a piece of local work, then make sure every rank got through it.

        On exit every rank exchanges a status. The rank whose work raised re-raises its own
        error; every other rank raises :class:`PeerError` with that error's text. Interrupts
        (``KeyboardInterrupt``) are not exchanged: the backend's timeout ends the others.

        Parameters
        ----------
        what : str
            The work, for messages ("the first pass over the images").

        Raises
        ------
        PeerError
            Another rank's work raised.
        """
        if not self.active:
            yield
            return
        try:
            yield
        except Exception as err:
            try:
                self._exchange(f"{type(err).__name__}: {err}", what)
            except Exception:  # noqa: BLE001 - the others may be gone already: this rank's own error is what matters
                pass
            raise
        self._exchange(None, what)

    def _exchange(self, message: str | None, what: str) -> None:
        data = list(message.encode()[:_MESSAGE_BYTES]) if message is not None else []
        status = torch.zeros(2 + _MESSAGE_BYTES, dtype=torch.int64)
        status[0], status[1] = int(message is not None), len(data)
        if data:
            status[2 : 2 + len(data)] = torch.tensor(data, dtype=torch.int64)
        status = status.to(self.device)
        statuses = [torch.empty_like(status) for _ in range(self.size)]
        dist.all_gather(statuses, status)
        if message is not None:
            return
        failed = []
        for r, s in enumerate(statuses):
            s = s.cpu()
            if int(s[0]):
                failed.append((r, bytes(s[2 : 2 + int(s[1])].tolist()).decode(errors="replace")))
        if failed:
            r, text = failed[0]
            more = f" (and {len(failed) - 1} more rank(s))" if len(failed) > 1 else ""
            raise PeerError(f"rank {r} of {self.size}{more} failed during {what}: {text}; rank {self.rank} stops too")

    # -- collectives -------------------------------------------------------------------------

    def _reduce(self, t: torch.Tensor, op: str) -> torch.Tensor:
        if not self.active:
            return t
        x = t.to(self.device)
        dist.all_reduce(x, op=getattr(dist.ReduceOp, op))
        return x.to(t.device)

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over ranks (``t`` may be overwritten)."""
        return self._reduce(t, "SUM")

    def all_min(self, t: torch.Tensor) -> torch.Tensor:
        """Element-wise minimum over ranks (``t`` may be overwritten)."""
        return self._reduce(t, "MIN")

    def all_max(self, t: torch.Tensor) -> torch.Tensor:
        """Element-wise maximum over ranks (``t`` may be overwritten)."""
        return self._reduce(t, "MAX")

    def gather_ints(self, values: Sequence[int]) -> list[list[int]]:
        """Every rank's ``values`` (same length on every rank), indexed by rank."""
        if not self.active:
            return [list(values)]
        mine = torch.tensor(list(values), dtype=torch.int64, device=self.device)
        rows = [torch.empty_like(mine) for _ in range(self.size)]
        dist.all_gather(rows, mine)
        return [r.tolist() for r in rows]

    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's rows, rank 0's first.

        Parameters
        ----------
        t : torch.Tensor
            (n_r, ...) with the same trailing shape and dtype on every rank; n_r may differ
            (and be 0).

        Returns
        -------
        torch.Tensor
            (sum of n_r, ...) on ``t``'s device.
        """
        if not self.active:
            return t
        sizes = [row[0] for row in self.gather_ints([t.shape[0]])]
        buf = torch.zeros((max(sizes), *t.shape[1:]), dtype=t.dtype, device=self.device)
        buf[: t.shape[0]] = t
        parts = [torch.empty_like(buf) for _ in range(self.size)]
        dist.all_gather(parts, buf)
        return torch.cat([p[:n] for p, n in zip(parts, sizes)]).to(t.device)

    def broadcast(self, t: torch.Tensor, src: int = 0) -> torch.Tensor:
        """Rank ``src``'s ``t`` on every rank (same shape and dtype everywhere)."""
        if not self.active:
            return t
        x = t.to(self.device)
        dist.broadcast(x, src=src)
        return x.to(t.device)


def all_reduce_comoments(m: CoMoments, ranks: Ranks) -> CoMoments:
    """The moments of the samples of every rank.

    Parameters
    ----------
    m : CoMoments
        This rank's moments (``n`` may be 0; the feature count must match across ranks).
    ranks : Ranks
        The ranks.

    Returns
    -------
    CoMoments
        The same on every rank (``m`` itself when inactive).
    """
    if not ranks.active:
        return m
    n = sum(row[0] for row in ranks.gather_ints([m.n]))
    if n == 0:
        return m
    f = m.mean.numel()
    sums = ranks.all_sum(torch.cat([m.mean * m.n, (m.out_mean * m.n).reshape(1)]))
    mean, out_mean = sums[:f] / n, sums[f] / n
    delta, delta_o = m.mean - mean, m.out_mean - out_mean
    centred = ranks.all_sum(
        torch.cat([
            m.m2 + m.n * delta * delta,
            m.comoment + m.n * delta * delta_o,
            (m.out_m2 + m.n * delta_o * delta_o).reshape(1),
        ])
    )
    out = CoMoments.__new__(CoMoments)
    out.n, out.mean, out.out_mean = n, mean, out_mean
    out.m2, out.comoment, out.out_m2 = centred[:f], centred[f : 2 * f], centred[2 * f]
    out.minimum, out.maximum = ranks.all_min(m.minimum.clone()), ranks.all_max(m.maximum.clone())
    return out


def all_reduce_weighted(m: WeightedCoMoments, ranks: Ranks) -> WeightedCoMoments:
    """The bootstrap replicates' weighted moments of the samples of every rank.

    The k-group form of the weighted Chan update, per replicate: weights replace counts.

    Parameters
    ----------
    m : WeightedCoMoments
        This rank's replicates (the shapes must match across ranks).
    ranks : Ranks
        The ranks.

    Returns
    -------
    WeightedCoMoments
        The same on every rank (``m`` itself when inactive).
    """
    if not ranks.active:
        return m
    f = m.s1.shape[1]
    weight = ranks.all_sum(m.weight.clone())
    safe = torch.where(weight > 0, weight, torch.ones_like(weight))
    sums = ranks.all_sum(torch.cat([m.mean * m.weight[:, None], (m.out_mean * m.weight)[:, None]], 1))
    mean, out_mean = sums[:, :f] / safe[:, None], sums[:, f] / safe
    delta, delta_o = m.mean - mean, m.out_mean - out_mean
    w = m.weight[:, None]
    centred = ranks.all_sum(torch.cat([
        m.m2 + w * delta * delta,
        m.comoment + w * delta * delta_o[:, None],
        (m.out_m2 + m.weight * delta_o * delta_o)[:, None],
    ], 1))
    tolerance = float(ranks.all_max(torch.tensor([m.tolerance], dtype=torch.float64))[0])
    return WeightedCoMoments.from_centred(weight, mean, centred[:, :f], centred[:, f : 2 * f], out_mean,
                                          centred[:, 2 * f], tolerance)


def all_reduce_covariance(c: PositionCovariance, ranks: Ranks) -> PositionCovariance:
    """The position covariance of the samples of every rank, in place.

    Parameters
    ----------
    c : PositionCovariance
        This rank's statistics (``n`` may be 0; shapes must match across ranks). Its tensors
        are overwritten.
    ranks : Ranks
        The ranks.

    Returns
    -------
    PositionCovariance
        ``c``, now holding every rank's samples (the same on every rank).
    """
    if not ranks.active:
        return c
    n = sum(row[0] for row in ranks.gather_ints([c.n]))
    if n == 0:
        return c
    mean = ranks.all_sum(c.mean * c.n) / n
    delta = c.mean - mean
    step = max(1, PositionCovariance.CHUNK_BYTES // (8 * c.m2.shape[1] ** 2))
    for lo in range(0, c.m2.shape[0], step):  # the cross term, a few channels at a time
        d = delta[lo : lo + step]
        c.m2[lo : lo + step] += c.n * d.unsqueeze(2) * d.unsqueeze(1)
    c.m2 = ranks.all_sum(c.m2)
    c.n, c.mean = n, mean
    c.minimum, c.maximum = ranks.all_min(c.minimum), ranks.all_max(c.maximum)
    return c
