"""One background worker thread for the widgets: run ids, cancellation, progress, stale results dropped.

A widget hands long work (scoring, inversion, ranking) to a :class:`Worker` and keeps the kernel
free: the work runs in one daemon thread, one job at a time. Submitting a new job cancels the
one running; a job's outcome reaches the widget only while it is the latest job, so a slow old
run can never overwrite a newer one.

The work itself is a function of one argument, a :class:`Job`. It reports progress through
``job.progress(done, total)`` (pass that as ``progress=`` to :func:`neuronviz.score_neurons`),
which raises :class:`JobCancelled` once the job is cancelled or superseded; the neuronviz
methods leave the model as they found it when their progress callback raises.

Example
-------
>>> worker = Worker()                                            # doctest: +SKIP
>>> def work(job):                                               # doctest: +SKIP
...     return nv.score_neurons(model, x, "blocks.15", progress=job.progress)
>>> worker.submit(work, on_finish=lambda job: print(job.state))  # doctest: +SKIP
>>> worker.wait(timeout=60)                                      # doctest: +SKIP
"""

from __future__ import annotations

import atexit
import itertools
import sys
import threading
import traceback
import weakref
from typing import Any, Callable

__all__ = ["Job", "JobCancelled", "Worker", "STATES"]

#: Seconds the interpreter waits at exit for a cancelled run to reach its next cancel point.
EXIT_GRACE_S = 10.0
_live_workers: "weakref.WeakSet[Worker]" = weakref.WeakSet()

#: The states of a :class:`Job`, in the order they can happen.
STATES = ("pending", "running", "done", "cancelled", "error")


class JobCancelled(Exception):
    """Raised inside a job's work (by :meth:`Job.progress` or :meth:`Job.check`) once it is cancelled.

    The work should let it propagate; the worker then marks the job ``"cancelled"``.
    """


class Job:
    """One unit of background work and its outcome.

    Attributes
    ----------
    id : int
        The run id, increasing with every submission to the same :class:`Worker`.
    state : str
        One of :data:`STATES`.
    result : object
        What the work returned (``state == "done"`` only).
    error : BaseException or None
        The exception the work raised (``state == "error"`` only).
    traceback : str or None
        The formatted traceback of ``error``.
    callback_error : BaseException or None
        An exception raised by the ``on_finish`` callback (also printed to stderr).
    """

    def __init__(
        self,
        job_id: int,
        fn: Callable[["Job"], Any],
        on_progress: Callable[["Job", int, int], None] | None = None,
        on_finish: Callable[["Job"], None] | None = None,
        worker: "Worker | None" = None,
    ) -> None:
        self.id = job_id
        self.state = "pending"
        self.result: Any = None
        self.error: BaseException | None = None
        self.traceback: str | None = None
        self.callback_error: BaseException | None = None
        self._fn: Callable[[Job], Any] | None = fn
        #: ``publish(partial)``: show a partial result while the work goes on (set by the view that runs it)
        self.publish: Callable[[Any], None] = lambda partial: None
        self._worker = worker
        self._on_progress = on_progress
        self._on_finish = on_finish
        self._cancel = threading.Event()
        self._finished = threading.Event()

    @property
    def cancelled(self) -> bool:
        """Whether cancellation was asked for (the work may still be winding down)."""
        return self._cancel.is_set()

    @property
    def finished(self) -> bool:
        """Whether the job ended (done, cancelled or error) and its ``on_finish`` callback returned."""
        return self._finished.is_set()

    def cancel(self) -> None:
        """Ask the job to stop at its next :meth:`progress` or :meth:`check` call."""
        self._cancel.set()

    def check(self) -> None:
        """Raise :class:`JobCancelled` if the job was cancelled; call it between stages of the work.

        Raises
        ------
        JobCancelled
            The job was cancelled or superseded by a newer one.
        """
        if self._cancel.is_set():
            raise JobCancelled(f"run {self.id} was cancelled")

    def progress(self, done: int, total: int) -> None:
        """Report progress; a progress callback for :func:`neuronviz.score_neurons` and the like.

        Parameters
        ----------
        done : int
            Items processed so far.
        total : int
            Items in all.

        Raises
        ------
        JobCancelled
            The job was cancelled: the work stops here.
        """
        self.check()
        callback, worker = self._on_progress, self._worker
        if callback is None:
            return
        if worker is None:
            callback(self, int(done), int(total))
            return
        with worker.lock:
            if worker.is_latest(self) and not self.cancelled:  # a stale job's progress is not shown
                callback(self, int(done), int(total))

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job finished; returns False on timeout."""
        return self._finished.wait(timeout)

    def __repr__(self) -> str:
        return f"Job(id={self.id}, state={self.state!r})"


class Worker:
    """A single background thread that runs the latest submitted job.

    Every callback (``on_progress``, ``on_finish``) runs in the worker thread while the
    worker's lock is held, and only for the latest job: a job superseded by a newer
    :meth:`submit` ends as ``"cancelled"`` even if its work completed, and its result is
    dropped. Hold :attr:`lock` in other threads around code that must not interleave with
    those callbacks (e.g. updating the same widgets).

    Parameters
    ----------
    name : str
        Name of the thread (shown in debuggers).

    Attributes
    ----------
    lock : threading.RLock
        Held while a job's callbacks run and while jobs are submitted or cancelled.
    """

    def __init__(self, name: str = "neuronviz-worker") -> None:
        self.name = name
        self.lock = threading.RLock()
        self._wake = threading.Condition(self.lock)
        self._ids = itertools.count(1)
        self._latest: Job | None = None
        self._pending: Job | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        _live_workers.add(self)

    # ------------------------------------------------------------------ public

    @property
    def latest(self) -> Job | None:
        """The most recently submitted job (None before the first)."""
        return self._latest

    @property
    def busy(self) -> bool:
        """Whether the latest job has not finished yet."""
        job = self._latest
        return job is not None and not job.finished

    def is_latest(self, job: Job) -> bool:
        """Whether ``job`` is the most recent submission (its outcome is not stale)."""
        return self._latest is job

    def submit(
        self,
        fn: Callable[[Job], Any],
        *,
        on_progress: Callable[[Job, int, int], None] | None = None,
        on_finish: Callable[[Job], None] | None = None,
    ) -> Job:
        """Queue ``fn`` to run in the worker thread, cancelling the job running or pending.

        Parameters
        ----------
        fn : callable
            ``fn(job)`` does the work and returns its result; it should call
            ``job.progress(done, total)`` or ``job.check()`` regularly so that it can be cancelled.
        on_progress : callable, optional
            ``on_progress(job, done, total)``, called from :meth:`Job.progress` while the job is
            the latest.
        on_finish : callable, optional
            ``on_finish(job)``, called once when the job ends, with ``job.state`` set to
            ``"done"``, ``"cancelled"`` or ``"error"``, unless a newer job was submitted
            meanwhile (stale outcomes are dropped silently).

        Returns
        -------
        Job
            The new job; its ``id`` is the run id.

        Raises
        ------
        RuntimeError
            The worker was closed.
        """
        with self.lock:
            if self._closed:
                raise RuntimeError("this worker was closed; create a new one")
            job = Job(next(self._ids), fn, on_progress, on_finish, worker=self)
            if self._latest is not None:
                self._latest.cancel()
            if self._pending is not None:  # never started: finish it at once
                self._finish(self._pending, "cancelled", notify=False)
            self._latest = self._pending = job
            self._ensure_thread()
            self._wake.notify_all()
        return job

    def cancel(self) -> Job | None:
        """Cancel the latest job (running or pending); returns it, or None if there is none.

        A cancelled job's ``on_finish`` runs with ``state == "cancelled"`` (from the worker
        thread for a running job, at once for a pending one).
        """
        with self.lock:
            job = self._latest
            if job is None or job.finished:
                return job
            job.cancel()
            if self._pending is job:
                self._pending = None
                self._finish(job, "cancelled", notify=True)
            return job

    def wait(self, timeout: float | None = None) -> Job | None:
        """Block until the latest job finished (including its ``on_finish`` callback).

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait at most; None waits as long as it takes.

        Returns
        -------
        Job or None
            The latest job, None if nothing was ever submitted.

        Raises
        ------
        TimeoutError
            The job is still running after ``timeout`` seconds.
        """
        while True:
            job = self._latest
            if job is None:
                return None
            if not job.wait(timeout):
                raise TimeoutError(f"run {job.id} did not finish within {timeout} s (it is still {job.state})")
            if job is self._latest:  # a newer job may have been submitted while waiting
                return job

    def close(self) -> None:
        """Cancel any job and stop the thread (it ends after the current job's work returns)."""
        with self.lock:
            self.cancel()
            self._closed = True
            self._wake.notify_all()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the thread ended (after :meth:`close`, once the current job's work returned).

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait at most.

        Returns
        -------
        bool
            Whether the thread has ended (always True when called from the worker thread itself,
            which cannot wait for itself).
        """
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        return not thread.is_alive()

    # ------------------------------------------------------------------ internals

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            with self.lock:
                while self._pending is None and not self._closed:
                    self._wake.wait()
                if self._pending is None:  # closed
                    return
                job, self._pending = self._pending, None
                job.state = "running"
            self._run(job)

    def _run(self, job: Job) -> None:
        state, result, error, tb = "done", None, None, None
        try:
            job.check()
            fn = job._fn
            if fn is None:  # finished before it started (cancelled while pending)
                raise JobCancelled(f"run {job.id} was cancelled")
            result = fn(job)
        except JobCancelled:
            state = "cancelled"
        except BaseException as err:  # noqa: BLE001 - the widget shows every error to the user
            state, error, tb = "error", err, traceback.format_exc()
        with self.lock:
            if state == "done" and job.cancelled:
                state, result = "cancelled", None  # finished just as it was cancelled: drop it
            job.result, job.error, job.traceback = result, error, tb
            self._finish(job, state, notify=self._latest is job)

    def _finish(self, job: Job, state: str, *, notify: bool) -> None:
        """Set the final state, run ``on_finish`` (latest job only), then release waiters."""
        job.state = state
        try:
            if notify and job._on_finish is not None:
                job._on_finish(job)
        except BaseException as err:  # noqa: BLE001 - keep the thread alive, but never hide the error
            job.callback_error = err
            traceback.print_exc(file=sys.stderr)
        finally:
            job._fn = job._on_progress = job._on_finish = job._worker = None  # drop references to the widget's data
            job._finished.set()


@atexit.register
def _stop_workers_at_exit() -> None:
    # A daemon thread still inside torch when the interpreter tears down aborts the process
    # ("terminate called without an active exception"): cancel, and let each run reach a cancel point.
    workers = list(_live_workers)
    for worker in workers:
        worker.close()
    for worker in workers:
        thread = worker._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(EXIT_GRACE_S)
