"""Batch sizing and out-of-memory backoff for loops over many forward passes."""

from __future__ import annotations

import os
import warnings
from typing import Callable, Iterator

import torch

from .errors import NeuronvizError

__all__ = [
    "default_batch_size", "is_out_of_memory", "chunks", "run_batched", "available_bytes", "check_fits",
    "check_batch_request",
]


def available_bytes(device: torch.device) -> int:
    """Free memory on ``device``: the accelerator's free memory, or the host's available RAM.

    Parameters
    ----------
    device : torch.device
        Where tensors would be allocated.

    Returns
    -------
    int
        Bytes; a huge number when the host cannot tell.
    """
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 2**62


def check_fits(need: float, device: torch.device, what: str, advice: str, *, share: float = 0.9) -> None:
    """Refuse, before allocating, a request that cannot fit in the free memory of ``device``.

    Parameters
    ----------
    need : float
        Estimated bytes.
    device : torch.device
        Where they would be allocated.
    what : str
        What needs them, for the message ("PCACE's projections of 3000000 images").
    advice : str
        What would fit instead ("pass fewer images").
    share : float
        Fraction of the free memory the request may take.

    Raises
    ------
    NeuronvizError
        ``need`` exceeds ``share`` of the free memory.
    """
    free = available_bytes(device)
    if need > share * free:
        raise NeuronvizError(
            f"{what} need about {need / 2**30:,.1f} GiB, more than the {free / 2**30:,.1f} GiB free on {device}; "
            f"{advice}"
        )


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


def check_batch_request(
    image: torch.Tensor, n_images: int | None, batch_size: int | None, device: torch.device
) -> None:
    """Refuse up front a batch of copies of ``image``, or a count of images, that cannot fit.

    A batch of ``min(batch_size, n_images)`` images is built at once (with a working copy,
    hence twice its size), and 8 bytes a image are kept for the outputs.

    Parameters
    ----------
    image : torch.Tensor
        One image, (1, C, H, W) or (C, H, W).
    n_images : int, optional
        How many images will be made (None: read from a data set, not counted here).
    batch_size : int, optional
        Images per forward pass (None: automatic, :func:`default_batch_size`).
    device : torch.device
        Where the batches go.

    Raises
    ------
    NeuronvizError
        The batch or the per-image outputs need more than the free memory.
    """
    size = batch_size or default_batch_size(device)
    if n_images is not None:
        size = min(size, n_images)
        check_fits(8.0 * n_images, torch.device("cpu"), f"the outputs of {n_images:,} images",
                   "pass fewer images (n_samples)")
    per_image = image[0].numel() * image.element_size() if image.dim() == 4 else image.numel() * image.element_size()
    check_fits(2.0 * size * per_image, device, f"batches of {size:,} images of shape {tuple(image.shape[-3:])}",
               "pass a smaller batch_size (out-of-memory errors halve it automatically)")
