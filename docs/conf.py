"""Sphinx configuration of the neuronviz documentation (``make docs`` builds it into docs/_build/html).

The API reference is generated from the code: ``api/index.rst`` is written here from
``neuronviz.__all__`` (grouped by the module each name comes from), autosummary writes a page
per name, autodoc and numpydoc render the docstrings. The notebooks of ``notebooks/`` are
rendered with their outputs: they are stored without outputs, so each is executed once (with
``NEURONVIZ_FAST=1``, as the test suite runs them) into ``docs/notebooks/``, and executed again
only when its source changes; myst-nb never executes anything itself. Set
``NEURONVIZ_DOCS_EXECUTE=0`` to render them without outputs.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import re
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

import neuronviz  # noqa: E402

project = "neuronviz"
author = "the neuronviz authors"
copyright = "the neuronviz authors, Apache-2.0"  # noqa: A001  (a Sphinx setting)
release = version = neuronviz.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_nb",
]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]

html_theme = "furo"
html_title = f"neuronviz {release}"
html_static_path: list[str] = []

# docstrings as they are: numpydoc sections, no cross-reference checking of every type name
nitpicky = False
autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "none"  # the numpydoc Parameters sections say the types
autodoc_mock_imports: list[str] = []
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_validation_checks: set[str] = set()
numpydoc_xref_param_type = False

# notebooks: rendered from the outputs stored in docs/notebooks, never executed by myst-nb
nb_execution_mode = "off"
nb_merge_streams = True
# a view's display data carries a PNG of the view: show it (the live widget needs a kernel)
nb_mime_priority_overrides = [("html", "application/vnd.jupyter.widget-view+json", 55)]
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
suppress_warnings = ["mystnb.unknown_mime_type"]

# ------------------------------------------------------------------------------------------
# the API reference: every name of neuronviz.__all__, grouped by where it is defined

GROUPS = [
    ("neuronviz.widgets", "Views"),
    ("neuronviz.methods.resampling", "Input resampling"),
    ("neuronviz.methods.baselines", "Input resampling"),
    ("neuronviz.core.perturb", "Input resampling"),
    ("neuronviz.methods.pcace", "PCACE and ACE"),
    ("neuronviz.methods.ace", "PCACE and ACE"),
    ("neuronviz.methods.inversion", "Guided feature inversion"),
    ("neuronviz.methods.saliency", "Guided feature inversion"),
    ("neuronviz.methods", "Other methods"),
    ("neuronviz.render", "Figures"),
    ("neuronviz.figures", "Figures"),
    ("neuronviz.models", "Models and data"),
    ("neuronviz.data", "Models and data"),
    ("neuronviz.core.errors", "Errors and warnings"),
    ("neuronviz.core", "Layers, capture and predictions"),
]
ORDER = ["Views", "Input resampling", "PCACE and ACE", "Guided feature inversion", "Other methods", "Figures",
         "Layers, capture and predictions", "Models and data", "Errors and warnings", "Other"]


def _group(obj: object) -> str:
    where = obj.__name__ if inspect.ismodule(obj) else getattr(obj, "__module__", "") or ""
    for prefix, title in GROUPS:
        if where == prefix or where.startswith(prefix + "."):
            return title
    return "Other"


def _module_page(alias: str, module: object) -> str:
    """A module's page: its functions and classes by autodoc, its constants and type aliases as data."""
    real = module.__name__
    data = [n for n in getattr(module, "__all__", [])
            if not (inspect.isclass(getattr(module, n)) or inspect.isroutine(getattr(module, n)))]
    lines = [f"``nv.{alias}``: {real}", "=" * (len(real) + 9 + len(alias)), "",
             f".. automodule:: {real}", "   :members:", "   :member-order: bysource"]
    if data:
        lines.append(f"   :exclude-members: {', '.join(data)}")
    lines.append("")
    for n in data:
        obj = getattr(module, n)
        if isinstance(obj, dict):  # e.g. names of classes: show the names
            obj = {k: getattr(v, "__name__", v) for k, v in obj.items()}
        value = (repr(obj) if not isinstance(obj, dict) else
                 "{" + ", ".join(f"{k!r}: {v if isinstance(v, str) else repr(v)}" for k, v in obj.items()) + "}")
        value = value.replace("\n", " ")
        lines += [f".. py:data:: {n}", f"   :module: {real}", f"   :value: {value[:200]}", ""]
    return "\n".join(lines)


def write_api_index() -> None:
    """docs/api/index.rst from neuronviz.__all__; a module (nv.perturb, nv.saliency) gets a page of its members."""
    groups: dict[str, dict[str, list[str]]] = {}
    pages: dict[str, str] = {}
    for name in neuronviz.__all__:
        obj = getattr(neuronviz, name)
        kind = "modules" if inspect.ismodule(obj) else "names"
        groups.setdefault(_group(obj), {"names": [], "modules": []})[kind].append(name)
    lines = [
        "API reference", "=============", "",
        "Every public name of ``neuronviz`` (``import neuronviz as nv``), generated from the docstrings.",
        "``nv.perturb`` is :mod:`neuronviz.core.perturb` and ``nv.saliency`` is",
        ":mod:`neuronviz.methods.saliency`.", "",
        ".. currentmodule:: neuronviz", "",
    ]
    for title in ORDER:
        if title not in groups:
            continue
        lines += [title, "-" * len(title), ""]
        names = groups[title]["names"]
        if names:
            lines += [".. autosummary::", "   :toctree: generated", "   :nosignatures:", ""]
            lines += [f"   {n}" for n in names] + [""]
        for mod in groups[title]["modules"]:
            real = getattr(neuronviz, mod).__name__
            lines += [".. toctree::", "   :maxdepth: 1", "", f"   {real}", ""]
            pages[real] = _module_page(mod, getattr(neuronviz, mod))
    api = DOCS / "api"
    api.mkdir(exist_ok=True)
    pages["index"] = "\n".join(lines)
    # autosummary keeps the stubs of names that left the API: drop them (they would be orphans)
    current = {f"neuronviz.{n}" for n in neuronviz.__all__}
    for stub in (api / "generated").glob("*.rst"):
        if stub.stem not in current:
            stub.unlink()
    for name, text in pages.items():
        page = api / f"{name}.rst"
        if not page.exists() or page.read_text() != text:  # unchanged: Sphinx keeps its cache
            page.write_text(text)


# ------------------------------------------------------------------------------------------
# the notebooks, executed once into docs/notebooks


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes() + release.encode()).hexdigest()


def execute_notebooks() -> None:
    """Copy notebooks/*.ipynb to docs/notebooks/, executed (unless NEURONVIZ_DOCS_EXECUTE=0)."""
    import nbformat

    out = DOCS / "notebooks"
    out.mkdir(exist_ok=True)
    execute = os.environ.get("NEURONVIZ_DOCS_EXECUTE", "1") != "0"
    sources = sorted((ROOT / "notebooks").glob("*.ipynb"))
    for stale in set(out.iterdir()) - {out / s.name for s in sources}:  # only the notebooks: no orphan page
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    for src in sources:
        dst = out / src.name
        digest = _digest(src) + ("" if execute else "-sources")
        if dst.exists() and nbformat.read(dst, as_version=4).metadata.get("neuronviz_docs", {}).get("source") == digest:
            continue
        nb = nbformat.read(src, as_version=4)
        has_outputs = any(c.get("outputs") for c in nb.cells if c.cell_type == "code")
        if execute and not has_outputs:
            _execute(nb, src.name)
        nb.metadata["neuronviz_docs"] = {"source": digest}
        nbformat.write(nb, dst)


def _execute(nb: object, name: str) -> None:
    from nbclient import NotebookClient

    print(f"neuronviz docs: executing notebooks/{name} (NEURONVIZ_FAST=1)", flush=True)
    saved = {k: os.environ.get(k) for k in ("NEURONVIZ_FAST", "MPLBACKEND", "PYTHONPATH")}
    os.environ["NEURONVIZ_FAST"] = "1"  # the notebooks shrink their settings, as in the test suite
    # the kernel imports the neuronviz these pages document
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), saved["PYTHONPATH"]) if p)
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    try:
        with tempfile.TemporaryDirectory() as tmp:  # files a notebook saves stay out of the repository
            NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": tmp}}).execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


write_api_index()
execute_notebooks()


# ------------------------------------------------------------------------------------------
# docstrings as they are, made safe for reStructuredText before numpydoc reads them

_LITERAL = re.compile(r"(``.*?``|`[^`]*`)")


def _escape_bars(line: str) -> str:
    """``|x|`` (an absolute value) outside literals and roles, escaped: reST would take it for a substitution."""
    if line.lstrip().startswith(("|", "+")):  # a line block or a grid table row
        return line
    parts = _LITERAL.split(line)
    return "".join(p if i % 2 else p.replace("|", r"\|") for i, p in enumerate(parts))


def _is_header(lines: list[str], i: int) -> bool:
    return (i + 1 < len(lines) and lines[i].strip() != "" and set(lines[i + 1].strip()) == {"-"}
            and len(lines[i + 1].strip()) >= len(lines[i].strip()) and not lines[i].startswith(" "))


def _python_interface_as_attributes(lines: list[str]) -> list[str]:
    """The views' "Python interface" section (properties and methods) becomes numpydoc's Attributes section."""
    heads = [i for i in range(len(lines)) if _is_header(lines, i)]
    named = {lines[i].strip().lower(): i for i in heads}
    start = named.get("python interface")
    if start is None:
        return lines
    end = next((i for i in heads if i > start), len(lines))
    block = lines[start + 2 : end]
    rest = lines[:start] + lines[end:]
    if "attributes" not in named:
        return lines[:start] + ["Attributes", "----------"] + block + lines[end:]
    heads = [i for i in range(len(rest)) if _is_header(rest, i)]
    att = next(i for i in heads if rest[i].strip().lower() == "attributes")
    att_end = next((i for i in heads if i > att), len(rest))
    while att_end > att + 2 and not rest[att_end - 1].strip():
        att_end -= 1
    return rest[:att_end] + block + rest[att_end:]


def _clean_docstring(app, what, name, obj, options, lines):  # noqa: ARG001  (the Sphinx event's signature)
    lines[:] = [_escape_bars(line) for line in _python_interface_as_attributes(list(lines))]


# numpydoc also parses the raw docstring for signatures, before the event above
warnings.filterwarnings("ignore", message=r"Unknown section Python [Ii]nterface", category=UserWarning)


def setup(app):
    """Register the docstring clean-up."""
    app.connect("autodoc-process-docstring", _clean_docstring, priority=100)  # before numpydoc (500)
