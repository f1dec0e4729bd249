"""Batch sizing and out-of-memory backoff for loops over many forward passes."""

from __future__ import annotations

import warnings
from typing import Callable, Iterator

import torch

__all__ = ["default_batch_size", "is_out_of_memory", "chunks", "run_batched"]


def default_batch_size(device: torch.device) -> int:
    """A batch size that keeps the device busy without flooding it.

    Parameters
    ----------
    device : torch.device
        Where the forward passes run.

    Returns
    -------
    int
        32 on CPU (larger batches gain nothing there), 128 on a GPU; out-of-memory errors
        halve it (see :func:`run_batched`).
    """
    return 128 if device.type == "cuda" else 32


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is an accelerator (or allocator) out-of-memory error."""
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def chunks(n: int, size: int, start: int = 0) -> Iterator[range]:
    """Consecutive ranges of at most ``size`` covering ``start..n-1``."""
    for lo in range(start, n, size):
        yield range(lo, min(lo + size, n))


def run_batched(
    n: int,
    batch_size: int,
    step: Callable[[range], None],
    *,
    on_progress: Callable[[int, int], None] | None = None,
) -> int:
    """Call ``step`` on consecutive index ranges covering ``0..n-1``, halving on out-of-memory.

    ``step`` must either finish or leave no trace (compute first, then commit), because a
    range that ran out of memory is retried in two halves.

    Parameters
    ----------
    n : int
        Number of items.
    batch_size : int
        Initial batch size.
    step : callable
        Processes one ``range`` of item indices.
    on_progress : callable, optional
        Called as ``on_progress(done, n)`` after each range.

    Returns
    -------
    int
        The batch size in use at the end (smaller than asked after a backoff).

    Raises
    ------
    torch.cuda.OutOfMemoryError
        Still out of memory with a batch of one.
    """
    done = 0
    size = max(1, int(batch_size))
    while done < n:
        r = range(done, min(done + size, n))
        try:
            step(r)
        except (RuntimeError, torch.cuda.OutOfMemoryError) as err:
            if not is_out_of_memory(err) or size == 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            size = max(1, size // 2)
            warnings.warn(f"out of memory: retrying with batch_size={size}", RuntimeWarning, stacklevel=2)
            continue
        done = r.stop
        if on_progress is not None:
            on_progress(done, n)
    return size
