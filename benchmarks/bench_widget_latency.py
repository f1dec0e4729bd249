"""Latency of the NeuronExplorer as a user sees it, measured in headless Chromium on JupyterLab 4.

The default demo (``nv.demo()``, 48 copies) in a fresh JupyterLab server and kernel:

* cell to widget: Run All clicked -> the explorer visible, and -> its first run shown as done
  (imports, model loading and the first run included);
* click to overlay: a click on a scatter point -> the overlay image replaced (median of N
  clicks on different neurons; target < 200 ms on a CPU);
* full run: the Run button clicked -> the status says done (median of R runs);
* live mode (``--live L`` steps, the first right after the first run, while the data-set examples
  are still being searched): one ArrowRight on the samples slider -> the first refreshed scatter
  (its title says "copies so far") and -> the final picture (status done and the final scatter);
  each step is followed by a plain run of the same settings with live off (Run -> done), so the
  final picture is compared with a plain run in the same conditions (medians of the L pairs).

Times are taken in the page (``performance.now()`` of the mouse press and of the DOM change,
seen by a MutationObserver), so they include the round trip to the kernel and the drawing.
Usage:

    python benchmarks/bench_widget_latency.py [--clicks 10] [--runs 3] [--demo-args "n_samples=48"]

Needs Chromium and the test extra (playwright, JupyterLab); uses the helpers of
tests/browser (servers.py, pages.py, explorer_page.py).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import statistics
import sys
import tempfile

import torch

from machine import cpu_name  # benchmarks/machine.py, beside this script

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests" / "browser"))
import explorer_page as ex  # noqa: E402
import pages  # noqa: E402
import servers  # noqa: E402

# The explorer shown and its first result, as times after the Run All click (page clock).
_FIRST_SHOWN_JS = """
() => {
  const marks = window.__nvFirst = {};
  const obs = new MutationObserver(() => {
    const t0 = window.__nvRunAll;
    if (t0 === undefined) return;
    const root = document.querySelector('%s');
    if (root && marks.visible === undefined && root.offsetParent !== null) marks.visible = performance.now() - t0;
    const s = root && root.querySelector('.nv-status');
    if (s && marks.done === undefined && s.textContent.trim().startsWith('done')) {
      marks.done = performance.now() - t0;
      obs.disconnect();
    }
  });
  obs.observe(document.body, {subtree: true, childList: true, characterData: true});
}
""" % ex.ROOT


def cell_to_widget(page) -> tuple[float, float]:
    """Seconds from Run All to the explorer visible, and to its first run done."""
    page.evaluate(_FIRST_SHOWN_JS)
    page.click(".lm-MenuBar-itemLabel:text-is('Run')")
    item = page.locator("li.lm-Menu-item[data-command='runmenu:run-all']")
    item.wait_for()
    page.evaluate("() => { window.__nvRunAll = performance.now(); }")  # the click follows within milliseconds
    item.click()
    marks = pages.wait_until(lambda: page.evaluate("() => window.__nvFirst.done !== undefined && window.__nvFirst"),
                             pages.RENDER_TIMEOUT_S * 2, "the first run")
    return marks["visible"] / 1000, marks["done"] / 1000


def click_to_overlay(page, layout: list[tuple[str, int]], clicks: int) -> tuple[list[float], int]:
    """Milliseconds from a click on a point to the new overlay, one per click, and the clicks missed.

    A click that selects nothing within 5 s (it landed on the tooltip or a mark drawn over
    the point) is counted as missed and another point is tried; it is not timed.
    """
    times, missed, k = [], 0, 0
    while len(times) < clicks and missed <= clicks:
        point, neuron = ex.point_to_click(page, layout, skip=k)
        k += 1
        page.mouse.move(5, 5)  # away from the scatter: no tooltip left over the next point
        page.wait_for_timeout(200)
        ex.start_recording(page)
        before = ex.overlay_src(page)
        page.mouse.click(point["x"], point["y"])
        try:
            pages.wait_until(lambda: ex.overlay_src(page) != before, 5, "the overlay to change")
        except TimeoutError:
            missed += 1
            continue
        pressed = ex.last_click_time(page)
        changed = [e["t"] for e in ex.recorded(page, "src") if e["t"] >= pressed]
        times.append(changed[0] - pressed)
        pages.wait_until(lambda: ex.selected_neuron(page) == neuron, 30, f"{neuron} to be selected")
    return times, missed


def full_run(page) -> float:
    """Seconds from a click on Run to the status done."""
    ex.start_recording(page)
    page.locator(f"{ex.ROOT} .nv-run").click()
    statuses = ex.wait_recorded_run(page, timeout=600)
    if not statuses[-1].startswith("done"):
        raise RuntimeError(f"the run did not finish: {statuses}")
    pressed = ex.last_click_time(page)
    done = [e["t"] for e in ex.recorded(page, "status") if (e["value"] or "").startswith("done") and e["t"] >= pressed]
    return (done[-1] - pressed) / 1000


# Live mode: key presses, and every change of the scatter's title and of the status (page clock).
_LIVE_JS = """
() => {
  if (window.__nvLiveObs) window.__nvLiveObs.disconnect();
  const m = window.__nvLive = {titles: [], statuses: []};
  if (!window.__nvKeys) {
    window.__nvKeys = [];
    document.addEventListener('keydown', () => window.__nvKeys.push(performance.now()), true);
  }
  const snap = () => {
    const t = performance.now(), root = document.querySelector('%s');
    if (!root) return;
    const h = root.querySelector('.nv-scatter .mainheading'), s = root.querySelector('.nv-status');
    const title = h ? h.textContent : '', status = s ? s.textContent.trim() : '';
    if (title !== m.title) { m.titles.push({t, v: title}); m.title = title; }
    if (status !== m.status) { m.statuses.push({t, v: status}); m.status = status; }
  };
  window.__nvLiveObs = new MutationObserver(snap);
  window.__nvLiveObs.observe(document.body, {subtree: true, childList: true, characterData: true});
  snap();
}
""" % ex.ROOT


def _live_marks(page, n: int) -> dict | None:
    """Key press -> first partial scatter, -> final picture (s), and the run's own time; None until final."""
    marks = page.evaluate("() => ({live: window.__nvLive, keys: window.__nvKeys || []})")
    if not marks["keys"]:
        return None
    key = marks["keys"][-1]
    titles = [e for e in marks["live"]["titles"] if e["t"] >= key]
    partial = [e["t"] for e in titles if "copies so far" in e["v"]]
    done = [e for e in marks["live"]["statuses"] if e["t"] >= key and e["v"].startswith(f"done · {n} copies")]
    if not partial or not done:
        return None
    final_titles = [e["t"] for e in titles if e["t"] > partial[0] and "copies so far" not in e["v"]]
    if not final_titles:
        return None
    m = re.search(r"in ([\d.]+) s", done[0]["v"])
    return {"first_partial_s": (partial[0] - key) / 1000, "final_s": (max(done[0]["t"], final_titles[0]) - key) / 1000,
            "run_s": float(m.group(1)) if m else None, "partials": len(partial)}


def live_step(page) -> dict:
    """One ArrowRight on the samples slider in live mode: the times of :func:`_live_marks`."""
    box = page.locator(f"{ex.ROOT} .nv-live input")
    if not box.is_checked():
        box.click()
    n = int(page.locator(f"{ex.ROOT} .nv-samples .widget-readout").inner_text()) + 1
    page.evaluate(_LIVE_JS)
    pages.press_key_on(page.locator(f"{ex.ROOT} .nv-samples .noUi-handle"), "ArrowRight")
    marks = pages.wait_until(lambda: _live_marks(page, n), 600, f"the live run of {n} copies")
    return {"copies": n, **marks}


def plain_run(page) -> float:
    """Live off, then Run -> done (s), for the settings of the last live step."""
    box = page.locator(f"{ex.ROOT} .nv-live input")
    if box.is_checked():
        box.click()
    return full_run(page)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clicks", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--live", type=int, default=3, help="live-mode steps, each followed by a plain run")
    ap.add_argument("--demo-args", default="", help="arguments of nv.demo(...) in the notebook, e.g. \"n_samples=48\"")
    args = ap.parse_args()
    missing = servers.missing_requirements()
    if missing:
        print("SKIPPED bench_widget_latency: " + "; ".join(missing))
        return
    from playwright.sync_api import sync_playwright

    machine = f"CPU: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}"
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp) / "notebooks"
        root.mkdir()
        cells = ex.explorer_cells(None)
        cells[0] = cells[0].replace("nv.demo()", f"nv.demo({args.demo_args})")
        servers.write_notebook(root / "latency.ipynb", cells)
        server = servers.start_server("lab", root, pathlib.Path(tmp) / "home")
        try:
            with sync_playwright() as pw:
                browser = servers.launch_chromium(pw)
                try:
                    page = browser.new_page(viewport={"width": 1500, "height": 1400})
                    pages.open_notebook(page, server.notebook_url("latency.ipynb"), "lab")
                    visible_s, first_done_s = cell_to_widget(page)
                    pages.wait_cells_done(page)
                    ex.wait_settled(page)
                    live: list[dict] = []
                    for _ in range(args.live):  # the first while the data-set examples are searched
                        live.append(live_step(page))
                        live[-1]["plain_run_s"] = plain_run(page)
                        print("NV-LIVE", json.dumps(live[-1]), flush=True)
                    layout = ex.parse_channels(pages.cell_output(page, 1))
                    n_samples = int(page.locator(f"{ex.ROOT} .nv-samples .widget-readout").inner_text())
                    clicks_ms, missed = click_to_overlay(page, layout, args.clicks)
                    runs_s = [full_run(page) for _ in range(args.runs)]
                finally:
                    browser.close()
        finally:
            server.stop()

    channels = sum(n for _name, n in layout)
    print(f"# machine: {machine}; JupyterLab 4, headless Chromium; nv.demo(): {n_samples} copies, "
          f"{channels} channels in {', '.join(name for name, _n in layout)}")
    if clicks_ms and runs_s:  # --clicks 0 / --runs 0: the live steps only
        click_ms, run_s = statistics.median(clicks_ms), statistics.median(runs_s)
        print("| machine | cell -> widget visible | cell -> first run done | click -> overlay (median of "
              f"{len(clicks_ms)}) | Run -> done, {n_samples} copies (median of {len(runs_s)}) |")
        print("|---|---|---|---|---|")
        print(f"| {machine} | {visible_s:.1f} s | {first_done_s:.1f} s | **{click_ms:.0f} ms** | {run_s:.1f} s |")
        print(f"clicks missed (landed on no point, not timed): {missed}; click times: "
              + ", ".join(f"{t:.0f}" for t in clicks_ms) + " ms")
    if live:
        first = statistics.median(e["first_partial_s"] for e in live)
        final = statistics.median(e["final_s"] for e in live)
        plain = statistics.median(e["plain_run_s"] for e in live)
        ratio = statistics.median(e["final_s"] / e["plain_run_s"] for e in live)
        own = statistics.median(e["final_s"] / e["run_s"] for e in live)
        print(f"| {machine} | {live[0]['copies']}-{live[-1]['copies']} | **{first:.2f} s** | {final:.2f} s | "
              f"{plain:.2f} s | **{ratio:.2f}x** | {own:.2f}x |  (live: slider key -> first partial scatter, -> final "
              f"picture, plain Run -> done, final / plain, final / the run's own time; medians of {len(live)})")
    print(json.dumps({
        "machine": machine, "load_average": os.getloadavg(), "live": live, "cell_to_visible_s": visible_s, "cell_to_first_done_s": first_done_s,
        "click_to_overlay_ms": clicks_ms, "clicks_missed": missed, "run_s": runs_s, "n_samples": n_samples, "channels": channels,
    }))


if __name__ == "__main__":
    main()
