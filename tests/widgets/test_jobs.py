"""The background worker: one job at a time, newer runs supersede older ones, cancel, errors, waiting."""

from __future__ import annotations

import threading

import pytest

from neuronviz.widgets.jobs import JobCancelled, Worker


def _recorder():
    seen: list[tuple[int, str, object]] = []

    def on_finish(job):
        seen.append((job.id, job.state, job.result if job.state == "done" else job.error))

    return seen, on_finish


def test_a_result_finished_after_a_newer_submission_is_dropped():
    worker = Worker()
    seen, on_finish = _recorder()
    started, gate = threading.Event(), threading.Event()

    def old(job):
        started.set()
        gate.wait(10)
        return "old"  # completes without another progress call: only the run id can reject it

    a = worker.submit(old, on_finish=on_finish)
    assert started.wait(10)
    b = worker.submit(lambda job: "new", on_finish=on_finish)
    gate.set()
    assert worker.wait(10) is b
    assert seen == [(b.id, "done", "new")]
    assert a.state == "cancelled" and a.result is None
    assert b.id > a.id
    worker.close()


def test_progress_raises_once_cancelled_and_the_job_ends_cancelled():
    worker = Worker()
    seen, on_finish = _recorder()
    reported, go_on = [], threading.Event()

    def work(job):
        job.progress(1, 3)
        go_on.wait(10)
        job.progress(2, 3)  # raises: cancelled meanwhile
        reported.append("after cancel")
        return "finished"

    job = worker.submit(work, on_progress=lambda j, d, t: reported.append((d, t)), on_finish=on_finish)
    while not reported:
        threading.Event().wait(0.01)
    worker.cancel()
    go_on.set()
    worker.wait(10)
    assert job.state == "cancelled"
    assert reported == [(1, 3)]
    assert seen == [(job.id, "cancelled", None)]
    worker.close()


def test_an_error_in_the_work_is_kept_with_its_traceback():
    worker = Worker()
    seen, on_finish = _recorder()

    def boom(job):
        raise ZeroDivisionError("no luck")

    job = worker.submit(boom, on_finish=on_finish)
    worker.wait(10)
    assert job.state == "error"
    assert isinstance(job.error, ZeroDivisionError) and "no luck" in job.traceback
    assert seen == [(job.id, "error", job.error)]
    # the thread survives an error: the next job runs
    again = worker.submit(lambda j: 2 + 2)
    worker.wait(10)
    assert again.state == "done" and again.result == 4
    worker.close()


def test_wait_raises_timeout_while_the_job_runs():
    worker = Worker()
    gate = threading.Event()
    worker.submit(lambda job: gate.wait(10))
    with pytest.raises(TimeoutError):
        worker.wait(timeout=0.05)
    gate.set()
    assert worker.wait(10).state == "done"
    worker.close()


def test_a_pending_job_superseded_before_it_starts_never_runs():
    worker = Worker()
    gate, ran = threading.Event(), []
    started = threading.Event()

    def first(job):
        started.set()
        gate.wait(10)
        job.check()

    worker.submit(first)
    assert started.wait(10)
    skipped = worker.submit(lambda job: ran.append("skipped"))
    last = worker.submit(lambda job: ran.append("last"))
    gate.set()
    worker.wait(10)
    assert ran == ["last"]
    assert skipped.state == "cancelled" and last.state == "done"
    worker.close()


def test_check_raises_job_cancelled_after_cancel():
    worker = Worker()
    gate = threading.Event()
    job = worker.submit(lambda j: (gate.wait(10), j.check()))
    job.cancel()
    with pytest.raises(JobCancelled):
        job.check()
    gate.set()
    worker.wait(10)
    assert job.state == "cancelled"
    worker.close()


def test_a_script_that_exits_during_a_run_exits_cleanly(tmp_path):
    import subprocess
    import sys
    import textwrap

    script = tmp_path / "exit_during_run.py"
    script.write_text(textwrap.dedent("""
        import time
        import torch
        from neuronviz.widgets.jobs import Worker

        def work(job):
            a = torch.randn(400, 400)
            for i in range(10_000):
                job.progress(i, 10_000)
                a = torch.tanh(a @ a.T / 400)  # inside torch most of the time
            return a

        worker = Worker()
        job = worker.submit(work)
        while job.state != "running":
            time.sleep(0.01)
        time.sleep(0.3)
        print("exiting while", job.state, flush=True)
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "exiting while running" in done.stdout
    assert "terminate called" not in done.stderr
