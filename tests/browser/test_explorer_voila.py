"""nv.demo() as a Voila app: it renders with one point per channel, and a click changes the overlay."""

from __future__ import annotations

import pytest

import explorer_page as ex
import pages

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def app(open_module_notebook):
    """The demo notebook rendered by Voila (it runs every cell while loading), first run done."""
    nb = open_module_notebook("voila", ex.explorer_cells(32), height=1400)
    nb.page.wait_for_selector(ex.ROOT, timeout=pages.RENDER_TIMEOUT_S * 1000)
    ex.wait_done(nb.page)
    pages.wait_until(lambda: ex.CHANNELS_MARK in body_text(nb), pages.RENDER_TIMEOUT_S, "the channel count")
    ex.wait_settled(nb.page)
    return nb


@pytest.fixture
def voila(app, screenshot_on_failure):
    screenshot_on_failure(app)
    return app


def body_text(nb) -> str:
    return nb.page.locator("body").inner_text()


def test_demo_renders_in_voila_with_one_point_per_scored_channel(voila, screenshot_dir):
    page = voila.page
    for part in ("nv-run", "nv-progress", "nv-overlay", "nv-scatter", "nv-detail", "nv-selections", "nv-samples"):
        assert page.locator(f"{ex.ROOT} .{part}").first.is_visible(), f"{part} is not visible"
    layout = ex.parse_channels(body_text(voila))
    assert len(ex.scatter_points(page)) == sum(n for _name, n in layout), layout
    page.screenshot(path=str(screenshot_dir / "explorer-voila.png"))


def test_clicking_a_point_in_voila_changes_the_overlay(voila):
    page = voila.page
    before = ex.overlay_src(page)
    point, neuron = ex.point_to_click(page, ex.parse_channels(body_text(voila)))

    page.mouse.click(point["x"], point["y"])

    pages.wait_until(lambda: ex.overlay_src(page) != before, 30, "the overlay to change")
    pages.wait_until(lambda: ex.selected_neuron(page) == neuron, 30, f"the selected label to name {neuron}")
