"""Start and stop JupyterLab, Notebook 7 and Voila servers, and launch headless Chromium.

Shared by the browser tests (tests/browser/conftest.py) and the widget latency benchmark
(benchmarks/bench_widget_latency.py). Every server runs with a temporary HOME and
JUPYTER_* folders, so nothing is written into the real home, and is stopped by its own
process id, its kernels included.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

# Without the background-networking flags Chromium floods a closed network with refused connections.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
]

KINDS = ("lab", "notebook", "voila")

# Scripts of the servers sit beside the interpreter running this (the project's venv).
BIN = pathlib.Path(sys.executable).parent


def find_chromium() -> str | None:
    """Path of a system Chromium (``NEURONVIZ_CHROMIUM`` first, then the PATH), or None."""
    explicit = os.environ.get("NEURONVIZ_CHROMIUM")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def missing_requirements() -> list[str]:
    """What the browser tests need and this machine lacks, each said in words (empty if nothing)."""
    missing = []
    if find_chromium() is None:
        missing.append("chromium not found on the PATH (apt-get install chromium)")
    if importlib.util.find_spec("playwright") is None:
        missing.append("the Python package playwright is not installed")
    for script, package in (("jupyter-lab", "jupyterlab"), ("jupyter-notebook", "notebook"), ("voila", "voila")):
        if not (BIN / script).exists() and shutil.which(script) is None:
            missing.append(f"{script} not found (install {package})")
    return missing


def launch_chromium(playwright, *, headless: bool = True):
    """Launch the system Chromium through a started ``sync_playwright()`` object.

    Parameters
    ----------
    playwright : playwright.sync_api.Playwright
        The object ``sync_playwright().start()`` returns.
    headless : bool
        Run without a window.

    Returns
    -------
    playwright.sync_api.Browser
        The browser; close it when done.

    Raises
    ------
    RuntimeError
        If no Chromium is found.
    """
    path = find_chromium()
    if path is None:
        raise RuntimeError("chromium not found on the PATH; install it with `apt-get install chromium`")
    return playwright.chromium.launch(executable_path=path, headless=headless, args=CHROMIUM_ARGS)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def isolated_env(home: pathlib.Path) -> dict[str, str]:
    """Environment for a server whose home and Jupyter folders all lie under ``home``.

    Also switches off JupyterLab's "get Jupyter news?" pop-up, which covers part of the page.
    """
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    dirs = {
        "HOME": home,
        "JUPYTER_CONFIG_DIR": home / "jupyter-config",
        "JUPYTER_DATA_DIR": home / "jupyter-data",
        "JUPYTER_RUNTIME_DIR": home / "jupyter-runtime",
        "IPYTHONDIR": home / "ipython",
        "MPLCONFIGDIR": home / "matplotlib",
    }
    for name, path in dirs.items():
        path.mkdir(parents=True, exist_ok=True)
        env[name] = str(path)
    # User settings (JupyterLab and Notebook 7 read them from JUPYTER_CONFIG_DIR)
    settings = dirs["JUPYTER_CONFIG_DIR"] / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True, exist_ok=True)
    notification = {"fetchNews": "false", "checkForUpdates": False}
    (settings / "notification.jupyterlab-settings").write_text(json.dumps(notification))
    env.pop("JUPYTERLAB_SETTINGS_DIR", None)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # kernels start this interpreter
    env.pop("JUPYTER_PATH", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def write_notebook(path: pathlib.Path, cells: list[str]) -> pathlib.Path:
    """Write a notebook of code cells (no outputs) with the python3 kernel."""
    nb = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"},
            "language_info": {"name": "python"},
        },
        "cells": [
            {"cell_type": "code", "id": f"cell-{i}", "metadata": {}, "execution_count": None, "outputs": [],
             "source": src}
            for i, src in enumerate(cells)
        ],
    }
    path.write_text(json.dumps(nb, indent=1))
    return path


def _children(pid: int) -> list[int]:
    """Process ids of every descendant of ``pid`` (Linux /proc; empty elsewhere)."""
    parent_of: dict[int, int] = {}
    for entry in pathlib.Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
            parent_of[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent_of.items() if pp == p]
        found += kids
        frontier += kids
    return found


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass
class Server:
    """A running Jupyter or Voila server.

    Attributes
    ----------
    kind : str
        ``"lab"``, ``"notebook"`` or ``"voila"``.
    url : str
        Base address, e.g. ``http://127.0.0.1:PORT``.
    root_dir : pathlib.Path
        Folder it serves notebooks from.
    proc : subprocess.Popen
        The server process.
    log_path : pathlib.Path
        Its stdout and stderr.
    """

    kind: str
    url: str
    root_dir: pathlib.Path
    proc: subprocess.Popen
    log_path: pathlib.Path
    _stopped: bool = field(default=False, repr=False)

    def notebook_url(self, name: str) -> str:
        """Address that opens (lab, notebook) or renders (voila) the notebook ``name``."""
        path = {"lab": "lab/tree", "notebook": "notebooks", "voila": "voila/render"}[self.kind]
        # ?reset: JupyterLab would otherwise reopen the tabs an earlier page of this server had open
        return f"{self.url}/{path}/{name}" + ("?reset" if self.kind == "lab" else "")

    def log(self) -> str:
        """The server's output so far (for failure messages)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def api(self, method: str, path: str) -> object:
        """Call the Jupyter REST API (lab and notebook servers); the decoded JSON or None."""
        req = urllib.request.Request(f"{self.url}/{path.lstrip('/')}", method=method)
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """Shut down every kernel of a lab or notebook server, so the next test starts idle."""
        if self.kind == "voila" or self.proc.poll() is not None:
            return
        try:
            for kernel in self.api("GET", "api/kernels") or []:
                self.api("DELETE", f"api/kernels/{kernel['id']}")
        except (OSError, urllib.error.URLError):
            pass

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server and its kernels, by their process ids; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        kids = _children(self.proc.pid)  # kernels run in sessions of their own
        _kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        for pid in kids:
            _kill(pid, signal.SIGKILL)


def _command(kind: str, port: int, root_dir: pathlib.Path) -> list[str]:
    if kind == "voila":
        return [
            str(BIN / "voila"),
            str(root_dir),
            "--no-browser",
            f"--port={port}",
            "--Voila.ip=127.0.0.1",
            "--show_tracebacks=True",
        ]
    app = {"lab": "jupyter-lab", "notebook": "jupyter-notebook"}[kind]
    cmd = [
        str(BIN / app),
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.token=",
        "--ServerApp.password=",
        "--ServerApp.disable_check_xsrf=True",
        f"--ServerApp.root_dir={root_dir}",
        "--ServerApp.port_retries=0",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # root must be allowed explicitly
        cmd.append("--allow-root")
    return cmd


def _ready(kind: str, url: str) -> bool:
    # Voila has no status API, and fetching a notebook page would run it: wait for the port.
    if kind == "voila":
        host, port = url.rsplit("//", 1)[1].split(":")
        with socket.socket() as s:
            s.settimeout(1)
            return s.connect_ex((host, int(port))) == 0
    try:
        with urllib.request.urlopen(f"{url}/api/status", timeout=2) as resp:
            return resp.status == 200
    except (OSError, urllib.error.URLError):
        return False


def start_server(kind: str, root_dir: pathlib.Path, home: pathlib.Path, *, timeout: float = 90.0) -> Server:
    """Start a JupyterLab (``"lab"``), Notebook 7 (``"notebook"``) or Voila server.

    Parameters
    ----------
    kind : str
        ``"lab"``, ``"notebook"`` or ``"voila"``.
    root_dir : pathlib.Path
        Folder of the notebooks it serves.
    home : pathlib.Path
        Temporary folder for HOME, the Jupyter folders and the server log.
    timeout : float
        Seconds to wait for the server to answer.

    Returns
    -------
    Server
        The running server; call ``stop()`` when done.

    Raises
    ------
    ValueError
        If ``kind`` is not one of the three.
    RuntimeError
        If the server exits or does not answer within ``timeout`` (its log is in the message).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    env = isolated_env(home)
    port = free_port()
    log_path = home / f"{kind}-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            _command(kind, port, root_dir),
            cwd=root_dir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = Server(kind, f"http://127.0.0.1:{port}", root_dir, proc, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} server exited with code {proc.returncode}:\n{server.log()[-4000:]}")
        if _ready(kind, server.url):
            return server
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"{kind} server did not answer within {timeout:.0f} s:\n{server.log()[-4000:]}")
