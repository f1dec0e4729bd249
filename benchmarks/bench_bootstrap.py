"""Time of score_neurons(bootstrap=B) divided by score_neurons without it, same run otherwise.

Default model, its two default layers, N copies of the cat photo; both variants interleaved in
one process, the median of ``--repeats`` (each variant's median, and the median of the per-repeat
ratios, which cancels slow phases of a shared machine best). Usage:

    python benchmarks/bench_bootstrap.py [--n 64] [--bootstrap 32] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from machine import cpu_name  # benchmarks/machine.py, beside this script

import neuronviz as nv


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--bootstrap", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    dev = torch.device(a.device)
    model = nv.default_model().to(dev)
    x = nv.preprocess(nv.sample_image("cat")).to(dev)
    from neuronviz.core.layer_choice import default_layers

    layers = list(default_layers(model, nv.layer_summary(model, x)))
    times: dict[str, list[float]] = {"plain": [], "bootstrap": []}

    def run(bootstrap: int) -> float:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t = time.perf_counter()
        nv.score_neurons(model, x, layers, n_samples=a.n, batch_size=a.batch_size, bootstrap=bootstrap, progress=False)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return time.perf_counter() - t

    run(0)  # warm-up
    for _ in range(a.repeats):
        times["plain"].append(run(0))
        times["bootstrap"].append(run(a.bootstrap))
    plain, boot = statistics.median(times["plain"]), statistics.median(times["bootstrap"])
    ratios = [b / p for p, b in zip(times["plain"], times["bootstrap"])]
    print(json.dumps({"machine": cpu_name() if dev.type == "cpu" else torch.cuda.get_device_name(dev),
                      "threads": torch.get_num_threads(), "device": str(dev), "layers": layers, "n": a.n,
                      "bootstrap": a.bootstrap, "plain_s": round(plain, 3), "bootstrap_s": round(boot, 3),
                      "ratio": round(boot / plain, 3),
                      "median_pair_ratio": round(statistics.median(ratios), 3),
                      "ratios": [round(r, 3) for r in ratios]}))


if __name__ == "__main__":
    main()
