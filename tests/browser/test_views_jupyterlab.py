"""nv.app() in JupyterLab 4: the PCACE and inversion tabs open when clicked, draw their bars and masks, and a bar click selects.

The default model with small settings: 24 views of the cat for PCACE, 2 + 3 inversion steps.
"""

from __future__ import annotations

import json
import re

import pytest

import pages

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(480)]

APP = ".nv-app"
PCACE = f"{APP} .nv-pcace"
INVERSION = f"{APP} .nv-inversion"
MARK = "NV-VIEWS"

CELLS = [
    "import neuronviz as nv\n"
    "app = nv.app(n_images=24, explorer={'n_samples': 16}, inversion={'stage1_steps': 2, 'stage2_steps': 3})\n"
    "app",
    # what the kernel holds of the PCACE view, to compare with what the page draws
    "import json\n"
    "app.wait(600)\n"
    "p = app.pcace\n"
    f"print({MARK!r}, json.dumps({{'status': p.status, 'layer': p.layer, 'channels': p.scores.scores.numel(),\n"
    "    'layers': list(p.ranking.layers), 'order': p.scores.ranking.tolist(), 'selected': list(p.selected)}))",
    "import hashlib\n"
    "app.wait(600)\n"
    "v = app.inversion\n"
    "plain = nv.widgets.pictures.encode_png(v.image)\n"
    f"print({MARK!r}, json.dumps({{'status': v.status, 'error': v.error,\n"
    "    'mask': hashlib.sha256(v.stage2.picture.value).hexdigest(),\n"
    "    'stage1': hashlib.sha256(v.stage1.picture.value).hexdigest(),\n"
    "    'plain': hashlib.sha256(plain).hexdigest()}))",
]


def kernel_report(page, index: int) -> dict:
    """Run cell ``index`` and parse the JSON it prints after the mark."""
    pages.run_cell(page, index)
    text = pages.wait_until(lambda: re.search(MARK + r" (\{.*\})", pages.cell_output(page, index)), 300,
                            f"cell {index} to print its report")
    return json.loads(text.group(1))


def run_first_cell(page) -> None:
    """Run cell 0; again once if it did not start (a key press right after the kernel connected can be lost)."""
    for attempt in range(2):
        pages.run_cell(page, 0)
        try:
            pages.wait_until(lambda: pages.prompts(page)[0] not in ("[ ]:", "[]:", ""), 15, "cell 0 to start")
            return
        except TimeoutError:
            if attempt:
                raise


def status(page, root: str) -> str:
    loc = page.locator(f"{root} .nv-status")
    return loc.first.inner_text().strip() if loc.count() else ""


def wait_done(page, root: str, timeout: float = 300) -> None:
    pages.wait_until(lambda: status(page, root).startswith(("done", "error")), timeout, f"{root} to finish its run")
    assert status(page, root).startswith("done"), page.locator(f"{root} .nv-error").first.inner_text()


def open_tab(page, title: str) -> None:
    page.locator(f"{APP} .lm-TabBar-tab", has_text=title).first.click()


# SHA-256 of the PNG an <img> shows, fetched from its blob address (127.0.0.1 is a secure context).
_IMAGE_SHA_JS = """
async (sel) => {
  const img = document.querySelector(sel);
  if (!img || !img.src) return null;
  const data = await (await fetch(img.src)).arrayBuffer();
  const digest = await crypto.subtle.digest('SHA-256', data);
  return {sha: Array.from(new Uint8Array(digest)).map(b => b.toString(16).padStart(2, '0')).join(''),
          width: img.naturalWidth, height: img.naturalHeight};
}
"""

# The channel bars (first mark of the figure) in order, with their fill and page position.
_BARS_JS = """
(sel) => Array.from(document.querySelectorAll(sel + ' rect.bar')).map(r => {
  const b = r.getBoundingClientRect();
  return {fill: getComputedStyle(r).fill, x: b.left + b.width / 2, y: b.top + b.height / 2, w: b.width, h: b.height};
})
"""

# Index of the bar (among the figure's rect.bar) that the page hit-tests at a point, or null.
_BAR_AT_JS = """
([sel, x, y]) => {
  const i = Array.from(document.querySelectorAll(sel + ' rect.bar')).indexOf(document.elementFromPoint(x, y));
  return i < 0 ? null : i;
}
"""


def test_app_tabs_draw_pcace_bars_and_inversion_masks(open_notebook, screenshot_dir):
    nb = open_notebook("lab", CELLS, width=1500, height=1750)
    page = nb.page
    run_first_cell(page)  # only the app: the tabs' views must be built by the clicks below, not by cells 1 and 2
    pages.wait_until(lambda: page.locator(f"{APP} .nv-explorer").count() > 0, 180, "the app to show the explorer")
    pages.collapse_lab_sidebar(page)

    # PCACE: built when its tab is first shown, from the click in the page
    open_tab(page, "PCACE")
    page.wait_for_selector(PCACE, timeout=240_000)
    wait_done(page, PCACE)
    report = kernel_report(page, 1)
    assert report["status"] == "done" and len(report["layers"]) == 4
    bars = pages.wait_until(lambda: (b := page.evaluate(_BARS_JS, f"{PCACE} .nv-pcace-bars")) and
                            len(b) == report["channels"] and b, 60, "one bar per channel")
    assert all(b["h"] > 0 for b in bars[:10]), "the best channels' bars have no height"
    green = [i for i, b in enumerate(bars) if b["fill"] == "rgb(44, 160, 44)"]
    assert green and green[0] in (0, 1), f"the top channels are not green: {[b['fill'] for b in bars[:5]]}"
    layer_bars = page.evaluate(_BARS_JS, f"{PCACE} .nv-layer-ranking")
    assert len(layer_bars) == len(report["layers"])
    assert page.locator(f"{PCACE} .nv-top-bottom img").count() == 3 * 6  # 3 images x (top 3 + bottom 3)
    assert page.locator(f"{PCACE} .nv-ranking-table tr").count() == 1 + len(report["layers"])

    # a click on the sixth bar selects the channel of the bar under the pointer (a layer of more channels
    # than pixels has bars narrower than a pixel: the page's own hit test says which one that is); the
    # kernel's report printed below may have scrolled the bars away, so they come into view first
    page.locator(f"{PCACE} .nv-pcace-bars").first.scroll_into_view_if_needed()
    bars = page.evaluate(_BARS_JS, f"{PCACE} .nv-pcace-bars")
    x, y = bars[5]["x"], bars[5]["y"]
    hit = page.evaluate(_BAR_AT_JS, [f"{PCACE} .nv-pcace-bars", x, y])
    assert hit is not None and hit < 12, f"the click point is not on one of the first bars: {hit}"
    target = report["order"][hit]
    page.mouse.click(x, y)
    label = page.locator(f"{PCACE} .nv-selected").first
    pages.wait_until(lambda: label.inner_text().strip() == f"{report['layer']} · channel {target}", 30,
                     f"the label to name channel {target}")
    page.mouse.move(5, 5)  # no tooltip over the bars in the picture
    page.locator(PCACE).first.scroll_into_view_if_needed()
    path = screenshot_dir / "views-jupyterlab-pcace.png"
    page.locator(APP).first.screenshot(path=str(path))
    assert path.stat().st_size > 50_000, "the screenshot is suspiciously small (blank page?)"

    # Inversion: the masks drawn are the ones the kernel computed, not the plain image
    open_tab(page, "Inversion")
    page.wait_for_selector(INVERSION, timeout=240_000)
    wait_done(page, INVERSION)
    report = kernel_report(page, 2)
    assert report["status"] == "done", report["error"]
    assert report["mask"] != report["plain"] and report["stage1"] != report["plain"]

    def shown_mask() -> dict | None:
        got = page.evaluate(_IMAGE_SHA_JS, f"{INVERSION} img.nv-mask-stage2")
        return got if got and got["sha"] == report["mask"] else None

    shown = pages.wait_until(shown_mask, 30, "the page to show the kernel's stage-2 mask")
    assert (shown["width"], shown["height"]) == (224, 224)
    stage1 = page.evaluate(_IMAGE_SHA_JS, f"{INVERSION} img.nv-mask-stage1")
    assert stage1["sha"] == report["stage1"]
    assert page.locator(f"{INVERSION} .nv-losses path.line").count() >= 2
    page.locator(INVERSION).first.scroll_into_view_if_needed()
    path = screenshot_dir / "views-jupyterlab-inversion.png"
    page.locator(APP).first.screenshot(path=str(path))
    assert path.stat().st_size > 30_000, "the screenshot is suspiciously small (blank page?)"
