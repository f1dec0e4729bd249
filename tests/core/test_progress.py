"""progress=True / False / None / a callable: a tqdm bar in a terminal and a notebook, closed however a call ends."""

from __future__ import annotations

import io
import re
import sys

import nbformat
import pytest
import torch
from nbclient import NotebookClient
from tiny_nets import tiny_cnn

import neuronviz as nv
from neuronviz.core.errors import NeuronvizError
from neuronviz.core.progress import LONG_WORK, as_callback, is_long


class FakeTerminal(io.StringIO):
    """What tqdm writes to, claiming to be a terminal."""

    def isatty(self) -> bool:
        return True


def use_stderr(monkeypatch, out):
    # in the test body: pytest puts its own capture back on sys.stderr between setup and call
    monkeypatch.setattr(sys, "stderr", out)  # tqdm writes to sys.stderr as it is when the bar is made
    return out


def use_terminal(monkeypatch):
    return use_stderr(monkeypatch, FakeTerminal())


def use_pipe(monkeypatch):
    return use_stderr(monkeypatch, io.StringIO())  # isatty() is False: a log file, a CI job


def open_bars() -> int:
    from tqdm.auto import tqdm

    return len(getattr(tqdm, "_instances", ()))


def last_frame(text: str) -> str:
    return re.split(r"[\r\n]", text.rstrip("\n"))[-1]


X = torch.rand(1, 3, 8, 8)


def test_the_rule_of_long_counts_images_times_passes_and_a_data_set_of_unknown_size_is_long():
    assert not is_long(LONG_WORK - 1) and is_long(LONG_WORK)
    assert is_long(LONG_WORK // 2, passes=2) and not is_long(1, passes=LONG_WORK - 1)
    assert is_long(None)


def test_progress_true_draws_a_terminal_bar_that_ends_at_100_percent_and_is_closed(monkeypatch):
    terminal = use_terminal(monkeypatch)
    net = tiny_cnn()
    nv.score_neurons(net, X, "conv1", n_samples=12, batch_size=4, progress=True)
    text = terminal.getvalue()
    assert "score_neurons" in text
    assert "100%" in last_frame(text) and "12/12" in last_frame(text)
    assert text.endswith("\n")  # closed: the bar left its line
    assert open_bars() == 0


def test_a_failed_call_closes_its_bar_where_it_stopped_and_leaves_the_model_as_it_was(monkeypatch, snapshot):
    terminal = use_terminal(monkeypatch)
    net = tiny_cnn()
    snap = snapshot(net)

    def batches():
        yield torch.rand(4, 3, 8, 8)
        yield torch.rand(4, 3, 8, 8)
        raise KeyboardInterrupt  # the user pressed Ctrl-C during the third batch

    with pytest.raises(KeyboardInterrupt):
        nv.score_neurons(net, X, "conv1", samples=batches(), progress=True)
    text = terminal.getvalue()
    assert "8/8" in last_frame(text) or "8it" in last_frame(text)
    assert text.endswith("\n") and open_bars() == 0
    snap.assert_unchanged()


def test_progress_true_draws_nothing_when_the_output_is_not_a_terminal(monkeypatch):
    pipe = use_pipe(monkeypatch)
    nv.score_neurons(tiny_cnn(), X, "conv1", n_samples=12, progress=True)
    assert pipe.getvalue() == "" and open_bars() == 0


def test_by_default_a_short_call_is_silent_and_a_long_one_draws_a_bar(monkeypatch):
    terminal = use_terminal(monkeypatch)
    net = tiny_cnn()
    nv.score_neurons(net, X, "conv1", n_samples=LONG_WORK - 1, batch_size=64)
    assert terminal.getvalue() == ""
    nv.score_neurons(net, X, "conv1", n_samples=LONG_WORK, batch_size=64)
    assert f"{LONG_WORK}/{LONG_WORK}" in last_frame(terminal.getvalue())


def test_by_default_a_loader_draws_a_bar(monkeypatch):
    terminal = use_terminal(monkeypatch)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.rand(10, 3, 8, 8)), batch_size=5)
    nv.score_neurons(tiny_cnn(), X, "conv1", samples=(b for (b,) in loader))
    assert "score_neurons" in terminal.getvalue()


def test_progress_false_draws_nothing_even_for_a_long_call(monkeypatch):
    terminal = use_terminal(monkeypatch)
    nv.score_neurons(tiny_cnn(), X, "conv1", n_samples=LONG_WORK, batch_size=64, progress=False)
    assert terminal.getvalue() == ""


def test_a_callable_is_called_as_before_and_no_bar_is_drawn(monkeypatch):
    terminal = use_terminal(monkeypatch)
    calls = []
    nv.score_neurons(tiny_cnn(), X, "conv1", n_samples=8, batch_size=4, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(4, 8), (8, 8)] and terminal.getvalue() == ""


def test_a_bad_progress_value_says_what_it_accepts():
    with pytest.raises(NeuronvizError, match="progress must be True"):
        nv.score_neurons(tiny_cnn(), X, "conv1", n_samples=8, progress="yes")


def test_a_call_that_fails_its_checks_draws_no_bar(monkeypatch):
    terminal = use_terminal(monkeypatch)
    with pytest.raises(NeuronvizError):
        nv.score_neurons(tiny_cnn(), X, "no_such_layer", n_samples=8, progress=True)
    assert terminal.getvalue() == "" and open_bars() == 0


def test_pcace_draws_one_bar_of_its_own_over_its_images(monkeypatch):
    terminal = use_terminal(monkeypatch)
    torch.manual_seed(0)
    images = torch.rand(40, 3, 8, 8)
    nv.pcace(tiny_cnn(), images, "relu1", 0, batch_size=8, progress=True)
    text = terminal.getvalue()
    assert "pcace" in text and "rank_layers" not in text
    assert "40/40" in last_frame(text) and open_bars() == 0


def test_rank_layers_draws_a_bar_when_asked(monkeypatch):
    terminal = use_terminal(monkeypatch)
    nv.rank_layers(tiny_cnn(), torch.rand(40, 3, 8, 8), ["relu1", "relu2"], 0, batch_size=8, progress=True)
    assert "rank_layers" in terminal.getvalue() and "40/40" in last_frame(terminal.getvalue())


def test_guided_feature_inversion_draws_a_bar_of_steps_by_default(monkeypatch):
    terminal = use_terminal(monkeypatch)
    nv.guided_feature_inversion(tiny_cnn(), X, mask_layer="relu1", feature_layer="relu2", stage1_steps=40,
                                stage2_steps=30)  # 1 image x 70 steps x 3 passes >= LONG_WORK
    assert "70/70" in last_frame(terminal.getvalue()) and "step" in terminal.getvalue()


def test_as_callback_closes_its_bar_when_the_block_raises(monkeypatch):
    terminal = use_terminal(monkeypatch)
    with pytest.raises(RuntimeError):
        with as_callback(True, desc="work") as report:
            report(3, 10)
            raise RuntimeError("failed")
    assert "3/10" in last_frame(terminal.getvalue()) and open_bars() == 0


def test_as_callback_passes_a_callable_through_and_gives_none_for_nothing():
    f = lambda d, t: None  # noqa: E731
    with as_callback(f) as report:
        assert report is f
    with as_callback(None, long=False) as report:
        assert report is None
    with as_callback(None, long=lambda: False) as report:
        assert report is None


@pytest.mark.slow
def test_a_long_call_in_a_notebook_shows_a_progress_widget(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import torch\n"
        "from torch import nn\n"
        "import neuronviz as nv\n"
        "net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))\n"
        f"scores = nv.score_neurons(net, torch.rand(1, 3, 8, 8), '1', n_samples={LONG_WORK}, batch_size=50)\n"
        "print(scores.n_samples)"
    )]
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = nb.cells[0].outputs
    assert not [o for o in outputs if o.output_type == "error"], outputs
    widgets = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert widgets, outputs
    # the widgets' last state (nbclient keeps it): a bar at its maximum
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    bars = [m["state"] for m in state.values() if m["model_name"] == "FloatProgressModel"]
    assert [(b["value"], b["max"]) for b in bars] == [(LONG_WORK, LONG_WORK)], bars
    stderr = [o.text for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    assert not stderr, stderr  # a widget, not a text bar (nor a warning that ipywidgets is missing)


@pytest.mark.slow
def test_the_command_line_draws_a_bar_on_a_terminal(monkeypatch, tmp_path):
    from neuronviz.__main__ import main

    terminal = use_terminal(monkeypatch)
    assert main(["demo", "--out", str(tmp_path / "d.png"), "--n-samples", "6", "--layers", "blocks.15"]) == 0
    assert "score_neurons" in terminal.getvalue() and "6/6" in terminal.getvalue()
