"""The views' HTML pages in headless Chromium from a file:// URL, the network off: clicks change the overlay.

No Jupyter server is involved: the page is written by ``view.export("....html")`` in this
process and opened as a file, in a context that is offline and whose every request other than
the file itself is refused (and recorded: there must be none).
"""

from __future__ import annotations

import json

import pytest
import torch
from tiny_nets import tiny_cnn

from neuronviz.widgets import InversionView, NeuronExplorer, PCACEView

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(180)]

LAYERS = ["conv1", "conv2"]


def _image(seed: int = 1) -> torch.Tensor:
    return torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def open_file(browser, screenshot_dir, request):
    """``open_file(path)``: the page of that file in an offline context; fails the test on any other request."""
    contexts, outside, errors = [], [], []

    def refuse(route):
        outside.append(route.request.url)
        route.abort()

    def opener(path):
        context = browser.new_context(viewport={"width": 1300, "height": 1000}, offline=True)
        context.route(lambda url: not url.startswith(("file:", "data:")), refuse)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.on("request", lambda r: None if r.url.startswith(("file:", "data:")) else outside.append(r.url))
        page.goto(path.resolve().as_uri())
        page.wait_for_selector("body[data-ready='1']")
        return page

    yield opener
    for i, context in enumerate(contexts):
        for j, page in enumerate(context.pages):
            page.screenshot(path=str(screenshot_dir / f"{request.node.name}-{i}-{j}.png"), full_page=True)
        context.close()
    assert not outside, f"the page asked for {outside}"
    assert not errors, f"script errors: {errors}"


def click_key(page, selector: str, key: str) -> None:
    """A real mouse click on the element of ``key``, at a point where that element is on top."""
    el = page.locator(f"{selector}[data-key='{key}']").first
    el.scroll_into_view_if_needed()
    box = el.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    hit = page.evaluate("([x, y]) => { const e = document.elementFromPoint(x, y); return e && "
                        "(e.closest('[data-key]') || e).getAttribute('data-key'); }", [x, y])
    assert hit == key, f"another element covers {key} (found {hit})"
    page.mouse.click(x, y)


def page_data(page) -> dict:
    return json.loads(page.locator("#nv-data").text_content())


def shown_srcs(page) -> list[str]:
    return page.eval_on_selector_all("img.nv-shown", "els => els.map(e => e.getAttribute('src'))")


def uncovered(page, selector: str, keys) -> list[str]:
    """The keys whose element can be clicked at its centre (points of a scatter may overlap)."""
    return page.evaluate(
        "([sel, keys]) => keys.filter(k => { const el = [...document.querySelectorAll(sel)]"
        ".find(e => e.getAttribute('data-key') === k); if (!el) return false; const b = el.getBoundingClientRect();"
        " const e = document.elementFromPoint(b.x + b.width / 2, b.y + b.height / 2);"
        " return e && (e.closest('[data-key]') || e).getAttribute('data-key') === k; })",
        [selector, list(keys)],
    )


def test_explorer_page_click_a_point_shows_its_overlay_and_names_it(open_file, tmp_path):
    w = NeuronExplorer(tiny_cnn(), _image(), LAYERS, n_samples=8, top_k=2)
    try:
        w.wait(60)
        assert w.status == "done", w.error
        w.selected = ("conv1", w.scores.top("correlation", 1)["conv1"][0])
        path = w.export(tmp_path / "explorer.html")
    finally:
        w.close()
    page = open_file(path)
    data = page_data(page)
    first = data["selected"]
    assert page.locator("#nv-title").text_content() == first.replace("|", " · channel ")
    before = shown_srcs(page)
    assert len(before) == 1 and before[0] == data["entries"][first]["h"][0]  # the selected neuron's overlay

    embedded = uncovered(page, "circle.nv-pt", [k for k in data["entries"] if k != first])
    assert embedded, "no embedded neuron could be clicked"
    key = embedded[0]
    layer, channel = key.split("|")
    click_key(page, "circle.nv-pt", key)
    after = shown_srcs(page)
    assert after != before and after[0] == data["entries"][key]["h"][0]
    assert page.locator("#nv-title").text_content() == f"{layer} · channel {channel}"
    numbers = page.locator("#nv-numbers").text_content()
    assert numbers.startswith(f"{layer} · channel {channel}") and "correlation" in numbers and "precision" in numbers
    assert page.locator("#nv-box").is_visible()
    assert page.locator(f"circle.nv-pt.nv-sel[data-key='{key}']").count() == 1
    assert page.locator("#nv-ring").is_visible()

    # a neuron without an embedded overlay: its numbers, and the page says its overlay is not there
    all_keys = page.eval_on_selector_all("circle.nv-pt", "els => els.map(e => e.getAttribute('data-key'))")
    others = uncovered(page, "circle.nv-pt", [k for k in all_keys if k not in data["entries"]])
    assert others, "every clickable point has an overlay: the test needs one without"
    other = others[0]
    click_key(page, "circle.nv-pt", other)
    assert shown_srcs(page) == [data["blank"]]
    assert "no overlay of this neuron in the page" in page.locator("#nv-note").text_content()
    assert page.locator("#nv-numbers").text_content().startswith(other.replace("|", " · channel "))

    # a list item selects too; hovering a point shows its numbers
    item = page.locator(f"button.nv-item[data-key='{first}']").first
    item.click()
    assert shown_srcs(page) == before
    page.locator(f"circle.nv-pt[data-key='{key}']").hover()
    assert page.locator("#nv-hover").text_content().startswith(f"{layer} · channel {channel}")

    page.locator("input.nv-opacity").fill("0.3")
    assert page.eval_on_selector("img.nv-shown", "e => e.style.opacity") == "0.3"


def test_pcace_page_click_a_channel_bar_shows_its_maps(open_file, tmp_path):
    images = torch.randn(40, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    v = PCACEView(tiny_cnn(), images, LAYERS, top_k=2, n_shown=2)
    try:
        v.wait(60)
        assert v.status == "done", v.error
        path = v.export(tmp_path / "pcace.html")
        ranking, shown = v.ranking, v.layer
    finally:
        v.close()
    page = open_file(path)
    data = page_data(page)
    before = shown_srcs(page)
    assert len(before) == 2 and before == data["entries"][data["selected"]]["h"]

    key = next(f"{shown}|{c}" for c in ranking[shown].bottom(2) if f"{shown}|{c}" != data["selected"])
    click_key(page, "rect.nv-bar", key)
    after = shown_srcs(page)
    assert after != before and after == data["entries"][key]["h"]
    channel = key.split("|")[1]
    assert page.locator("#nv-title").text_content() == f"{shown} · channel {channel}"
    assert "PCACE score" in page.locator("#nv-numbers").text_content()

    # another layer's bar shows that layer's channels and selects its best channel
    other = next(la for la in LAYERS if la != shown)
    page.locator("rect.nv-layerbar").nth(LAYERS.index(other)).click()
    best = ranking[other].top(1)[0]
    assert page.locator(f"#nv-layer-{LAYERS.index(other)}").is_visible()
    assert not page.locator(f"#nv-layer-{LAYERS.index(shown)}").is_visible()
    assert page.locator("#nv-title").text_content() == f"{other} · channel {best}"
    assert shown_srcs(page) == data["entries"][f"{other}|{best}"]["h"]


def test_inversion_page_shows_both_masks_and_the_opacity_slider_moves_them(open_file, tmp_path):
    v = InversionView(tiny_cnn(), _image(), stage1_steps=3, stage2_steps=4)
    try:
        v.wait(60)
        assert v.status == "done", v.error
        path = v.export(tmp_path / "inversion.html")
    finally:
        v.close()
    page = open_file(path)
    for stage in (1, 2):
        mask = page.locator(f"img.nv-mask-stage{stage}")
        assert mask.is_visible()
        assert page.eval_on_selector(f"img.nv-mask-stage{stage}", "e => e.complete && e.naturalWidth") == 16
        assert page.eval_on_selector(f"img.nv-mask-stage{stage}", "e => e.style.opacity") == "0.6"
    assert page.locator("polyline.nv-loss").count() == 2
    page.locator("input.nv-opacity").fill("0.25")
    assert page.eval_on_selector_all("img.nv-heat", "els => els.map(e => e.style.opacity)") == ["0.25", "0.25"]
