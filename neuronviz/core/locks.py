"""One lock per model: every neuronviz call that runs a model holds it, so two callers take turns.

Two threads running one model at once would mix their forward hooks (each recording the other's
passes) and their saved states (one restoring the modes or ``requires_grad`` flags the other had
changed). The lock is re-entrant, so a function holding it may call another that takes it too.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from typing import Any, Callable, Iterator

from .errors import NeuronvizError

__all__ = ["model_lock", "hold_model", "is_held"]

_MODEL_LOCKS: "weakref.WeakKeyDictionary[Any, threading.RLock]" = weakref.WeakKeyDictionary()
_GUARD = threading.Lock()


def model_lock(model: Any) -> threading.RLock:
    """The re-entrant lock of ``model`` that neuronviz holds while it runs the model.

    Parameters
    ----------
    model : object
        The model (any weak-referenceable object).

    Returns
    -------
    threading.RLock
        The same lock for the same model, for as long as the model lives.
    """
    with _GUARD:
        lock = _MODEL_LOCKS.get(model)
        if lock is None:
            lock = _MODEL_LOCKS[model] = threading.RLock()
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
