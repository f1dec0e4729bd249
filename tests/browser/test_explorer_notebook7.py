"""nv.demo() in Notebook 7: it renders, finishes its first run and draws one point per scored channel."""

from __future__ import annotations

import pytest

import explorer_page as ex
import pages

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(300)]


def test_demo_renders_in_notebook7_with_one_point_per_scored_channel(open_notebook, screenshot_dir):
    nb = open_notebook("notebook", ex.explorer_cells(16), height=1400)
    page = nb.page
    pages.run_all_cells(page)
    pages.wait_cells_done(page)
    ex.wait_done(page)
    ex.wait_settled(page)

    for part in ("nv-run", "nv-progress", "nv-status", "nv-overlay", "nv-scatter", "nv-detail", "nv-selections"):
        assert page.locator(f"{ex.ROOT} .{part}").first.is_visible(), f"{part} is not visible"
    layout = ex.parse_channels(pages.cell_output(page, 1))
    assert len(ex.scatter_points(page)) == sum(n for _name, n in layout), layout
    page.locator(ex.ROOT).scroll_into_view_if_needed()
    page.screenshot(path=str(screenshot_dir / "explorer-notebook7.png"))
