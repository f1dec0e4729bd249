"""Cost and memory of nv.top_examples against the bare forward passes of the same images.

The digits CNN over N images made from the 1,797 digits (each pass of the set shifted by a
seeded random offset, so no two passes repeat), streamed from a loader that builds each batch on
the fly, so the data set itself never sits in memory. In one process, per N: the bare forward
passes of the batches, then top_examples (k=9, layers relu2 and relu3, with generality, and
without), best of R repeats. Peak resident memory is measured in a fresh subprocess per N.
Usage:

    python benchmarks/bench_examples.py [--sizes 2000 5000 10000 20000] [--repeats 2] [--batch 256]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
from machine import cpu_name  # benchmarks/machine.py, beside this script

import neuronviz as nv

LAYERS = ["relu2", "relu3"]


class Shifted(torch.utils.data.IterableDataset):
    """N digit images in batches: the digits, then shifted copies (a seeded roll per pass)."""

    def __init__(self, n: int, batch: int) -> None:
        self.n, self.batch = n, batch
        self.x, self.y = nv.load_digits()

    def __iter__(self):
        done, rep = 0, 0
        while done < self.n:
            g = torch.Generator().manual_seed(rep)
            dy, dx = (int(v) for v in torch.randint(-1, 2, (2,), generator=g))
            base = torch.roll(self.x, (dy, dx), (2, 3)) if rep else self.x
            for lo in range(0, len(base), self.batch):
                take = min(self.batch, len(base) - lo, self.n - done)
                if take <= 0:
                    return
                yield base[lo : lo + take], self.y[lo : lo + take]
                done += take
            rep += 1


def loader(n: int, batch: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(Shifted(n, batch), batch_size=None)


def bare(model: torch.nn.Module, n: int, batch: int) -> float:
    t = time.perf_counter()
    with torch.no_grad():
        for x, _ in loader(n, batch):
            model(x)
    return time.perf_counter() - t


def timed(model: torch.nn.Module, n: int, batch: int, generality: bool) -> float:
    t = time.perf_counter()
    nv.top_examples(model, loader(n, batch), LAYERS, k=9, generality=generality, receptive_fields=False,
                    progress=False)
    return time.perf_counter() - t


def child(n: int, batch: int) -> None:
    torch.set_num_threads(1)
    model = nv.digits_model()
    nv.top_examples(model, loader(n, batch), LAYERS, k=9, progress=False)
    print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 5000, 10000, 20000])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--child", type=int, default=None)
    args = ap.parse_args()
    if args.child is not None:
        child(args.child, args.batch)
        return
    torch.set_num_threads(1)
    model = nv.digits_model()
    print(f"# {cpu_name()}, 1 thread, torch {torch.__version__}, batch {args.batch}, k=9, layers {LAYERS}")
    print("| N | bare forward (s) | top_examples (s) | ratio | without generality (s) | ratio | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|")
    for n in args.sizes:
        b = min(bare(model, n, args.batch) for _ in range(args.repeats))
        t = min(timed(model, n, args.batch, True) for _ in range(args.repeats))
        t0 = min(timed(model, n, args.batch, False) for _ in range(args.repeats))
        out = subprocess.run([sys.executable, __file__, "--child", str(n), "--batch", str(args.batch)],
                             capture_output=True, text=True, check=True)
        rss = json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"]
        print(f"| {n:,} | {b:.2f} | {t:.2f} | {t / b:.2f}x | {t0:.2f} | {t0 / b:.2f}x | {rss:.0f} |", flush=True)


if __name__ == "__main__":
    main()
