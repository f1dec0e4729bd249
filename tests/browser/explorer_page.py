"""The NeuronExplorer in a browser page: its notebook, its DOM classes, and how to read and drive them.

The explorer marks its parts with CSS classes (``nv-explorer``, ``nv-run``, ``nv-status``,
``nv-progress``, ``nv-overlay``, ``nv-scatter``, ...). The scatter's first bqplot mark holds
one dot per scored channel, layers in order and channels in order.
"""

from __future__ import annotations

import re
import time

import pages

ROOT = ".nv-explorer"

# The notebook under test. Cell 1 prints, from the model itself (a forward pass, not the
# scores), how many channels each scored layer has; cell 2 reports the kernel's view of the run.
CHANNELS_MARK = "NV-CHANNELS"
PING_MARK = "NV-PING"


def explorer_cells(n_samples: int | None = 32, live: bool = False) -> list[str]:
    """Code cells of a notebook showing ``nv.demo`` (``n_samples=None``: the demo's default).

    Live mode is off unless asked for: these pages test the Run button (a fast demo run would
    otherwise turn live mode on by itself).
    """
    args = ", ".join(([] if n_samples is None else [f"n_samples={n_samples}"]) + [f"live={live}"])
    return [
        f"import neuronviz as nv\nw = nv.demo({args})\nw",
        "w.wait(600)\n"
        "x = nv.preprocess(nv.sample_image('cat'))\n"
        "channels = {i.name: i.channels for i in nv.layer_summary(w.model, x)}\n"
        f"print({CHANNELS_MARK!r}, ' '.join(f'{{name}}={{channels[name]}}' for name in w.scores.layers))",
        f"print({PING_MARK!r}, w.status)",
    ]


def parse_channels(text: str) -> list[tuple[str, int]]:
    """``[(layer, channels), ...]`` from the line the notebook prints (ValueError if absent)."""
    m = re.search(CHANNELS_MARK + r" ((?:\S+=\d+ ?)+)", text)
    if not m:
        raise ValueError(f"no {CHANNELS_MARK} line in the output: {text[-500:]!r}")
    return [(name, int(n)) for name, n in (item.split("=") for item in m.group(1).split())]


def neuron_of_point(layout: list[tuple[str, int]], index: int) -> tuple[str, int]:
    """The (layer, channel) of the ``index``-th scatter point, layers in order, channels in order."""
    for name, n in layout:
        if index < n:
            return name, index
        index -= n
    raise IndexError("point index past the last channel")


def status(page) -> str:
    """Text of the status label ('' before the explorer is shown)."""
    loc = page.locator(f"{ROOT} .nv-status")
    return loc.first.inner_text().strip() if loc.count() else ""


def wait_done(page, timeout: float = pages.RENDER_TIMEOUT_S) -> str:
    """Wait until the status label says done; its text."""
    return pages.wait_until(lambda: status(page).startswith("done") and status(page), timeout, "status 'done'")


def overlay_src(page) -> str | None:
    """``src`` of the overlay image (a blob address that changes whenever the picture does)."""
    return page.evaluate(
        f"() => {{ const e = document.querySelector('{ROOT} img.nv-overlay');"
        " return e ? e.getAttribute('src') : null; }"
    )


# The dots of the scatter's first mark with their centres in page coordinates, and whether a
# click at the centre lands on that dot (not on another dot or a highlight drawn over it).
_POINTS_JS = """
() => {
  const fig = document.querySelector('%s .nv-scatter');
  const dot = fig && fig.querySelector('.dot');
  if (!dot) return [];
  const first = dot.closest('.object_grp').parentElement.parentElement.children[0];
  return Array.from(first.querySelectorAll('.dot')).map((d, i) => {
    const r = d.getBoundingClientRect();
    const x = r.left + r.width / 2, y = r.top + r.height / 2;
    const hit = document.elementFromPoint(x, y);
    return {i, x, y, hit: hit === d || d.contains(hit), t: d.closest('.object_grp').getAttribute('transform')};
  });
}
""" % ROOT


def scatter_points(page) -> list[dict]:
    """Dots of the scatter's first mark, in order: ``{i, x, y, hit, t}`` (``t``: its SVG transform)."""
    return page.evaluate(_POINTS_JS)


def clickable_points(page, first: int = 0) -> list[dict]:
    """Points from index ``first`` on that a click reaches, highest correlation (rightmost) first."""
    page.locator(f"{ROOT} .nv-scatter").scroll_into_view_if_needed()
    points = [p for p in scatter_points(page) if p["i"] >= first and p["hit"]]
    return sorted(points, key=lambda p: -p["x"])


# Records every change of the status text, the progress bar's width and the overlay's src,
# with performance.now() times, from now on (window.__nvEvents); clicks are recorded too.
_RECORD_JS = """
() => {
  if (window.__nvObserver) window.__nvObserver.disconnect();
  const events = window.__nvEvents = [];
  let last = {};
  const snap = () => {
    const root = document.querySelector('%s');
    if (!root) return;
    const s = root.querySelector('.nv-status'), b = root.querySelector('.nv-progress .progress-bar');
    const o = root.querySelector('img.nv-overlay');
    const now = {status: s ? s.textContent.trim() : null, width: b ? b.style.width : null,
                 src: o ? o.getAttribute('src') : null};
    for (const k of Object.keys(now)) {
      if (now[k] !== last[k]) events.push({t: performance.now(), kind: k, value: now[k]});
    }
    last = now;
  };
  window.__nvObserver = new MutationObserver(snap);
  window.__nvObserver.observe(document.body, {subtree: true, childList: true, characterData: true,
                                              attributes: true, attributeFilter: ['style', 'src', 'class']});
  if (!window.__nvClicks) {
    window.__nvClicks = [];
    document.addEventListener('mousedown', () => window.__nvClicks.push(performance.now()), true);
  }
  snap();
}
""" % ROOT


def start_recording(page) -> None:
    """Record status, progress and overlay changes from now on (see :func:`recorded`)."""
    page.evaluate(_RECORD_JS)


def recorded(page, kind: str | None = None) -> list[dict]:
    """The changes recorded since :func:`start_recording`: ``{t, kind, value}``, optionally one kind."""
    events = page.evaluate("() => window.__nvEvents || []")
    return [e for e in events if kind is None or e["kind"] == kind]


def last_click_time(page) -> float | None:
    """performance.now() of the last mouse button press in the page."""
    return page.evaluate("() => (window.__nvClicks || []).slice(-1)[0] ?? null")


def width_percent(value: str | None) -> float | None:
    """``'48.5%'`` -> 48.5 (None for no width)."""
    if not value or not value.endswith("%"):
        return None
    return float(value[:-1])


def selected_neuron(page) -> tuple[str, int] | None:
    """The (layer, channel) the selected-neuron label names, or None."""
    m = re.match(r"\s*(\S+) · channel (\d+)", page.locator(f"{ROOT} .nv-selected").inner_text())
    return (m.group(1), int(m.group(2))) if m else None


def point_to_click(page, layout: list[tuple[str, int]], skip: int = 0) -> tuple[dict, tuple[str, int]]:
    """A clickable point of the last layer other than the selected neuron, and its neuron.

    The last layer's well-correlated channels have real activation maps (a dead channel's
    blank map could look like another's), and the default selection lies in the first layer.
    ``skip`` passes over that many candidates, to click a different point each time.
    """
    first_of_last = sum(n for _name, n in layout[:-1])
    current = selected_neuron(page)
    candidates = [
        (p, neuron_of_point(layout, p["i"]))
        for p in clickable_points(page, first=first_of_last)
        if neuron_of_point(layout, p["i"]) != current
    ]
    if not candidates:
        raise AssertionError("no point of the last layer can be clicked")
    return candidates[skip % len(candidates)]


def wait_recorded_run(page, timeout: float = pages.RENDER_TIMEOUT_S) -> list[str]:
    """Wait until the statuses recorded since :func:`start_recording` show a run start and end.

    Returns the recorded statuses; the last one is how the run ended (``done ...``,
    ``cancelled`` or ``error ...``). A status already ``done`` before the click does not count.
    """

    def ended() -> list[str] | None:
        statuses = [e["value"] or "" for e in recorded(page, "status")]
        started = [i for i, s in enumerate(statuses) if s.startswith("running")]
        if started and any(s.startswith(("done", "cancelled", "error")) for s in statuses[started[0]:]):
            return statuses
        return None

    return pages.wait_until(ended, timeout, "a run to start and end")


def wait_settled(page, steady: float = 1.0, timeout: float = 60.0) -> None:
    """Wait until the explorer's root element stays the same node for ``steady`` seconds.

    When the first result arrives the notebook output is updated, and the front end may
    draw the explorer again as a new element: a click on the old one would be lost.
    """
    since = [None]

    def same_root() -> bool:
        same = page.evaluate(
            f"() => {{ const r = document.querySelector('{ROOT}'); const same = !!r && r === window.__nvRoot;"
            " window.__nvRoot = r; return same; }"
        )
        if not same:
            since[0] = None
            return False
        since[0] = since[0] or time.monotonic()
        return time.monotonic() - since[0] >= steady

    pages.wait_until(same_root, timeout, "the explorer to stay in place", poll=0.1)
