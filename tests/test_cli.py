"""The ``neuronviz`` command: demo figure, HTML report, layer listing, and one-line errors for bad input."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys

import pytest
from tiny_nets import tiny_cnn

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
    assert "demo" in out and "layers" in out and "report" in out


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


# ---------------------------------------------------------------------------------------------
# neuronviz report: the explorer as one HTML page


@pytest.mark.slow
@needs_default_model
def test_report_writes_the_explorer_page_with_the_settings_given(tmp_path, capsys):
    out = tmp_path / "report.html"
    args = ["--samples", "4", "--seed", "3", "--layers", "blocks.15", "--k", "2"]
    assert main(["report", "--out", str(out), *args]) == 0
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert 0 < page.count("class='nv-pt") <= 320  # blocks.15 has 320 channels; NaN scores are not drawn
    rows = dict(re.findall(r"<tr><th scope='row'>([^<]*)</th><td>([^<]*)</td></tr>", page))
    assert rows["samples"] == "4" and rows["seed"] == "3" and rows["layers"] == "blocks.15" and rows["top-k"] == "2"
    assert rows["model"] == "EfficientNetLite0" and rows["target"] == "Egyptian cat (285)"
    assert not re.search(r"https?:", page)
    assert f"wrote {out}" in capsys.readouterr().out


def test_report_refuses_a_non_html_output_before_any_work(tmp_path, capsys):
    assert main(["report", "--out", str(tmp_path / "report.png")]) == 2
    err = capsys.readouterr().err
    assert ".html" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_report_from_refuses_the_options_that_compute(tmp_path, capsys):
    code = main(["report", "--from", str(tmp_path / "run.nvz"), "--out", str(tmp_path / "r.html"), "--samples", "4"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--samples" in err and "--from" in err and "Traceback" not in err


def _tiny_view(kind: str):
    import torch

    from neuronviz.widgets import InversionView, NeuronExplorer, PCACEView

    g = torch.Generator().manual_seed(1)
    if kind == "explorer":
        return NeuronExplorer(tiny_cnn(), torch.randn(1, 3, 16, 16, generator=g), ["conv1", "conv2"], n_samples=6,
                              top_k=2)
    if kind == "pcace":
        return PCACEView(tiny_cnn(), torch.randn(40, 3, 16, 16, generator=g), ["conv1", "conv2"], top_k=2, n_shown=2)
    return InversionView(tiny_cnn(), torch.randn(1, 3, 16, 16, generator=g), stage1_steps=2, stage2_steps=3)


@pytest.mark.parametrize("kind", ["explorer", "pcace", "inversion"])
def test_report_from_a_saved_view_writes_its_page_without_a_model(tmp_path, capsys, kind):
    w = _tiny_view(kind)
    try:
        w.wait(60)
        assert w.status == "done", w.error
        w.save(tmp_path / "run.nvz")
        direct = w.export(tmp_path / "direct.html").read_text(encoding="utf-8")
    finally:
        w.close()
    out = tmp_path / "report.html"
    assert main(["report", "--from", str(tmp_path / "run.nvz"), "--out", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert f"nv-page-{kind}" in page and "<td>Sequential</td>" in page  # the model it was made with
    assert page == direct  # the same panels, drawn from the saved result: the same page
    assert "wrote" in capsys.readouterr().out


def test_report_from_a_missing_or_damaged_file_exits_2(tmp_path, capsys):
    bad = tmp_path / "run.nvz"
    bad.write_bytes(b"not an archive")
    for source in (tmp_path / "absent.nvz", bad):
        assert main(["report", "--from", str(source), "--out", str(tmp_path / "r.html")]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_report_help_lists_its_options(capsys):
    assert main(["report", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--out", "--from", "--image", "--layers", "--samples", "--seed", "--k", "--device"):
        assert option in out
