"""The browser set-up itself: plain ipywidgets and bqplot render and talk to the kernel in each front end.

If these fail, the fault is in the servers, the browser or the widget extensions, not in neuronviz.
"""

from __future__ import annotations

import random

import pytest

import pages

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(180)]


def smoke_cells(xs: list[int], ys: list[int]) -> list[str]:
    return [
        "import ipywidgets as W, bqplot.pyplot as plt\n"
        "s = W.IntSlider(value=3, max=10)\n"
        "echo = W.Label('kernel saw 3')\n"
        "s.observe(lambda c: setattr(echo, 'value', f\"kernel saw {c['new']}\"), 'value')\n"
        "W.VBox([s, echo])",
        f"fig = plt.figure(); plt.scatter({xs}, {ys}); fig",
    ]


@pytest.mark.parametrize("kind", ["lab", "notebook", "voila"])
def test_moving_a_slider_reaches_the_kernel_and_bqplot_draws_every_point(open_notebook, kind):
    n = random.Random(kind).randint(4, 9)
    nb = open_notebook(kind, smoke_cells(list(range(n)), [(3 * i) % 7 for i in range(n)]))
    page = nb.page
    if kind != "voila":
        pages.run_all_cells(page)
        pages.wait_cells_done(page)
    page.wait_for_selector(".bqplot .dot", state="attached")
    pages.wait_until(lambda: page.locator(".bqplot .dot").count() == n, 30, f"{n} points")

    handle = page.locator(".widget-hslider .noUi-handle").first
    if kind == "notebook":  # Notebook 7 keeps arrow keys from a focused handle
        pages.drag_by(handle, 40)
    else:
        pages.press_key_on(handle, "ArrowRight")
    readout = page.locator(".widget-hslider .widget-readout").first
    pages.wait_until(lambda: readout.inner_text().strip() not in ("", "3"), 30, "the slider to move")
    # the label is set by a kernel callback, so seeing it proves the round trip browser -> kernel -> browser
    moved = readout.inner_text().strip()
    page.locator(".widget-label", has_text=f"kernel saw {moved}").wait_for(timeout=30_000)
