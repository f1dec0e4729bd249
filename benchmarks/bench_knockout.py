"""Cost of a deletion curve against the bare forward passes of the same number of images.

The default model (EfficientNet-Lite0, 224 px, cat photo), one layer, three rankings
(correlation, precision, one random seed) x 17 points (k = 0, 2, ..., 32): 51 knock-out sets,
run by :func:`neuronviz.deletion_curve` in batched passes (one clean pass, and k = 0 shared by
the three rankings, so 49 distinct sets). The reference is 51 copies of the image through the
bare model in batches of the same size, in the same process, eval mode, no gradients. The scores
are computed once before timing (they are not part of the curve's cost). Each timing is the
median of ``--repeats`` interleaved runs after a warm-up; the load average is printed, since
other processes inflate CPU timings. Usage:

    python benchmarks/bench_knockout.py [--device cpu] [--layer blocks.15] [--repeats 5] [--batch 32]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time

import torch

import neuronviz as nv
from machine import cpu_name  # benchmarks/machine.py, beside this script

KS = range(0, 33, 2)  # 17 points


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--layer", default="blocks.15")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=None, help="rows per pass (default: neuronviz's, 32 CPU / 128 GPU)")
    args = ap.parse_args()
    device = torch.device(args.device)
    model = nv.default_model().to(device).eval()
    x = nv.preprocess(nv.sample_image("cat")).to(device)
    scores = nv.score_neurons(model, x, args.layer, n_samples=32)
    n_images = 3 * len(KS)
    batch = args.batch or (128 if device.type == "cuda" else 32)
    copies = x.expand(n_images, -1, -1, -1).contiguous()

    def bare() -> None:
        with torch.no_grad():
            for lo in range(0, n_images, batch):
                model(copies[lo : lo + batch])

    state = {}

    def curve() -> None:
        state["c"] = nv.deletion_curve(model, x, scores, ks=KS, random=1, batch_size=batch, device=device)

    bare(), curve()  # warm-up
    times: dict[str, list[float]] = {"bare_s": [], "curve_s": []}
    for _ in range(args.repeats):  # interleaved, so a burst of load elsewhere hits both alike
        times["bare_s"].append(timed(bare, device))
        times["curve_s"].append(timed(curve, device))
    c = state["c"]
    result = {k: statistics.median(v) for k, v in times.items()}
    result["ratio"] = result["curve_s"] / result["bare_s"]
    result.update(all_s=times, images=n_images, distinct_sets=c.n_sets, passes=c.n_forward,
                  bare_passes=math.ceil(n_images / batch), batch=batch, layer=args.layer,
                  auc={r: round(a, 4) for r, a in c.auc[args.layer].items()})
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"# machine: {machine}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"deletion curve, 3 rankings x {len(KS)} points on {args.layer}: {result['curve_s']:.2f} s "
          f"({c.n_sets} distinct sets, {c.n_forward} passes) vs {result['bare_s']:.2f} s for {n_images} bare images "
          f"({result['bare_passes']} passes): ratio {result['ratio']:.3f}")
    print(f"# load average (1, 5, 15 min): {load}")
    print(json.dumps({"device": str(device), "machine": machine, "load": load, "result": result}))


if __name__ == "__main__":
    main()
