"""The README's Python examples run as written, one after the other, as a reader would paste them."""

from __future__ import annotations

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_the_readme_has_python_examples():
    assert len(python_blocks(README.read_text())) >= 4


@pytest.mark.slow
def test_every_python_block_of_the_readme_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # files the examples save land here
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace: dict = {"__name__": "readme"}
    for i, block in enumerate(python_blocks(README.read_text())):
        try:
            exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
        except Exception as err:
            raise AssertionError(f"README python block {i + 1} failed: {type(err).__name__}: {err}\n{block}") from err
    saved = sorted(p.name for p in tmp_path.iterdir())
    for name in ("explorer.pdf", "scores.csv", "figure.pdf", "inversion.png"):
        assert name in saved, f"the README says it saves {name}; saved: {saved}"
    assert (tmp_path / "explorer.pdf").read_bytes().startswith(b"%PDF")
    for view in [v for v in namespace.values() if hasattr(v, "close") and type(v).__name__.endswith(("Explorer", "View", "App"))]:
        view.close()
