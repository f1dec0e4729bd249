"""The view example of docs/architecture.md runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from tiny_nets import tiny_cnn

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


def _example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert blocks, "docs/architecture.md has no python example"
    return blocks[-1]


def test_the_smallest_view_of_the_architecture_page_runs_and_exports(tmp_path):
    scope: dict = {}
    exec(compile(_example(), str(DOC), "exec"), scope)
    net = tiny_cnn()
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    w = scope["MeanActivations"](net, x, n_samples=8)
    w.wait(60)
    assert w.status == "done", w.error
    means = w.outcome.result
    top = means.argsort(descending=True)[:5].tolist()
    assert str(top) in w.text.value
    w.top_k = 2
    assert str(top[:2]) in w.text.value
    assert w.export(tmp_path / "means.png").read_bytes()[:4] == b"\x89PNG"
    w.close()
