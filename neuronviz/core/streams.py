"""Image batches from a tensor or from an iterable such as a DataLoader, for passes over a data set."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sized
from typing import Any, TypeGuard, cast

import torch

from .errors import NeuronvizError

__all__ = ["is_batch_stream", "iter_batches", "check_reiterable", "count_hint", "RowBuffer"]


def is_batch_stream(source: object) -> TypeGuard[Iterable[Any]]:
    """Whether ``source`` is an iterable of batches (a DataLoader, a list of tensors), not a tensor.

    Parameters
    ----------
    source : object
        What the user passed as images or samples.

    Returns
    -------
    bool
    """
    if isinstance(source, (torch.Tensor, str, bytes)) or hasattr(source, "__array__"):
        return False  # a numpy array is refused as samples by the tensor checks, with their message
    return isinstance(source, Iterable)


def iter_batches(source: torch.Tensor | Iterable, batch_size: int, *, what: str = "images") -> Iterator[torch.Tensor]:
    """The image batches of ``source``.

    Parameters
    ----------
    source : torch.Tensor or iterable
        (N, C, H, W) images, cut into batches of ``batch_size``; or an iterable yielding
        (B, C, H, W) tensors or ``(images, labels, ...)`` tuples/lists (a DataLoader over an
        image data set), whose batches are used as they come.
    batch_size : int
        Rows per batch when ``source`` is a tensor.
    what : str
        Name of the argument, for messages.

    Yields
    ------
    torch.Tensor
        One batch of images (unchecked: see :func:`neuronviz.core.validation.check_batch`).

    Raises
    ------
    NeuronvizError
        An item that is neither a tensor nor a tuple/list starting with one.
    """
    if isinstance(source, torch.Tensor):
        for lo in range(0, source.shape[0], batch_size):
            yield source[lo : lo + batch_size]
        return
    for item in source:
        batch = item[0] if isinstance(item, (tuple, list)) and item else item
        if not isinstance(batch, torch.Tensor):
            raise NeuronvizError(
                f"{what} must yield image tensors (B, C, H, W) or (images, labels) pairs, got "
                f"{type(batch).__name__}"
            )
        yield batch


def check_reiterable(source: object, *, what: str = "images") -> None:
    """Refuse a one-shot iterator where several passes over the data are needed.

    Parameters
    ----------
    source : object
        The data source.
    what : str
        Name of the argument, for messages.

    Raises
    ------
    NeuronvizError
        ``source`` is an iterator (a generator, ``iter(...)``): a second pass would see nothing.
    """
    # an Iterator returns itself from iter(): a second pass would find it exhausted
    if isinstance(source, Iterator):
        raise NeuronvizError(
            f"{what} is a one-shot iterator ({type(source).__name__}), but this method reads the data "
            "more than once; pass a torch.utils.data.DataLoader (it can be iterated again), a list of "
            "batches, or the images as one tensor"
        )


def count_hint(source: object) -> int | None:
    """How many images ``source`` will yield, when that can be known without iterating it.

    Parameters
    ----------
    source : object
        A tensor, a DataLoader, or a list/tuple of batches.

    Returns
    -------
    int or None
        None when unknown (a generator, an iterable dataset).
    """
    if isinstance(source, torch.Tensor):
        return int(source.shape[0])
    if isinstance(source, torch.utils.data.DataLoader):
        try:
            if source.batch_size is None:  # a batch_sampler gives the batches
                return None
            n = len(cast(Sized, source.sampler))  # a sampler without __len__ raises the TypeError below
            return (n // source.batch_size) * source.batch_size if source.drop_last else n
        except TypeError:  # an iterable dataset without __len__
            return None
    if isinstance(source, (list, tuple)):
        total = 0
        for item in source:
            batch = item[0] if isinstance(item, (tuple, list)) and item else item
            if not isinstance(batch, torch.Tensor) or batch.dim() == 0:
                return None
            total += int(batch.shape[0])
        return total
    return None  # the len() of other iterables may count batches, not images


class RowBuffer:
    """Rows appended batch by batch (per-sample results) into one tensor that doubles when full.

    Keeping a list of small per-batch tensors instead scatters long-lived allocations among
    each batch's large temporary ones, and the allocator can then return little memory to the
    system: resident memory creeps up with the number of batches although the bytes in use do
    not. One buffer, grown geometrically, avoids that at an amortised copy per row.

    Parameters
    ----------
    trailing : tuple of int
        Shape of one row.
    dtype : torch.dtype
        The rows' dtype.
    device : torch.device
        Where the rows are kept.
    """

    def __init__(self, trailing: tuple[int, ...], dtype: torch.dtype, device: torch.device | str = "cpu") -> None:
        self._buf = torch.empty((0, *trailing), dtype=dtype, device=device)
        self.n = 0

    def append(self, rows: torch.Tensor) -> None:
        """Add (B, *trailing) rows at the end."""
        end = self.n + rows.shape[0]
        if end > self._buf.shape[0]:
            grown = self._buf.new_empty((max(end, 2 * self._buf.shape[0], 64), *self._buf.shape[1:]))
            grown[: self.n] = self._buf[: self.n]
            self._buf = grown
        self._buf[self.n : end] = rows
        self.n = end

    def rows(self) -> torch.Tensor:
        """The (n, *trailing) rows, as a tensor of their own (not a view of the larger buffer)."""
        return self._buf[: self.n].clone()
