"""The documentation builds with Sphinx with no warning, and its reference has every public name."""

from __future__ import annotations

import inspect
import os
import pathlib
import subprocess
import sys
import zlib

import pytest

import neuronviz as nv

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

pytest.importorskip("sphinx")
pytest.importorskip("myst_nb")
pytest.importorskip("numpydoc")
pytest.importorskip("furo")


def public_names() -> list[str]:
    """Every name the reference must hold: nv.__all__, and the members of its modules (nv.perturb, nv.saliency)."""
    names = []
    for name in nv.__all__:
        obj = getattr(nv, name)
        if inspect.ismodule(obj):
            names.append(obj.__name__)
            names += [f"{obj.__name__}.{m}" for m in obj.__all__]
        else:
            names.append(f"neuronviz.{name}")
    return names


def inventory(path: pathlib.Path) -> set[str]:
    """The object names of a Sphinx objects.inv (version 2: four header lines, then zlib)."""
    raw = path.read_bytes()
    lines = raw.split(b"\n", 4)
    assert lines[0].startswith(b"# Sphinx inventory version 2")
    body = zlib.decompress(lines[4]).decode()
    return {line.split(" ", 1)[0] for line in body.splitlines() if line.strip()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("docs")
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-d", str(out / "doctrees"),
           str(DOCS), str(out / "html")]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3000)
    warnings = [line for line in run.stderr.splitlines() if line.startswith("WARNING:") or ": WARNING:" in line]
    assert run.returncode == 0 and not warnings, f"sphinx-build -W failed:\n{run.stdout[-3000:]}\n{run.stderr[-8000:]}"
    return out / "html"


@pytest.mark.slow
def test_the_docs_build_with_no_warning(built):
    for page in ["index", "getting-started", "methods/input-resampling", "methods/pcace",
                 "methods/guided-feature-inversion", "views/explorer", "views/pcace-view", "views/inversion-view",
                 "views/app", "api/index", "progress-and-tables", "troubleshooting", "architecture", "citing"]:
        assert (built / f"{page}.html").is_file(), page


@pytest.mark.slow
def test_every_public_name_has_an_entry_in_the_reference(built):
    documented = inventory(built / "objects.inv")
    missing = [n for n in public_names() if n not in documented]
    assert not missing, f"not in the API reference: {missing}"


@pytest.mark.slow
def test_every_notebook_is_rendered_with_its_outputs(built):
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        html = (built / "notebooks" / f"{nb.stem}.html").read_text()
        if os.environ.get("NEURONVIZ_DOCS_EXECUTE", "1") != "0":
            assert "cell_output" in html and "<img" in html, f"{nb.name} is rendered without its outputs"


@pytest.mark.slow
def test_the_view_pages_show_their_screenshots(built):
    for page, shot in [("views/explorer", "explorer-jupyterlab.png"), ("views/pcace-view", "pcace-jupyterlab.png"),
                       ("views/inversion-view", "inversion-jupyterlab.png")]:
        assert shot in (built / f"{page}.html").read_text()
        assert (built / "_images" / shot).is_file()


def test_the_public_names_are_listed_from_the_package_itself():
    names = public_names()
    assert "neuronviz.score_neurons" in names and "neuronviz.core.perturb.Occlusion" in names
    assert "neuronviz.methods.saliency.iou" in names
    assert len(names) == len(set(names))
