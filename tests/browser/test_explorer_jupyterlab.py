"""nv.demo() in JupyterLab 4, driven like a user: it renders, a click selects, Run recomputes, the kernel stays free.

The tests of this module share one notebook page (loading the model and the first run cost
most of the time); each test leaves the explorer idle for the next.
"""

from __future__ import annotations

import re

import pytest

import explorer_page as ex
import pages

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(300)]

N_SAMPLES = 32  # small: two batches of 16 on a CPU, a few seconds per run


@pytest.fixture(scope="module")
def lab(open_module_notebook):
    """The demo notebook open in JupyterLab, every cell run, the first run done."""
    nb = open_module_notebook("lab", ex.explorer_cells(N_SAMPLES), width=1280, height=1480)
    pages.run_all_cells(nb.page)
    pages.wait_cells_done(nb.page)
    ex.wait_done(nb.page)
    ex.wait_settled(nb.page)
    return nb


@pytest.fixture
def explorer(lab, screenshot_on_failure):
    screenshot_on_failure(lab)
    # a test never starts while an earlier one's run is still going
    pages.wait_until(lambda: not ex.status(lab.page).startswith("running"), 120, "the explorer to be idle")
    return lab


def channel_layout(nb) -> list[tuple[str, int]]:
    return ex.parse_channels(pages.cell_output(nb.page, 1))


def test_demo_renders_every_panel_and_reaches_done(explorer, screenshot_dir):
    page = explorer.page
    for part in ("nv-run", "nv-cancel", "nv-progress", "nv-status", "nv-overlay", "nv-scatter", "nv-detail",
                 "nv-selections", "nv-samples", "nv-seed", "nv-strength", "nv-topk", "nv-export", "nv-selected"):
        assert page.locator(f"{ex.ROOT} .{part}").first.is_visible(), f"{part} is not visible"
    assert ex.status(page).startswith("done")
    assert page.locator(f"{ex.ROOT} .nv-detail .dot").count() > 0, "the detail figure has no points"
    assert pages.cell_output(page, 2).strip().startswith(f"{ex.PING_MARK} done")

    pages.collapse_lab_sidebar(page)  # more room for the explorer in the picture
    pages.cell(page, 0).evaluate("e => e.scrollIntoView({block: 'start'})")  # the code, then the explorer
    path = screenshot_dir / "explorer-jupyterlab.png"
    page.screenshot(path=str(path))
    assert path.stat().st_size > 20_000, "the screenshot is suspiciously small (blank page?)"


def test_scatter_has_one_point_per_scored_channel(explorer):
    layout = channel_layout(explorer)
    expected = sum(n for _name, n in layout)
    assert len(layout) >= 1 and expected > 0
    points = ex.scatter_points(explorer.page)
    assert len(points) == expected, f"{len(points)} points for {layout}"
    # the points are placed by their scores: they cannot all sit on one spot
    assert len({p["t"] for p in points}) > expected // 4


def test_clicking_a_point_selects_its_neuron_and_changes_the_overlay(explorer, screenshot_dir):
    page = explorer.page
    before = ex.overlay_src(page)
    point, neuron = ex.point_to_click(page, channel_layout(explorer))

    page.mouse.click(point["x"], point["y"])

    pages.wait_until(lambda: ex.overlay_src(page) != before, 30, "the overlay to change")
    pages.wait_until(lambda: ex.selected_neuron(page) == neuron, 30, f"the selected label to name {neuron}")
    page.screenshot(path=str(screenshot_dir / "explorer-jupyterlab-clicked.png"))


def test_slider_and_run_recompute_with_a_moving_progress_bar(explorer):
    page = explorer.page
    samples = page.locator(f"{ex.ROOT} .nv-samples")
    before = int(samples.locator(".widget-readout").inner_text())
    header = page.locator(f"{ex.ROOT} .widget-html").first
    dots_before = [p["t"] for p in ex.scatter_points(page)]

    pages.press_key_on(samples.locator(".noUi-handle"), "ArrowRight")
    pages.wait_until(lambda: "settings changed" in ex.status(page), 30, "the explorer to see the new setting")
    ex.start_recording(page)
    page.locator(f"{ex.ROOT} .nv-run").click()
    statuses = ex.wait_recorded_run(page)

    n = before + 1
    assert statuses[-1].startswith(f"done · {n} copies"), statuses
    pages.wait_until(lambda: f"last run: {n} copies" in header.inner_text(), 30, "the header to show the new run")
    widths = [ex.width_percent(e["value"]) for e in ex.recorded(page, "width")]
    widths = [w for w in widths if w is not None]
    assert any(0 < w < 100 for w in widths), f"the progress bar never showed a partial run: {widths}"
    assert widths[-1] == 100
    start = widths.index(0.0) if 0.0 in widths else 0
    assert widths[start:] == sorted(widths[start:]), f"the progress went backwards: {widths}"
    assert any(re.fullmatch(rf"running: \d+/{n}", s) for s in statuses), statuses
    # more copies give other scores, so the points move
    assert [p["t"] for p in ex.scatter_points(page)] != dots_before


def test_kernel_runs_cells_while_the_explorer_computes_and_cancel_stops_it(explorer):
    page = explorer.page
    readout = page.locator(f"{ex.ROOT} .nv-samples .widget-readout")
    readout.click()
    page.keyboard.press("Control+a")
    page.keyboard.type("512")  # the slider's maximum: a run of tens of seconds here
    page.keyboard.press("Enter")
    pages.wait_until(lambda: "settings changed" in ex.status(page), 30, "the explorer to see 512 samples")
    page.locator(f"{ex.ROOT} .nv-run").click()
    pages.wait_until(lambda: re.fullmatch(r"running: \d+/512", ex.status(page)), 60, "the run to start")

    pages.run_cell(page, 2)  # print(NV-PING, w.status)
    pages.wait_until(lambda: "running" in pages.cell_output(page, 2), 60, "the cell's output during the run")
    ping = pages.cell_output(page, 2)
    assert ping.strip() == f"{ex.PING_MARK} running", ping
    progress = re.fullmatch(r"running: (\d+)/512", ex.status(page))
    assert progress and int(progress.group(1)) < 512, "the run ended before the cell ran: no evidence of a free kernel"

    page.locator(f"{ex.ROOT} .nv-cancel").click()
    pages.wait_until(lambda: ex.status(page) == "cancelled", 60, "the run to be cancelled")
    pages.run_cell(page, 2)
    pages.wait_until(lambda: "cancelled" in pages.cell_output(page, 2), 30, "the kernel to report the cancel")
    # leave it as the other tests expect: a finished short run
    readout.click()
    page.keyboard.press("Control+a")
    page.keyboard.type(str(N_SAMPLES))
    page.keyboard.press("Enter")
    ex.start_recording(page)
    page.locator(f"{ex.ROOT} .nv-run").click()
    assert ex.wait_recorded_run(page)[-1].startswith(f"done · {N_SAMPLES} copies")

