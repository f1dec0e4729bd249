"""Time of score_neurons over N samples divided by bare forward passes over the same N images.

Both run in the same process, interleaved, on the same batches; the ratio is the overhead of
perturbing, recording and accumulating statistics. Usage:

    python benchmarks/bench_scoring.py [--n 128] [--batch-size 32] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import neuronviz as nv
from machine import cpu_name  # benchmarks/machine.py, beside this script


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def models(device: torch.device) -> dict:
    import torchvision

    torch.manual_seed(0)
    x = nv.preprocess(nv.sample_image("cat")).to(device)
    return {
        "efficientnet-lite0 (default)": (nv.default_model().to(device), x, ["blocks.10", "blocks.15"]),
        "resnet18 (random weights)": (
            torchvision.models.resnet18(weights=None).eval().to(device),
            x,
            ["layer1", "layer2", "layer3", "layer4"],
        ),
    }


def bench(model, x, layers, n: int, batch_size: int, repeats: int, device: torch.device) -> dict:
    images = nv.perturb.MultiplicativeGaussian().sample(x, range(n), seed=0)

    def bare() -> None:
        with torch.no_grad():
            for lo in range(0, n, batch_size):
                model(images[lo : lo + batch_size])

    def score() -> None:
        nv.score_neurons(model, x, layers, n_samples=n, batch_size=batch_size)

    bare(), score()  # warm-up: allocator, kernels, caches
    times = {"bare": [], "score": []}
    for _ in range(repeats):
        for name, fn in (("bare", bare), ("score", score)):
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    bare_s, score_s = statistics.median(times["bare"]), statistics.median(times["score"])
    return {"bare_s": bare_s, "score_s": score_s, "ratio": score_s / bare_s, "layers": layers}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"# machine: {machine}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    results = {}
    for name, (model, x, layers) in models(device).items():
        r = bench(model, x, layers, args.n, args.batch_size, args.repeats, device)
        results[name] = r
        print(
            f"{name:<30} N={args.n} batch={args.batch_size} layers={','.join(layers)}: "
            f"bare {r['bare_s']:.2f}s, score_neurons {r['score_s']:.2f}s, ratio {r['ratio']:.3f}"
        )
    print(json.dumps({"device": str(device), "machine": machine, "results": results}))


if __name__ == "__main__":
    main()
