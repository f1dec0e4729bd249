"""Calls on one model from several threads take turns on the model's lock, and leave it bit-identical."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from tiny_nets import tiny_cnn

import neuronviz as nv
from neuronviz.core.locks import hold_model, is_held, model_lock, runs_model

LAYERS = {"mask_layer": "conv1", "feature_layer": "conv2"}


def image(seed: int = 1) -> torch.Tensor:
    return torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def images(n: int = 24) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(2))


def run_functions(net) -> dict:
    """One result of each method, as plain tensors."""
    x = image()
    scores = nv.score_neurons(net, x, ["conv2"], n_samples=16, target=1)
    ranked = nv.pcace(net, images(), "conv2", target=1)
    masks = nv.guided_feature_inversion(net, x, target=1, stage1_steps=3, stage2_steps=3, **LAYERS)
    return {
        "correlation": scores.correlation["conv2"], "precision": scores.precision["conv2"],
        "pcace": ranked.scores, "mask": masks.mask, "inversion_mask": masks.inversion_mask,
    }


def start_explorer(net) -> nv.NeuronExplorer:
    """An explorer whose run starts in its background thread at once (autorun)."""
    return nv.NeuronExplorer(net, image(), layers=["conv2"], n_samples=16, target=1)


def explorer_result(view) -> dict:
    view.wait(120)
    assert view.status == "done", view.status
    result = {"explorer_correlation": view.scores.correlation["conv2"],
              "explorer_precision": view.scores.precision["conv2"]}
    view.close()
    return result


def count_concurrent_passes(net) -> tuple[dict, list]:
    """Hooks counting forward passes in progress at once (``peak``); returns them to be removed."""
    state = {"active": 0, "peak": 0, "passes": 0}
    guard = threading.Lock()

    def enter(module, args):
        with guard:
            state["active"] += 1
            state["passes"] += 1
            state["peak"] = max(state["peak"], state["active"])
        time.sleep(0.001)  # widen each pass, so that two unlocked threads would meet

    def leave(module, args, output):
        with guard:
            state["active"] -= 1

    return state, [net.register_forward_pre_hook(enter), net.register_forward_hook(leave)]


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]) or torch.allclose(a[key], b[key], rtol=0, atol=0, equal_nan=True), key


@pytest.mark.slow
def test_four_kinds_of_call_from_threads_equal_sequential_calls_and_leave_a_train_mode_model_bit_identical(snapshot):
    net = tiny_cnn()  # train mode, BatchNorm with non-trivial running statistics, Dropout
    snap = snapshot(net)
    state, handles = count_concurrent_passes(net)
    expected = run_functions(net)
    expected_view = explorer_result(start_explorer(net))
    one_run = state["passes"]
    for h in handles:
        h.remove()
    snap.assert_unchanged()

    state, handles = count_concurrent_passes(net)
    results: list[dict] = []
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def worker() -> None:
        try:
            start.wait()
            results.append(run_functions(net))
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    views = [start_explorer(net) for _ in range(3)]  # their runs compete with the threads' calls
    for t in threads:
        t.join(300)
    got_views = [explorer_result(v) for v in views]
    for h in handles:
        h.remove()
    assert not errors, errors
    assert len(results) == 3
    for got in results:
        assert_same(got, expected)
    for got in got_views:
        assert_same(got, expected_view)
    assert state["passes"] == 3 * one_run and state["peak"] == 1  # never two forward passes at once
    assert not model_lock(net).locked()
    snap.assert_unchanged()  # running statistics, modes, requires_grad, no hooks


def test_functions_called_from_threads_take_turns_and_give_sequential_results(snapshot):
    net = tiny_cnn()
    snap = snapshot(net)
    x = image()
    calls = {
        "score": lambda: nv.score_neurons(net, x, ["conv2"], n_samples=12, target=1).correlation["conv2"],
        "pcace": lambda: nv.pcace(net, images(20), "conv2", target=1).scores,
        "invert": lambda: nv.guided_feature_inversion(net, x, target=1, stage1_steps=2, stage2_steps=2,
                                                      **LAYERS).mask,
        "summary": lambda: torch.tensor([info.channels for info in nv.layer_summary(net, x)]),
        "top": lambda: torch.tensor([p for _, _, p in nv.top_predictions(net, x, k=3)]),
    }
    state, handles = count_concurrent_passes(net)
    expected = {name: fn() for name, fn in calls.items()}
    one_round = state["passes"]
    for h in handles:
        h.remove()
    state, handles = count_concurrent_passes(net)
    got: dict[str, list] = {name: [] for name in calls}
    errors: list[BaseException] = []
    start = threading.Barrier(2 * len(calls))

    def worker(name: str) -> None:
        try:
            start.wait()
            got[name].append(calls[name]())
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(name,)) for name in calls for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for h in handles:
        h.remove()
    assert not errors, errors
    for name, values in got.items():
        assert len(values) == 2
        for v in values:
            assert torch.equal(v.nan_to_num(-1), expected[name].nan_to_num(-1)), name
    assert state["peak"] == 1 and state["passes"] == 2 * one_round
    snap.assert_unchanged()


def test_a_call_waits_while_another_thread_holds_the_model_and_runs_once_it_is_free():
    net = tiny_cnn()
    done = threading.Event()

    def call() -> None:
        nv.score_neurons(net, image(), "conv2", n_samples=6, target=1)
        done.set()

    with hold_model(net):  # as a view's background run does
        t = threading.Thread(target=call)
        t.start()
        time.sleep(0.3)
        assert not done.is_set() and model_lock(net).locked()
    t.join(30)
    assert done.is_set() and not model_lock(net).locked()


def test_the_lock_is_reentrant_and_held_during_a_call():
    net = tiny_cnn()
    seen = []

    def progress(done: int, total: int) -> None:
        seen.append(is_held(net))
        nv.top_predictions(net, image())  # the same thread takes the lock again: no deadlock

    nv.score_neurons(net, image(), "conv2", n_samples=6, target=1, progress=progress)
    assert seen and all(seen) and not is_held(net)


def test_a_capture_block_holds_the_model_for_its_thread():
    net = tiny_cnn()
    with nv.capture(net, "conv2") as rec:
        assert is_held(net)
        net.eval()
        net(image())
        net.train()
    assert rec.layers == ["conv2"] and not is_held(net)


def test_the_lock_is_released_when_a_call_fails_or_is_interrupted():
    net = tiny_cnn()
    with pytest.raises(nv.NeuronvizError):
        nv.score_neurons(net, image(), "conv9")

    def stop(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        nv.score_neurons(net, image(), "conv2", n_samples=40, batch_size=4, target=1, progress=stop)
    assert not model_lock(net).locked()


def test_runs_model_checks_the_arguments_before_taking_the_lock():
    @runs_model
    def f(model, n: int = 1):
        assert is_held(model)
        return type(n)

    net = tiny_cnn()
    import numpy as np

    assert f(net, np.int64(3)) is int  # numpy scalars arrive as Python ones
    with pytest.raises(nv.NeuronvizTypeError, match="parameters are: model, n"):
        f(net, m=3)
    with pytest.raises(nv.NeuronvizTypeError, match="torch.nn.Module, got function"):
        f(lambda x: x)
    assert not model_lock(net).locked()
