"""Fixtures of the browser tests: Jupyter servers, headless Chromium, notebook pages, screenshots.

The tests skip, loudly, when Chromium, playwright or a server is missing; with
``NEURONVIZ_REQUIRE_BROWSER=1`` (set by CI) they fail instead. Screenshots go to
``$NEURONVIZ_SCREENSHOTS`` when it is set, else to a pytest temporary folder; a failing
test leaves a screenshot of its page there too.
"""

from __future__ import annotations

import atexit
import os
import pathlib
import re
from dataclasses import dataclass

import pytest

import pages
import servers

MISSING = servers.missing_requirements()
REQUIRED = os.environ.get("NEURONVIZ_REQUIRE_BROWSER", "") not in ("", "0")
_skipped: list[str] = []
_screenshot_dirs: list[pathlib.Path] = []


def _banner() -> str:
    return "BROWSER TESTS SKIPPED: " + "; ".join(MISSING)


def pytest_report_header(config):
    if MISSING:
        return [_banner() + (" (NEURONVIZ_REQUIRE_BROWSER=1: they will FAIL)" if REQUIRED else "")]
    return None


def pytest_terminal_summary(terminalreporter):
    if _skipped:
        n = sum("BROWSER TESTS SKIPPED" in str(rep.longrepr) for rep in terminalreporter.stats.get("skipped", []))
        terminalreporter.write_sep("!", _banner(), red=True, bold=True)
        terminalreporter.write_line(
            f"{n} browser tests did not run. Install chromium (apt-get install chromium) and the test "
            "extra (pip install -e '.[test]') to run them; NEURONVIZ_REQUIRE_BROWSER=1 turns this skip into a failure.",
            red=True,
        )
    if _screenshot_dirs:
        terminalreporter.write_line(f"browser screenshots: {_screenshot_dirs[0]}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)  # the page fixtures screenshot failed tests
    return rep


@pytest.fixture(scope="session")
def browser_requirements():
    """Skip (or, under NEURONVIZ_REQUIRE_BROWSER=1, fail) when the browser tests cannot run here."""
    if MISSING:
        if REQUIRED:
            pytest.fail(
                "BROWSER TESTS FAILED: " + "; ".join(MISSING) + " (NEURONVIZ_REQUIRE_BROWSER=1 is set)", pytrace=False
            )
        _skipped.append(_banner())
        pytest.skip(_banner())


@pytest.fixture(scope="session")
def browser(browser_requirements):
    """A headless system Chromium for the whole session."""
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    try:
        chromium = servers.launch_chromium(pw)
        try:
            yield chromium
        finally:
            chromium.close()
    finally:
        pw.stop()


@pytest.fixture(scope="session")
def notebook_root(tmp_path_factory) -> pathlib.Path:
    """Folder the servers serve; each test writes its notebook here."""
    return tmp_path_factory.mktemp("notebooks")


@pytest.fixture(scope="session")
def jupyter_servers(browser_requirements, notebook_root, tmp_path_factory):
    """``jupyter_servers(kind)``: the session's server of that kind, started on first use.

    All are stopped by their process ids at the end of the session, failures included.
    """
    running: dict[str, servers.Server] = {}
    home = tmp_path_factory.mktemp("jupyter-home")

    def stop_all() -> None:
        for server in running.values():
            server.stop()

    atexit.register(stop_all)  # also when the session is interrupted before the teardown

    def get(kind: str) -> servers.Server:
        if kind not in running:
            running[kind] = servers.start_server(kind, notebook_root, home)
        return running[kind]

    try:
        yield get
    finally:
        stop_all()
        atexit.unregister(stop_all)


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory) -> pathlib.Path:
    """Where screenshots go: ``$NEURONVIZ_SCREENSHOTS`` or a pytest temporary folder."""
    env = os.environ.get("NEURONVIZ_SCREENSHOTS")
    path = pathlib.Path(env) if env else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    _screenshot_dirs.append(path)
    return path


@dataclass
class NotebookPage:
    """A notebook opened in the browser: its page, the server, the notebook's file name and the front end."""

    page: object
    server: servers.Server
    name: str
    kind: str


class NotebookOpener:
    """Writes notebooks into the served folder and opens them in new browser pages; closes them all."""

    def __init__(self, stem: str, browser, get_server, root: pathlib.Path, screenshot_dir: pathlib.Path) -> None:
        self.stem = re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-")
        self.browser, self.get_server, self.root, self.screenshot_dir = browser, get_server, root, screenshot_dir
        self.opened: list[NotebookPage] = []

    def __call__(self, kind: str, cells: list[str], *, width: int = 1500, height: int = 1100) -> NotebookPage:
        name = f"{self.stem}-{kind}-{len(self.opened)}.ipynb"
        servers.write_notebook(self.root / name, cells)
        server = self.get_server(kind)
        context = self.browser.new_context(viewport={"width": width, "height": height})
        page = context.new_page()
        page.set_default_timeout(pages.RENDER_TIMEOUT_S * 1000)
        nb = NotebookPage(page, server, name, kind)
        self.opened.append(nb)
        pages.open_notebook(page, server.notebook_url(name), kind)
        return nb

    def screenshot(self, nb: NotebookPage, label: str) -> None:
        """Save a full-page screenshot named after ``label`` (never raises: a crashed page has none)."""
        try:
            nb.page.screenshot(path=str(self.screenshot_dir / f"{label}.png"), full_page=True)
        except Exception:  # noqa: BLE001
            pass

    def close(self, failed: bool) -> None:
        """Close every page (screenshotted first if ``failed``) and shut down the kernels."""
        for nb in self.opened:
            try:
                if failed:
                    self.screenshot(nb, f"FAILED-{nb.name}")
                nb.page.context.close()
            finally:
                nb.server.shutdown_kernels()


def _failed(node) -> bool:
    return any(getattr(getattr(node, f"rep_{when}", None), "failed", False) for when in ("setup", "call"))


@pytest.fixture
def open_notebook(request, browser, jupyter_servers, notebook_root, screenshot_dir):
    """``open_notebook(kind, cells)``: write a notebook of these code cells and open it in a new page.

    ``kind`` is ``"lab"``, ``"notebook"`` or ``"voila"``. Lab and notebook pages are returned
    with their kernel idle and nothing run; a voila page runs the notebook as it loads.
    At the end of the test the page is closed (screenshotted first when the test failed)
    and the kernels of the lab and notebook servers are shut down.
    """
    opener = NotebookOpener(request.node.name, browser, jupyter_servers, notebook_root, screenshot_dir)
    yield opener
    opener.close(_failed(request.node))


@pytest.fixture(scope="module")
def open_module_notebook(request, browser, jupyter_servers, notebook_root, screenshot_dir):
    """As ``open_notebook``, for a page that the tests of a module share (closed after the module).

    The page is screenshotted before it is closed when a test of the module failed, its
    set-up included.
    """
    opener = NotebookOpener(request.node.name.removesuffix(".py"), browser, jupyter_servers, notebook_root,
                            screenshot_dir)
    failures = request.session.testsfailed
    yield opener
    opener.close(failed=request.session.testsfailed > failures)


@pytest.fixture
def screenshot_on_failure(request, screenshot_dir):
    """``screenshot_on_failure(nb)``: screenshot a shared page at the end of this test if the test failed."""
    watched: list[NotebookPage] = []
    yield watched.append
    if _failed(request.node):
        for nb in watched:
            try:
                nb.page.screenshot(path=str(screenshot_dir / f"FAILED-{request.node.name}.png"), full_page=True)
            except Exception:  # noqa: BLE001 - a crashed page has no screenshot; the failure is what matters
                pass
