"""One lock per model: every neuronviz call that runs a model holds it, so two callers take turns.

Two threads running one model at once would mix their forward hooks (each recording the other's
passes) and their saved states (one restoring the modes or ``requires_grad`` flags the other had
changed). The lock is re-entrant, so a function holding it may call another that takes it too.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import threading
import time
import weakref
from typing import Any, Callable, Iterator, TypeVar

from .errors import NeuronvizError, NeuronvizTypeError

__all__ = ["ModelLock", "model_lock", "hold_model", "is_held", "runs_model"]

F = TypeVar("F", bound=Callable[..., Any])


class ModelLock:
    """A re-entrant lock that also tells whether it is held (``locked()``), as ``threading.Lock`` does.

    Same interface as ``threading.RLock``: ``acquire(blocking=True, timeout=-1)``, ``release()``,
    and use in a ``with`` block.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._depth = 0  # changed only by the holder, so reading it from elsewhere is safe

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Take the lock (again, for the thread holding it); False when not taken in time."""
        got = self._lock.acquire(blocking, timeout)
        if got:
            self._depth += 1
        return got

    def release(self) -> None:
        """Release one level of the holding thread's hold."""
        self._depth -= 1
        self._lock.release()

    def locked(self) -> bool:
        """Whether some thread holds the lock now."""
        return self._depth > 0

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


_MODEL_LOCKS: "weakref.WeakKeyDictionary[Any, ModelLock]" = weakref.WeakKeyDictionary()
_GUARD = threading.Lock()


def model_lock(model: Any) -> ModelLock:
    """The re-entrant lock of ``model`` that neuronviz holds while it runs the model.

    Parameters
    ----------
    model : object
        The model (any weak-referenceable object).

    Returns
    -------
    ModelLock
        The same lock for the same model, for as long as the model lives.
    """
    with _GUARD:
        lock = _MODEL_LOCKS.get(model)
        if lock is None:
            lock = _MODEL_LOCKS[model] = ModelLock()
        return lock


def is_held(model: Any) -> bool:
    """Whether some thread (this one included) holds the lock of ``model`` now.

    Parameters
    ----------
    model : object
        The model.

    Returns
    -------
    bool
    """
    lock, free = model_lock(model), []

    def probe() -> None:  # another thread, so that this thread's own hold counts as held
        if lock.acquire(blocking=False):
            lock.release()
            free.append(True)

    t = threading.Thread(target=probe)
    t.start()
    t.join()
    return not free


@contextlib.contextmanager
def hold_model(
    model: Any,
    *,
    check: Callable[[], None] | None = None,
    on_wait: Callable[[], None] | None = None,
    timeout: float | None = None,
) -> Iterator[None]:
    """Hold :func:`model_lock` of ``model`` for the block, waiting while another thread holds it.

    Parameters
    ----------
    model : object
        The model.
    check : callable, optional
        Called every 0.1 s while waiting; raising from it (e.g. a cancelled background job)
        stops the wait.
    on_wait : callable, optional
        Called once if another thread holds the lock when the block starts.
    timeout : float, optional
        Seconds to wait at most (None: as long as it takes).

    Raises
    ------
    NeuronvizError
        ``timeout`` passed while another thread held the model.
    """
    lock = model_lock(model)
    if not lock.acquire(blocking=False):
        if on_wait is not None:
            on_wait()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not lock.acquire(timeout=0.1):
            if check is not None:
                check()
            if deadline is not None and time.monotonic() > deadline:
                raise NeuronvizError(
                    f"the model is busy with another neuronviz call for more than {timeout:g} s; wait for it to "
                    "end (view.wait()) or cancel it"
                )
    try:
        yield
    finally:
        lock.release()


def runs_model(fn: F | None = None, *, model: str = "model") -> F:
    """Decorate a public function that runs a model: check its arguments, then hold the model's lock.

    Before the call: the arguments are bound to the signature (an unknown keyword is a
    :class:`NeuronvizTypeError` listing the parameters), numpy scalars become Python numbers
    (:func:`neuronviz.core.validation.plain`), the ``model`` argument is checked
    (:func:`~neuronviz.core.validation.check_model`) and arguments named ``device`` or
    ``offload`` are checked (:func:`~neuronviz.core.validation.check_device`). The call then
    runs holding :func:`model_lock` of the model, so that calls from several threads (a view
    running in the background and a notebook cell) take turns.

    Parameters
    ----------
    fn : callable
        The function.
    model : str
        Name of its model parameter.

    Returns
    -------
    callable
        The wrapped function, with the same signature and docstring.
    """
    if fn is None:
        return functools.partial(runs_model, model=model)  # type: ignore[return-value]
    from .validation import check_device, check_model, plain

    sig = inspect.signature(fn)
    if model not in sig.parameters:
        raise TypeError(f"{fn.__name__} has no parameter {model!r}")

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError as err:
            names = ", ".join(p for p in sig.parameters if p != "self")
            raise NeuronvizTypeError(f"{fn.__name__}(): {err}; its parameters are: {names}") from None
        for name, value in bound.arguments.items():
            if name != model:
                bound.arguments[name] = plain(value)
        net = check_model(bound.arguments.get(model), model)
        for name in ("device", "offload"):
            if name in bound.arguments:
                check_device(bound.arguments[name], name)
        with hold_model(net):
            return fn(*bound.args, **bound.kwargs)

    return wrapper  # type: ignore[return-value]
