"""Live mode of the view base: a changed setting runs by itself after a pause; partial results refine."""

from __future__ import annotations

import time

import pytest
from explorer_nets import gated_cnn, image

import neuronviz as nv
from neuronviz.widgets import NeuronExplorer
from neuronviz.widgets import explorer as explorer_module
from neuronviz.widgets import view as view_module

LAYERS = ["conv1", "conv2"]


@pytest.fixture
def w():
    ex = NeuronExplorer(gated_cnn(), image(), LAYERS, n_samples=6)
    ex.wait(60)
    yield ex
    ex.close()


def _runs(ex) -> list[str]:
    seen: list[str] = []
    ex.observe(lambda change: seen.append(change["new"]), "status")
    return seen


def test_live_is_on_by_default_after_a_fast_run_and_has_its_checkbox_in_the_run_bar(w):
    assert w.live is True
    assert "nv-live" in w.live_toggle._dom_classes
    assert w.live_toggle in w.run_bar.widget.children[0].children


def test_a_setting_changed_in_live_mode_runs_by_itself_twice_in_a_row(w):
    for seed in (3, 4):
        w.controls["seed"].value = seed
        w.wait(60)
        assert w.status == "done" and w.outcome.settings.seed == seed


def test_a_burst_of_changes_runs_only_the_last_setting(w):
    seen = _runs(w)
    for n in (7, 8, 9, 10, 11):
        w.controls["n_samples"].value = n
        time.sleep(0.02)
    w.wait(60)
    assert seen.count("running") == 1
    assert w.outcome.settings.n_samples == 11 and w.scores.n_samples == 11


def test_with_live_off_a_change_waits_for_run(w):
    w.live = False
    seen = _runs(w)
    w.controls["seed"].value = 9
    time.sleep(view_module.LIVE_DEBOUNCE_S * 2)
    assert seen == [] and "press Run" in w.run_bar.status.value
    assert w.outcome.settings.seed == 0


def test_an_explicit_choice_of_live_stays_after_runs():
    ex = NeuronExplorer(gated_cnn(), image(), LAYERS, n_samples=6, live=False)
    try:
        ex.wait(60)
        assert ex.live is False
        ex.live = True
        ex.run()
        ex.wait(60)
        assert ex.live is True
        with pytest.raises(nv.NeuronvizError, match="live"):
            ex.live = "yes"
    finally:
        ex.close()


def test_a_live_run_shows_the_copies_seen_so_far_then_the_whole_run(w, monkeypatch):
    partial: list[int] = []
    shown_before: list[int] = []
    original = w.show_partial

    def spy(scores):
        shown_before.append(w.scores.n_samples)  # the last complete picture is still the outcome
        partial.append(scores.n_samples)
        original(scores)

    monkeypatch.setattr(w, "show_partial", spy)
    monkeypatch.setattr(explorer_module, "PARTIAL_EVERY_S", 0.0)  # every batch's picture, however fast
    w.controls["n_samples"].value = 72  # a first batch of 8 (an early first picture), then batches of 16 on a CPU
    w.wait(60)
    assert partial == [8, 24]  # none in the last half (40, 56): the scores of all 72 copies come as the whole result
    assert shown_before == [6, 6]
    assert w.scores.n_samples == 72 and w.scatter.figure.title == "every channel"
    assert w.intervals.rows  # the complete run has its intervals again


def test_later_partial_pictures_are_spaced_out(w, monkeypatch):
    partial: list[int] = []
    original = w.show_partial
    monkeypatch.setattr(w, "show_partial", lambda scores: (partial.append(scores.n_samples), original(scores)))
    monkeypatch.setattr(explorer_module, "PARTIAL_EVERY_S", 3600.0)
    w.controls["n_samples"].value = 72  # batches end at 8, 24, 40, 56: only the first is shown
    w.wait(60)
    assert partial == [8] and w.scores.n_samples == 72


def test_a_pending_live_run_is_dropped_when_the_view_closes():
    ex = NeuronExplorer(gated_cnn(), image(), LAYERS, n_samples=6, live=True)
    ex.wait(60)
    seen = _runs(ex)
    ex.controls["seed"].value = 5
    ex.close()
    time.sleep(view_module.LIVE_DEBOUNCE_S * 2)
    assert "running" not in seen
