"""Time per explanation of guided feature inversion (stage 1: 10 steps, stage 2: 70 steps).

1. The default model (EfficientNet-Lite0) at 224 px, one image per call.
2. The batched speed-up: B images in one call against B calls of one image (same photos,
   same targets, so the same masks).
3. With ``--device cuda`` (or ``--models default,vgg19``): VGG-19 at 224 px, one image, against
   the paper's 8.0 s per image (2018 GPU). The VGG-19 weights are random (timing does not depend
   on them).

Each timing is the median of ``--repeats`` interleaved runs after a short warm-up call; the
load average is printed, since other processes on the machine inflate CPU timings. Usage:

    python benchmarks/bench_inversion.py [--device cpu] [--batch 4] [--repeats 3] [--models default]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

import neuronviz as nv
from neuronviz.methods.inversion import guided_feature_inversion
from machine import cpu_name  # benchmarks/machine.py, beside this script

PAPER_SECONDS = {"vgg19": 8.0, "resnet18": 6.4, "alexnet": 4.8}
PHOTOS = ("cat", "coffee", "astronaut", "rocket")


def build(name: str, device: torch.device) -> torch.nn.Module:
    if name == "default":
        return nv.default_model().to(device)
    import torchvision

    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None).eval().to(device)


def photos(n: int, device: torch.device) -> torch.Tensor:
    return torch.cat([nv.preprocess(nv.sample_image(PHOTOS[i % len(PHOTOS)])) for i in range(n)]).to(device)


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()  # returns CPU tensors, so the device has finished
    return time.perf_counter() - t0


def bench_model(name: str, batch: int, repeats: int, device: torch.device, batched: bool) -> dict:
    model = build(name, device)
    x = photos(batch, device)
    with torch.no_grad():
        targets = model(x).argmax(1).tolist()

    def one(i: int):
        return guided_feature_inversion(model, x[i : i + 1], target=targets[i])

    guided_feature_inversion(model, x[:1], stage1_steps=2, stage2_steps=2)  # warm-up
    runs = {"single_s": lambda: one(0)}
    if batched and batch > 1:
        runs["separate_s"] = lambda: [one(i) for i in range(batch)]
        runs["batched_s"] = lambda: guided_feature_inversion(model, x, target=targets)
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):  # interleaved, so a burst of load elsewhere hits every variant alike
        for key, fn in runs.items():
            times[key].append(timed(fn, device))
    result: dict = {k: statistics.median(v) for k, v in times.items()}
    result["all_s"] = times
    if name in PAPER_SECONDS:
        result["paper_s"] = PAPER_SECONDS[name]
    if "batched_s" in result:
        result["batch"] = batch
        result["speedup"] = result["separate_s"] / result["batched_s"]
        result["batched_per_image_s"] = result["batched_s"] / batch
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", default=None, help="comma-separated: default, vgg19, resnet18, alexnet")
    args = ap.parse_args()
    device = torch.device(args.device)
    names = args.models.split(",") if args.models else (["default", "vgg19"] if device.type == "cuda" else ["default"])
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"# machine: {machine}, {torch.get_num_threads()} threads, torch {torch.__version__}", flush=True)
    results = {}
    for name in names:
        r = bench_model(name, args.batch, args.repeats, device, batched=name == "default")
        results[name] = r
        line = f"{name:<10} 224 px, 10 + 70 steps: {r['single_s']:.2f} s per image (B=1)"
        if "paper_s" in r:
            line += f"; paper {r['paper_s']:.1f} s on a 2018 GPU"
        if "speedup" in r:
            line += (
                f"; B={r['batch']}: {r['separate_s']:.2f} s as {r['batch']} calls, {r['batched_s']:.2f} s in one "
                f"({r['batched_per_image_s']:.2f} s per image), speed-up {r['speedup']:.2f}x"
            )
        print(line, flush=True)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"# load average (1, 5, 15 min): {load}")
    print(json.dumps({"device": str(device), "machine": machine, "load": load, "results": results}))


if __name__ == "__main__":
    main()
