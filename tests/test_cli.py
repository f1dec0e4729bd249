"""The ``neuronviz`` command: demo figure, layer listing, and one-line errors for bad input."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from neuronviz.__main__ import main


def _default_model_importable() -> bool:
    try:
        importlib.import_module("neuronviz.models")
    except ImportError:
        return False
    return True


needs_default_model = pytest.mark.skipif(
    not _default_model_importable(), reason="neuronviz.models (the default model) is not importable"
)


@pytest.mark.slow
@needs_default_model
def test_demo_writes_a_png_and_prints_the_top_neurons_and_overlap(tmp_path, capsys):
    out = tmp_path / "d.png"
    assert main(["demo", "--out", str(out), "--n-samples", "6", "--layers", "blocks.15"]) == 0
    assert out.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    printed = capsys.readouterr().out
    assert str(out) in printed
    assert "top 5 by correlation" in printed and "top 5 by precision" in printed
    assert "blocks.15" in printed and "overlap" in printed


@needs_default_model
def test_unknown_layer_exits_2_with_a_suggestion_and_no_traceback(tmp_path, capsys):
    code = main(["demo", "--out", str(tmp_path / "d.png"), "--n-samples", "3", "--layers", "blocks15"])
    assert code == 2
    err = capsys.readouterr().err
    assert "blocks.15" in err  # the close name is suggested
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d.png").exists()


@needs_default_model
def test_unknown_sample_image_exits_2(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d.png"), "--image", "dgo"]) == 2
    err = capsys.readouterr().err
    assert "dgo" in err and "Traceback" not in err


def test_unsupported_output_suffix_exits_2_before_scoring(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d.jpg")]) == 2
    err = capsys.readouterr().err
    assert ".png" in err and "Traceback" not in err


@needs_default_model
def test_layers_lists_the_default_model_layers(capsys):
    assert main(["layers"]) == 0
    out = capsys.readouterr().out
    assert "blocks.15" in out.split()
    assert "(320, 7, 7)" in out


def test_help_exits_0_and_describes_the_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "demo" in out and "layers" in out


def test_demo_help_lists_its_options(capsys):
    assert main(["demo", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--out", "--image", "--layers", "--n-samples", "--k", "--seed", "--device"):
        assert option in out


def test_missing_command_is_a_usage_error(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().err


def test_python_dash_m_runs_the_command():
    done = subprocess.run([sys.executable, "-m", "neuronviz", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    assert "usage: neuronviz" in done.stdout
