"""Progress of long calls: ``progress=True`` / ``False`` / a callable, and a bar by default when a call is long.

Every public function that can run for more than a few seconds takes ``progress=``:

- ``True``: a :mod:`tqdm.auto` bar, a widget in a notebook, a text bar in a terminal, and
  nothing when the output is neither a terminal nor a notebook (a log file, a CI job);
- ``False``: nothing;
- a callable: called as ``progress(done, total)`` after each step, as before; an exception it
  raises (e.g. to cancel) stops the call, with the model left as it was;
- ``None`` (the default): a bar when the call is estimated to be long, nothing otherwise.

The rule of "long" (:func:`is_long`): the call pushes at least :data:`LONG_WORK` images through
the network (a forward pass counts 1 per image, a forward and backward pass
:data:`BACKWARD_COST`), or its images come from a loader or an iterable (a data set). So
``score_neurons`` with its default 50 copies is silent, ``guided_feature_inversion`` with its
default 80 steps and ``pcace`` over a DataLoader show a bar.

The bar is made at the first step (a call that fails its argument checks shows none) and is
closed when the call ends, also when it fails or is cancelled: a notebook bar then turns red,
a terminal bar stops where it was. In a process group (``torch.distributed``) only rank 0
draws a bar.

The mechanism is :func:`as_callback` (a context manager giving the callable to report to) and
:func:`reports_progress` (a decorator that applies it to a function's ``progress`` argument).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import sys
from typing import Any, Callable, Iterator, TypeVar, Union

import torch

from .errors import NeuronvizError

__all__ = [
    "BACKWARD_COST",
    "LONG_WORK",
    "Progress",
    "ProgressArg",
    "as_callback",
    "images_of",
    "is_long",
    "reports_progress",
]

#: ``progress(done, total)``: what a method calls after each step.
Progress = Callable[[int, int], None]
#: What ``progress=`` accepts.
ProgressArg = Union[bool, Progress, None]

#: Images through the network from which a call shows a bar by default (about 2 s of
#: EfficientNet-Lite0 at 224 x 224 on one CPU core pair; a GPU is faster, but a bar costs little).
LONG_WORK = 200
#: What one image's forward and backward pass costs, in forward passes.
BACKWARD_COST = 3

F = TypeVar("F", bound=Callable[..., Any])


def is_long(images: int | None, passes: float = 1.0) -> bool:
    """Whether a call is long enough for a bar by default.

    Parameters
    ----------
    images : int or None
        Images per pass through the network; None when unknown in advance (a loader, a
        generator), which counts as long.
    passes : float
        Passes over them (a forward and backward pass counts :data:`BACKWARD_COST`).

    Returns
    -------
    bool
        ``images * passes >= LONG_WORK``, or True when ``images`` is None.
    """
    return images is None or images * passes >= LONG_WORK


def images_of(images: object) -> int | None:
    """How many images a tensor argument holds (its first dimension; 1 for one (C, H, W) image).

    Parameters
    ----------
    images : object
        A method's images argument.

    Returns
    -------
    int or None
        None for anything but a tensor (a loader, a list of batches, a generator): a data set.
    """
    if isinstance(images, torch.Tensor):
        return 1 if images.dim() == 3 else int(images.shape[0]) if images.dim() else 1
    return None


def _in_kernel() -> bool:
    """Whether this runs in a Jupyter kernel (not merely a process that imported ipykernel)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def _tqdm() -> type:
    """tqdm.auto's bar in a kernel (a widget), the text bar elsewhere.

    tqdm.auto alone picks the widget whenever ipykernel was imported, which a script or a test
    run that imported the widgets has done without a notebook to show it in.
    """
    if _in_kernel():
        from tqdm.auto import tqdm
    else:
        from tqdm.std import tqdm
    return tqdm


def _rank() -> int:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return int(dist.get_rank())
    return 0


class _Bar:
    """A tqdm.auto bar made at the first report and closed once."""

    def __init__(self, desc: str, unit: str) -> None:
        self.desc, self.unit = desc, unit
        self.bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            # disable=None: no bar when the output is not a terminal (tqdm.notebook shows one anyway)
            self.bar = _tqdm()(total=total, desc=self.desc, unit=self.unit, disable=None, dynamic_ncols=True)
        bar = self.bar
        if total and total != bar.total:  # a loader whose length was not known up front
            container = getattr(bar, "container", None)
            if container is not None:  # tqdm.notebook: the widget holds its own maximum
                container.children[1].max = total
            bar.total = total
        if done > bar.n:
            bar.update(done - bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@contextlib.contextmanager
def as_callback(
    progress: ProgressArg, *, long: bool | Callable[[], bool] = False, desc: str = "", unit: str = "it"
) -> Iterator[Progress | None]:
    """The callable a method reports its progress to, from the user's ``progress=`` argument.

    Parameters
    ----------
    progress : bool, callable or None
        ``True`` for a bar, ``False`` for none, a callable ``progress(done, total)`` to call,
        or None for a bar only when ``long``.
    long : bool or callable
        Whether the call is estimated to be long (see :func:`is_long`); a callable is asked
        only when ``progress`` is None.
    desc : str
        The bar's label, e.g. the function's name.
    unit : str
        What the bar counts ("image", "step").

    Yields
    ------
    callable or None
        ``report(done, total)``, or None when nothing is to be reported. A bar made through it
        is closed when the block ends, however it ends.

    Raises
    ------
    NeuronvizError
        ``progress`` is none of the above.
    """
    if progress is None:
        progress = bool(long() if callable(long) else long)
    if isinstance(progress, bool):
        if not progress or _rank() != 0:
            yield None
            return
        bar = _Bar(desc, unit)
        try:
            yield bar
        finally:
            bar.close()
        return
    if not callable(progress):
        raise NeuronvizError(
            f"progress must be True (a bar), False (none), None (a bar when the call is long) or a callable "
            f"progress(done, total), got {progress!r}"
        )
    yield progress


def reports_progress(estimate: Callable[[inspect.BoundArguments], bool], unit: str = "it") -> Callable[[F], F]:
    """Decorate a function with a ``progress`` parameter: True/False/None become a callback or nothing.

    The function itself then receives a callable ``progress(done, total)`` or None, as before.

    Parameters
    ----------
    estimate : callable
        Given the call's bound arguments (defaults applied), whether it is long (see
        :func:`is_long`); asked only when ``progress`` is None. An estimate that raises counts
        as short (the function's own checks report bad arguments).
    unit : str
        What the bar counts.

    Returns
    -------
    callable
        The decorator; the wrapped function keeps its signature and docstring.
    """

    def decorate(fn: F) -> F:
        sig = inspect.signature(fn)
        if "progress" not in sig.parameters:
            raise TypeError(f"{fn.__name__} has no parameter 'progress'")

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                bound = sig.bind(*args, **kwargs)
            except TypeError:
                return fn(*args, **kwargs)  # the function reports the bad call
            bound.apply_defaults()

            def long() -> bool:
                try:
                    return bool(estimate(bound))
                except Exception:  # noqa: BLE001  (bad arguments: the function's checks say what is wrong)
                    return False

            with as_callback(bound.arguments["progress"], long=long, desc=fn.__name__, unit=unit) as report:
                bound.arguments["progress"] = report
                return fn(*bound.args, **bound.kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
