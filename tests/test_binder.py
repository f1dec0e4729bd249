"""The Binder files install what pyproject.toml declares, with PyTorch's CPU-only build."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).parent.parent
BINDER = ROOT / "binder"

# conda-forge package -> the distribution pip sees it as
CONDA_TO_PIP = {"pytorch-cpu": "torch", "pytorch": "torch", "torchvision": "torchvision"}
# conda packages that are the environment itself rather than a dependency of neuronviz
ENVIRONMENT = {"python", "pip"}


def pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def runtime_requirements() -> dict[str, Requirement]:
    reqs = [Requirement(r) for r in pyproject()["project"]["dependencies"]]
    return {canonicalize_name(r.name): r for r in reqs}


def environment_yml() -> tuple[list[str], list[str]]:
    """(channels, conda dependencies) of binder/environment.yml; only plain string entries are used."""
    channels, deps, section = [], [], None
    for raw in (BINDER / "environment.yml").read_text().splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line:
            continue
        if not line.startswith(" "):
            section = line.rstrip(":").strip()
            continue
        item = line.strip()
        if not item.startswith("- "):
            continue
        value = item[2:].strip()
        if section == "channels":
            channels.append(value)
        elif section == "dependencies":
            deps.append(value)
    return channels, deps


def conda_spec(dep: str) -> tuple[str, SpecifierSet]:
    """A conda match spec (``name``, ``name>=1.2``, ``name=3.11``) as a name and PEP 440 specifiers."""
    m = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(.*)", dep)
    assert m, f"cannot read the conda dependency {dep!r}"
    name, spec = m.group(1).lower(), m.group(2).replace(" ", "")
    if re.fullmatch(r"=[0-9.]+", spec):  # conda's "=3.11" means any 3.11.x
        spec = f"=={spec[1:]}.*"
    return name, SpecifierSet(spec)


def pip_installs() -> list[list[str]]:
    """The argument lists of every ``pip install`` in binder/postBuild."""
    found = []
    for line in (BINDER / "postBuild").read_text().splitlines():
        words = shlex.split(line, comments=True)
        if "pip" in words and "install" in words:
            found.append(words[words.index("install") + 1 :])
    return found


def lowest(spec: SpecifierSet) -> Version | None:
    floors = [Version(s.version.rstrip(".*")) for s in spec if s.operator in (">=", "==", "~=", ">")]
    return max(floors) if floors else None


def test_binder_uses_one_environment_definition():
    # repo2docker reads environment.yml and ignores a requirements.txt beside it: never keep both
    assert (BINDER / "environment.yml").is_file()
    assert not (BINDER / "requirements.txt").exists()
    assert not (ROOT / "environment.yml").exists() and not (ROOT / "requirements.txt").exists()


def test_postbuild_is_an_executable_script_that_stops_on_error():
    post = BINDER / "postBuild"
    text = post.read_text()
    assert text.startswith("#!/bin/bash\n")
    assert re.search(r"^set -e", text, re.M), "a failed install must fail the Binder build"
    assert os.access(post, os.X_OK), "repo2docker runs binder/postBuild as a program: chmod +x it"


def test_binder_installs_the_project_with_the_extras_it_needs():
    extras_declared = set(pyproject()["project"]["optional-dependencies"])
    targets = []
    for args in pip_installs():
        for arg in args:
            m = re.fullmatch(r"\.(?:\[([a-z0-9_,\-]+)\])?", arg)
            if m:
                targets.append(set(filter(None, (m.group(1) or "").split(","))))
    assert len(targets) == 1, "postBuild should install this repository once (pip install -e '.[notebook]')"
    extras = targets[0]
    assert "notebook" in extras, "Binder opens notebooks in JupyterLab: install the 'notebook' extra"
    assert extras <= extras_declared, f"extras {extras - extras_declared} are not in pyproject.toml"


def test_every_runtime_dependency_reaches_binder():
    # the project install brings every dependency; the ones conda installs first must satisfy
    # pyproject's bounds, or pip would replace them (torch with a CUDA wheel)
    required = runtime_requirements()
    _, deps = environment_yml()
    provided = {}
    for dep in deps:
        name, spec = conda_spec(dep)
        if name in ENVIRONMENT:
            continue
        assert name in CONDA_TO_PIP, f"binder installs {name!r}, which pyproject.toml does not declare"
        provided[canonicalize_name(CONDA_TO_PIP[name])] = spec
    for name, spec in provided.items():
        assert name in required, f"binder installs {name!r} but pyproject.toml's dependencies do not list it"
        floor = lowest(spec)
        want = required[name].specifier
        assert floor is not None and floor in want, (
            f"binder's {name} {spec} may be older than pyproject.toml's {name}{want}: "
            f"raise its bound in binder/environment.yml to {want}"
        )
    # the others come with the project's own install
    project_installed = any(re.fullmatch(r"\.(\[.*\])?", a) for args in pip_installs() for a in args)
    missing = sorted(n for n in required if n not in provided)
    assert not missing or project_installed, f"nothing in binder/ installs {missing}"


def test_binder_torch_is_the_cpu_only_build():
    channels, deps = environment_yml()
    names = [conda_spec(d)[0] for d in deps]
    assert "pytorch-cpu" in names, "install PyTorch as conda-forge's CPU-only build (pytorch-cpu)"
    assert not {"pytorch", "pytorch-gpu", "pytorch-cuda", "cudatoolkit", "cuda-version"} & set(names)
    assert channels == ["conda-forge"]
    assert "torchvision" in names, "torchvision from conda-forge follows the CPU torch; from pip it would not"


def test_binder_python_satisfies_requires_python():
    requires = SpecifierSet(pyproject()["project"]["requires-python"])
    pythons = [conda_spec(d)[1] for d in environment_yml()[1] if conda_spec(d)[0] == "python"]
    assert len(pythons) == 1, "pin the Python version in binder/environment.yml"
    floor = lowest(pythons[0])
    assert floor is not None and floor in requires


def test_binder_files_name_no_package_index():
    # every package comes from the conda-forge channel or pip's default index
    for path in BINDER.iterdir():
        text = path.read_text()
        assert "://" not in text and "index-url" not in text, f"{path.name} points at a package index"
