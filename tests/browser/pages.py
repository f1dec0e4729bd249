"""Drive a notebook page in JupyterLab 4, Notebook 7 or Voila with playwright: run cells, read outputs.

Every wait is on a condition of the page, bounded by a timeout; nothing sleeps a fixed time
except the short polls inside those waits.
"""

from __future__ import annotations

import time
from typing import Callable

# Generous bounds for a loaded 2-core machine; the waits return as soon as the condition holds.
KERNEL_TIMEOUT_S = 90.0
RENDER_TIMEOUT_S = 120.0

# The notebook on show (JupyterLab keeps other tabs' notebooks in the DOM, hidden).
NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook"
INDICATOR = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator"
CELLS = f"{NOTEBOOK} .jp-Cell"
PROMPTS = f"{CELLS} .jp-InputArea-prompt"


def wait_until(condition: Callable[[], object], timeout: float, what: str, poll: float = 0.05) -> object:
    """Poll ``condition()`` until it returns something true; that value, or TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def kernel_status(page) -> str | None:
    """The notebook's kernel status as its toolbar indicator shows it (None before it exists)."""
    return page.evaluate(
        f"() => {{ const e = document.querySelector({INDICATOR!r}); return e ? e.getAttribute('data-status') : null; }}"
    )


def wait_kernel_idle(page, timeout: float = KERNEL_TIMEOUT_S, steady: float = 1.0) -> None:
    """Wait until the kernel shows idle for ``steady`` seconds in a row.

    Right after a page opens the indicator goes idle, then connecting, then idle again:
    a single idle reading is not enough to run cells.
    """
    since = [None]

    def steady_idle() -> bool:
        if kernel_status(page) != "idle":
            since[0] = None
            return False
        since[0] = since[0] or time.monotonic()
        return time.monotonic() - since[0] >= steady

    wait_until(steady_idle, timeout, "the kernel to be idle")


def open_notebook(page, url: str, kind: str, timeout: float = KERNEL_TIMEOUT_S) -> None:
    """Open a notebook page; for lab and notebook, wait until its kernel is ready to run cells."""
    page.goto(url, timeout=timeout * 1000)
    if kind != "voila":
        page.wait_for_selector(CELLS, timeout=timeout * 1000)
        wait_kernel_idle(page, timeout)


def prompts(page) -> list[str]:
    """The input prompts of every cell, e.g. ``['[1]:', '[*]:', '[ ]:']``."""
    return [p.strip() for p in page.locator(PROMPTS).all_inner_texts()]


def _started(prompt: str) -> bool:
    return prompt.startswith("[") and prompt not in ("[ ]:", "[]:", "")


def run_all_cells(page, timeout: float = 30.0) -> None:
    """Run every cell from the Run menu, and check that the cells were queued.

    The click is repeated once when no cell started within ``timeout / 2`` seconds (a menu
    click right after the kernel connected can be lost); a queued cell shows ``[*]``.
    """
    for attempt in range(2):
        page.click(".lm-MenuBar-itemLabel:text-is('Run')")
        page.click("li.lm-Menu-item[data-command='runmenu:run-all']")
        try:
            wait_until(lambda: any(_started(p) for p in prompts(page)), timeout / 2, "a cell to start")
            return
        except TimeoutError:
            if attempt:
                raise
            page.keyboard.press("Escape")  # close the menu if it is still open


def wait_cells_done(page, timeout: float = RENDER_TIMEOUT_S) -> None:
    """Wait until every cell has run (each prompt shows an execution count)."""

    def done() -> bool:
        ps = prompts(page)
        return bool(ps) and all(p.strip("[]: ").isdigit() for p in ps)

    wait_until(done, timeout, "every cell to finish running")


def cell(page, index: int):
    """Locator of the ``index``-th cell of the notebook."""
    return page.locator(CELLS).nth(index)


def run_cell(page, index: int) -> None:
    """Run one cell, as a user does: select it by its prompt, then Shift+Enter."""
    c = cell(page, index)
    c.locator(".jp-InputArea-prompt").click()
    page.keyboard.press("Shift+Enter")


def cell_output(page, index: int) -> str:
    """Text of the outputs of the ``index``-th cell ('' when it has none)."""
    out = cell(page, index).locator(".jp-OutputArea")
    return "\n".join(out.all_inner_texts())


def press_key_on(locator, key: str, timeout: float = 20.0) -> None:
    """Focus ``locator`` (a slider handle) and press ``key`` once it really has the focus.

    While cells are still running the notebook may take the focus back, so the focus is
    checked just before the key press and set again if needed.
    """
    page = locator.page
    locator.scroll_into_view_if_needed()

    def focused() -> bool:
        locator.focus()
        return locator.evaluate("e => e === document.activeElement")

    wait_until(focused, timeout, "the element to take the focus", poll=0.1)
    page.keyboard.press(key)


def drag_by(locator, dx: float) -> None:
    """Drag an element (a slider handle) ``dx`` pixels to the right with the mouse.

    Notebook 7 does not pass arrow keys to a focused slider handle; a drag works everywhere
    once the handle is scrolled into view.
    """
    page = locator.page
    locator.scroll_into_view_if_needed()
    box = locator.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + dx, y, steps=5)
    page.mouse.up()


def collapse_lab_sidebar(page) -> None:
    """Close JupyterLab's left panel (the file browser) if it is open."""
    current = page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current")
    if current.count():
        current.first.click()
        current.first.wait_for(state="detached", timeout=10_000)
