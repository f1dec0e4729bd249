"""The explorer's intervals: whiskers for each top-k, rank intervals and ties, stability, and the export."""

from __future__ import annotations

import csv
import json

from explorer_nets import gated_cnn, image

from neuronviz.widgets import NeuronExplorer


def test_the_explorer_shows_and_exports_the_intervals_of_its_run(tmp_path):
    w = NeuronExplorer(gated_cnn(), image(), ["conv1", "conv2"], n_samples=12, live=False)
    try:
        w.wait(60)
        s = w.scores
        assert s.replicates is not None
        top = s.top("correlation", w.top_k)
        iv = s.interval("correlation", 0.9)
        layer, c = "conv2", top["conv2"][0]
        row = w.intervals.rows[(layer, c)]
        assert row["correlation_lo"] == float(iv[layer][0][c]) and row["correlation_hi"] == float(iv[layer][1][c])
        assert len(w.intervals.h_mark.x) == len(w.intervals.whiskers) > 0
        i = w.scatter.index[(layer, c)]
        k = w.intervals.whiskers.index((layer, c))
        assert list(w.intervals.h_mark.x[k]) == [row["correlation_lo"], row["correlation_hi"]]
        assert list(w.intervals.h_mark.y[k]) == [w.scatter.y[i]] * 2
        assert "rank intervals" in w.intervals.table.value and "Jaccard" in w.intervals.stability.value
        assert w.intervals.stability in w.lists.widget.children
        w.export_scores(tmp_path / "s.csv")
        rows = list(csv.DictReader((tmp_path / "s.csv").open()))
        got = next(r for r in rows if r["layer"] == layer and int(r["channel"]) == c)
        assert float(got["correlation_lo"]) == row["correlation_lo"] and got["tied_correlation"] in ("True", "False")
        w.export_scores(tmp_path / "s.json")
        doc = json.loads((tmp_path / "s.json").read_text())
        assert {"correlation_rank_lo", "precision_hi", "tied_precision"} <= set(doc["neurons"][0])
    finally:
        w.close()
