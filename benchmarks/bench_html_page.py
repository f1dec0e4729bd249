"""Size and build time of the views' self-contained HTML pages on the default model.

The explorer of ``nv.demo()`` (cat photo, its two default layers, 50 copies), the PCACE view
of 40 random views of the coffee photo (its default layers) and the inversion view of the cat
(10 + 70 steps): each view runs once, then ``export("....html")`` is timed (median of
``--repeats``; the page is built from the view's snapshot, the model is not run). Usage:

    python benchmarks/bench_html_page.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from machine import cpu_name  # benchmarks/machine.py, beside this script

import neuronviz as nv


def measure(view, name: str, repeats: int, folder: Path) -> dict:
    view.wait(1800)
    assert view.status == "done", view.error
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        path = view.export(folder / f"{name}.html")
        times.append(time.perf_counter() - start)
    page = path.read_text(encoding="utf-8")
    row = {"view": name, "kb": round(path.stat().st_size / 1024), "build_s": round(statistics.median(times), 2),
           "points": page.count("class='nv-pt"), "bars": page.count("class='nv-bar'"),
           "embedded_pngs": page.count("data:image/png;base64,")}
    view.close()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model = nv.default_model()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows.append(measure(nv.demo(examples=None, live=False), "explorer", args.repeats, folder))
        torch.manual_seed(0)
        rows.append(measure(nv.PCACEView(model, nv.augment(nv.sample_image("coffee"), 40)), "pcace", args.repeats,
                            folder))
        rows.append(measure(nv.InversionView(model, nv.preprocess(nv.sample_image("cat"))), "inversion",
                            args.repeats, folder))
    print(json.dumps({"machine": f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}",
                      "load_average": os.getloadavg(), "pages": rows}, indent=1))


if __name__ == "__main__":
    main()
