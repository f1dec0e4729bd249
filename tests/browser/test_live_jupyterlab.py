"""Live mode in JupyterLab 4: moving a slider refreshes the scatter without Run; a burst runs only the last setting.

Also measures, from the key press on the slider, the time to the first refreshed scatter (partial
scores) and to the final picture, against the run's own time (printed as NV-LIVE-LATENCY).
"""

from __future__ import annotations

import json
import re
import time

import explorer_page as ex
import pages
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(600)]

N_SAMPLES = 40  # a first batch of 8 on a CPU, then 16s: one partial picture (none in the last half) before the final one
LOG_MARK = "NV-LOG"


def _cells() -> list[str]:
    return [
        # the explorer without data-set examples (the demo's), whose search would hold the model
        "import neuronviz as nv\n"
        f"w = nv.NeuronExplorer(nv.default_model(), nv.preprocess(nv.sample_image('cat')), n_samples={N_SAMPLES},"
        " live=True)\nw",
        "w.wait(600)\nlog = []\n"
        "w.observe(lambda c: log.append(f\"{c['new']}:{w.outcome.settings.n_samples if w.outcome else None}\"),"
        " 'status')\nprint('NV-READY', w.live)",
        f"print({LOG_MARK!r}, ' '.join(log))",
    ]


@pytest.fixture(scope="module")
def lab(open_module_notebook):
    nb = open_module_notebook("lab", _cells(), width=1280, height=1480)
    pages.run_all_cells(nb.page)
    pages.wait_cells_done(nb.page)
    ex.wait_done(nb.page)
    ex.wait_settled(nb.page)
    return nb


def _scatter_title(page) -> str:
    return page.evaluate(
        f"() => {{ const f = document.querySelector('{ex.ROOT} .nv-scatter');"
        " const t = f && f.querySelector('.mainheading'); return t ? t.textContent : ''; }"
    )


def _header(page) -> str:
    return page.locator(f"{ex.ROOT} .widget-html").first.inner_text()


def _log(page) -> list[str]:
    pages.run_cell(page, 2)
    text = pages.wait_until(lambda: LOG_MARK in pages.cell_output(page, 2) and pages.cell_output(page, 2), 60,
                            "the kernel's log of runs")
    return text.split(LOG_MARK, 1)[1].split()


def test_moving_a_slider_in_live_mode_updates_the_scatter_without_run_twice(lab):
    page = lab.page
    assert "True" in pages.cell_output(page, 1)
    handle = page.locator(f"{ex.ROOT} .nv-samples .noUi-handle")
    for step in (1, 2):
        n = N_SAMPLES + step
        dots_before = [p["t"] for p in ex.scatter_points(page)]
        start = time.monotonic()
        pages.press_key_on(handle, "ArrowRight")
        pages.wait_until(lambda: "copies so far" in _scatter_title(page), 120, "a partial scatter")
        first = time.monotonic() - start
        pages.wait_until(lambda n=n: f"last run: {n} copies" in _header(page), 120, f"the run of {n} copies")
        pages.wait_until(lambda: "copies so far" not in _scatter_title(page), 30, "the final scatter")
        final = time.monotonic() - start
        status = ex.status(page)
        m = re.search(r"in ([\d.]+) s", status)
        assert status.startswith(f"done · {n} copies"), status
        assert [p["t"] for p in ex.scatter_points(page)] != dots_before
        print("NV-LIVE-LATENCY", json.dumps({"copies": n, "first_partial_s": round(first, 2),
                                             "final_s": round(final, 2), "run_s": float(m.group(1)) if m else None}))


def test_a_burst_of_slider_changes_runs_only_the_last_setting_to_the_end(lab):
    page = lab.page
    pages.wait_until(lambda: ex.status(page).startswith("done"), 120, "the explorer to be idle")
    before = _log(page)
    handle = page.locator(f"{ex.ROOT} .nv-samples .noUi-handle")
    n = int(page.locator(f"{ex.ROOT} .nv-samples .widget-readout").inner_text())
    handle.focus()
    for _ in range(4):
        page.keyboard.press("ArrowRight")  # well inside the pause before a live run
    pages.wait_until(lambda: f"last run: {n + 4} copies" in _header(page), 120, "the run of the last setting")
    time.sleep(1.0)
    new = _log(page)[len(before):]
    assert [e for e in new if e.startswith("done")] == [f"done:{n + 4}"], new
    assert new.count(f"running:{n}") == 1 and not any(e.startswith("cancelled") for e in new), new
