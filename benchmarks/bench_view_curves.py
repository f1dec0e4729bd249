"""What the views' faithfulness curves cost against the views' own runs, on the default model.

PCACE view: EfficientNet-Lite0, 48 random views of the coffee photo (``nv.augment``), its default
layers; the run (ranking + maps) against the shown layer's deletion curve
(:func:`neuronviz.widgets.knockouts.pcace_curves`: PCACE, correlation and precision over the 48
images, 3 random rankings, 9 points, the logit on the 3 shown images). Inversion view: the cat
photo, the paper's recipe (10 + 70 Adam steps); the run against the mask's deletion and
insertion curves (:func:`neuronviz.widgets.knockouts.mask_curves`: 10 steps, 3 random masks).
Each timing is the median of ``--repeats`` runs, run and curve interleaved; the load average is
printed. Usage:

    python benchmarks/bench_view_curves.py [--device cpu] [--repeats 3] [--skip-inversion]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

import neuronviz as nv
from machine import cpu_name  # benchmarks/machine.py, beside this script
from neuronviz.widgets import InversionView, PCACEView


def seconds(start: float) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def pcace(model: torch.nn.Module, device: str, repeats: int) -> dict:
    images = nv.augment(nv.sample_image("coffee"), 48)
    v = PCACEView(model, images, device=device, autorun=False)
    runs, curves = [], []
    for _ in range(repeats + 1):  # the first of each is a warm-up
        t0 = time.perf_counter()
        v.run()
        v.wait(3600)
        runs.append(seconds(t0))
        t0 = time.perf_counter()
        v.faithfulness.start()
        v.faithfulness.wait(3600)
        curves.append(seconds(t0))
        assert v.faithfulness.curves is not None, v.faithfulness.status.value
    c = v.faithfulness.curves
    out = {"layers": v.layers, "shown": v.layer, "channels": int(v.scores.scores.numel()), "rankings": c.rankings,
           "n_forward": c.n_forward, "run_s": statistics.median(runs[1:]), "curve_s": statistics.median(curves[1:]),
           "auc": {r: round(a, 3) for r, a in c.auc[v.layer].items()}}
    v.close()
    return out


def inversion(model: torch.nn.Module, device: str, repeats: int) -> dict:
    x = nv.preprocess(nv.sample_image("cat"))
    v = InversionView(model, x, device=device, autorun=False)
    runs, curves = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        v.run()
        v.wait(3600)
        runs.append(seconds(t0))
        t0 = time.perf_counter()
        v.faithfulness.start()
        v.faithfulness.wait(3600)
        curves.append(seconds(t0))
    got = v.faithfulness.curves
    assert isinstance(got, list), v.faithfulness.status.value
    out = {"run_s": statistics.median(runs), "curve_s": statistics.median(curves),
           "n_forward": sum(c.n_forward for c in got),
           "auc": {c.mode: {r: round(a, 3) for r, a in c.auc["pixels"].items()} for c in got}}
    v.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-inversion", action="store_true")
    args = ap.parse_args()
    model = nv.default_model()
    report = {"machine": cpu_name() if args.device == "cpu" else torch.cuda.get_device_name(),
              "threads": torch.get_num_threads(), "torch": torch.__version__, "load": os.getloadavg()[0],
              "pcace": pcace(model, args.device, args.repeats)}
    if not args.skip_inversion:
        report["inversion"] = inversion(model, args.device, args.repeats)
    report["load_after"] = os.getloadavg()[0]
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
