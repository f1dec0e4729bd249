"""The explorer's exports: the view as PNG / SVG / PDF drawn in the kernel, the scores as CSV / JSON."""

from __future__ import annotations

import csv
import json
import math
import xml.etree.ElementTree as ET

import pytest
from explorer_nets import gated_cnn, image

import neuronviz as nv
from neuronviz.widgets import NeuronExplorer

LAYERS = ["conv1", "conv2"]


@pytest.fixture(scope="module")
def w():
    explorer = NeuronExplorer(gated_cnn(), image(), LAYERS, n_samples=6, top_k=2)
    explorer.wait(60)
    assert explorer.status == "done", explorer.error
    explorer.selected = ("conv2", 1)
    return explorer


def test_png_export_is_a_print_quality_png(w, tmp_path):
    path = w.export(tmp_path / "view.png", dpi=100)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert 20_000 < len(data) < 5_000_000
    from PIL import Image

    with Image.open(path) as im:
        assert im.width >= 1200  # 16.5 inches at 100 dpi, less the tight margins


def test_svg_export_parses_as_svg(w, tmp_path):
    path = w.export(tmp_path / "view.svg")
    root = ET.parse(path).getroot()
    assert root.tag.endswith("svg")
    assert 10_000 < path.stat().st_size < 20_000_000


def test_pdf_export_is_a_pdf(w, tmp_path):
    path = w.export(tmp_path / "view.PDF")
    data = path.read_bytes()
    assert data.startswith(b"%PDF") and b"%%EOF" in data[-1024:]
    assert 5_000 < len(data) < 20_000_000


def test_export_refuses_other_suffixes_and_early_calls(w, tmp_path):
    with pytest.raises(nv.NeuronvizError, match=r"\.png"):
        w.export(tmp_path / "view.jpg")
    with pytest.raises(nv.NeuronvizError, match="csv"):
        w.export_scores(tmp_path / "scores.xlsx")
    fresh = NeuronExplorer(gated_cnn(), image(), LAYERS, autorun=False)
    with pytest.raises(nv.NeuronvizError, match="run"):
        fresh.export(tmp_path / "view.png")
    with pytest.raises(nv.NeuronvizError, match="run"):
        fresh.export_scores(tmp_path / "scores.csv")


def test_the_export_button_writes_the_named_file(w, tmp_path):
    w.exporter.path.value = str(tmp_path / "button.svg")
    w.exporter.button.click()
    assert (tmp_path / "button.svg").exists()
    assert "button.svg" in w.exporter.message.value


def test_the_scores_button_writes_csv_beside_the_named_file(w, tmp_path):
    w.exporter.path.value = str(tmp_path / "named.png")
    w.scores_button.click()
    with (tmp_path / "named.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 6 + 4
    assert "named.csv" in w.exporter.message.value


def _expected_rows(scores: nv.NeuronScores, k: int):
    top_c, top_p = scores.top("correlation", k), scores.top("precision", k)
    for layer in scores.layers:
        for c in range(scores.correlation[layer].numel()):
            yield layer, c, (float(scores.correlation[layer][c]), float(scores.precision[layer][c]),
                             float(scores.mean_activation[layer][c])), c in top_c[layer], c in top_p[layer]


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b or math.isclose(a, b, rel_tol=1e-6)


def test_csv_scores_hold_one_row_per_channel_matching_the_scores(w, tmp_path):
    path = w.export_scores(tmp_path / "scores.csv")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    expected = list(_expected_rows(w.scores, w.top_k))
    assert len(rows) == len(expected) == 6 + 4
    assert list(rows[0])[:7] == ["layer", "channel", "correlation", "precision", "mean_activation",
                                 "top_by_correlation", "top_by_precision"]
    assert "correlation_lo" in rows[0] and "correlation_hi" in rows[0]  # the run's 90 % intervals follow
    for row, (layer, c, values, tc, tp) in zip(rows, expected):
        assert row["layer"] == layer and int(row["channel"]) == c
        got = (float(row["correlation"]), float(row["precision"]), float(row["mean_activation"]))
        assert all(_same(g, e) for g, e in zip(got, values)), (row, values)
        assert row["top_by_correlation"] == str(tc) and row["top_by_precision"] == str(tp)


def test_json_scores_are_strict_json_matching_the_scores(w, tmp_path):
    path = w.export_scores(tmp_path / "scores.json")
    doc = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert doc["n_samples"] == 6 and doc["top_k"] == w.top_k and doc["target"] == w.scores.target
    assert doc["settings"]["layers"] == LAYERS
    expected = list(_expected_rows(w.scores, w.top_k))
    assert len(doc["neurons"]) == len(expected)

    def back(v):
        return math.nan if v is None else math.inf if v == "inf" else float(v)

    for row, (layer, c, values, tc, tp) in zip(doc["neurons"], expected):
        assert (row["layer"], row["channel"]) == (layer, c)
        got = (back(row["correlation"]), back(row["precision"]), back(row["mean_activation"]))
        assert all(_same(g, e) for g, e in zip(got, values))
        assert (row["top_by_correlation"], row["top_by_precision"]) == (tc, tp)


def test_figure_returns_a_displayable_figure(w):
    fig = w.figure(dpi=50)
    assert fig._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"
    labels = {ax.get_label() for ax in fig.axes}
    assert {"overlay", "scatter", "detail"} <= labels
    assert any(label.startswith("ranked:precision:conv2") for label in labels)
