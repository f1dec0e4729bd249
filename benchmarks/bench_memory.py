"""Peak memory of score_neurons for N = 256 and N = 4096 samples (per-channel mode).

Each N runs in a fresh subprocess; the number reported is the growth of the peak resident set
(CPU) or of the peak allocated CUDA memory over the level after the model is loaded and warmed
up, so the interpreter and torch themselves do not count. Usage:

    python benchmarks/bench_memory.py [--sizes 256 4096] [--device cpu] [--image-size 224]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys


def child(n: int, device: str, image_size: int, batch_size: int) -> dict:
    import torch

    import neuronviz as nv

    dev = torch.device(device)
    model = nv.default_model().to(dev)
    x = nv.preprocess(nv.sample_image("cat"), size=image_size).to(dev)
    layers = ["blocks.10", "blocks.15"]
    nv.score_neurons(model, x, layers, n_samples=batch_size, batch_size=batch_size)  # warm-up
    if dev.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    nv.score_neurons(model, x, layers, n_samples=n, batch_size=batch_size)
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"n": n, "base_bytes": base, "peak_bytes": peak, "growth_bytes": peak - base}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 4096])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.device, args.image_size, args.batch_size)))
        return
    rows = []
    for n in args.sizes:
        cmd = [sys.executable, __file__, "--child", str(n), "--device", args.device,
               "--image-size", str(args.image_size), "--batch-size", str(args.batch_size)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"N={n:>5}: peak {r['peak_bytes'] / 2**20:8.1f} MiB (growth over warm baseline "
              f"{r['growth_bytes'] / 2**20:7.1f} MiB)")
    first, last = rows[0], rows[-1]
    print(f"peak(N={last['n']}) / peak(N={first['n']}) = {last['peak_bytes'] / first['peak_bytes']:.3f}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
