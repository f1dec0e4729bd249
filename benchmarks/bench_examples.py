"""Cost and memory of nv.top_examples against the bare forward passes of the same images.

The digits CNN over N images made from the 1,797 digits (each pass of the set shifted by a
seeded random offset, so no two passes repeat), streamed from a loader that builds each batch on
the fly, so the data set itself never sits in memory. In one process, per N and per repeat, one
after the other: the bare forward passes of the batches, top_examples (k=9, layers relu2 and
relu3) with generality, without it, and the bare passes again; each ratio is taken against the
mean of the two bare runs around it, and the table gives the medians over the repeats (wall
clock, and in brackets process CPU time, which the other jobs of a shared machine disturb less).
Peak resident memory is measured in a fresh subprocess per N. With --default N, the same on the
default model (EfficientNet-Lite0, 224 px) over N views of the bundled photos, batch 16.
Usage:

    python benchmarks/bench_examples.py [--sizes 2000 5000 10000 20000] [--repeats 5] [--batch 256]
                                        [--default 64]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
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


def clocks(fn) -> tuple[float, float]:
    """(wall, process CPU) seconds of ``fn()``."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def interleaved(bare_fn, with_fn, without_fn, repeats: int) -> dict[str, float]:
    """Median times and ratios over repeats of bare, with, without, bare (ratios against the mean bare)."""
    rows = []
    for _ in range(repeats):
        b1, g, g0, b2 = clocks(bare_fn), clocks(with_fn), clocks(without_fn), clocks(bare_fn)
        b = [(x + y) / 2 for x, y in zip(b1, b2)]
        rows.append({"bare": b[0], "with": g[0], "without": g0[0], "ratio": g[0] / b[0], "ratio0": g0[0] / b[0],
                     "cpu_ratio": g[1] / b[1], "cpu_ratio0": g0[1] / b[1]})
    return {key: statistics.median(r[key] for r in rows) for key in rows[0]}


def child(n: int, batch: int) -> None:
    torch.set_num_threads(1)
    model = nv.digits_model()
    nv.top_examples(model, loader(n, batch), LAYERS, k=9, progress=False)
    print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def default_model(n: int, repeats: int) -> None:
    """The default model over n views of the bundled photos, batch 16, its two PCACE layers."""
    from neuronviz.widgets.examples import demo_examples

    model = nv.default_model()
    per = max(1, -(-n // len(nv.sample_image_names())))
    data = torch.utils.data.Subset(demo_examples(per_photo=per), range(n))
    layers = ["blocks.10.expand.act", "blocks.15.depthwise.act"]

    def batches():
        return torch.utils.data.DataLoader(data, batch_size=16)

    def bare_fn():
        with torch.no_grad():
            for x, _ in batches():
                model(x)

    def run(generality: bool):
        return lambda: nv.top_examples(model, batches(), layers, k=9, generality=generality,
                                       receptive_fields=False, progress=False)

    clocks(bare_fn)  # warm-up
    m = interleaved(bare_fn, run(True), run(False), repeats)
    print(f"\n# default model (EfficientNet-Lite0, 224 px), {n} views, batch 16, layers {layers}")
    print("| N | bare forward (s) | top_examples (s) | ratio | without generality (s) | ratio |")
    print("|---|---|---|---|---|---|")
    print(f"| {n} | {m['bare']:.2f} | {m['with']:.2f} | {m['ratio']:.2f}x ({m['cpu_ratio']:.2f}x) | "
          f"{m['without']:.2f} | {m['ratio0']:.2f}x ({m['cpu_ratio0']:.2f}x) |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 5000, 10000, 20000])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--default", type=int, default=0, help="also the default model over this many views")
    ap.add_argument("--child", type=int, default=None)
    args = ap.parse_args()
    if args.child is not None:
        child(args.child, args.batch)
        return
    torch.set_num_threads(1)
    model = nv.digits_model()
    print(f"# {cpu_name()}, 1 thread, torch {torch.__version__}, batch {args.batch}, k=9, layers {LAYERS}, "
          f"{args.repeats} interleaved repeats (median), load average {os.getloadavg()[0]:.1f}")
    print("| N | bare forward (s) | top_examples (s) | ratio (CPU) | without generality (s) | ratio (CPU) "
          "| peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|")
    timed(model, 2000, args.batch, True)  # warm-up
    for n in args.sizes:
        m = interleaved(lambda n=n: bare(model, n, args.batch), lambda n=n: timed(model, n, args.batch, True),
                        lambda n=n: timed(model, n, args.batch, False), args.repeats)
        out = subprocess.run([sys.executable, __file__, "--child", str(n), "--batch", str(args.batch)],
                             capture_output=True, text=True, check=True)
        rss = json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"]
        print(f"| {n:,} | {m['bare']:.2f} | {m['with']:.2f} | {m['ratio']:.2f}x ({m['cpu_ratio']:.2f}x) | "
              f"{m['without']:.2f} | {m['ratio0']:.2f}x ({m['cpu_ratio0']:.2f}x) | {rss:.0f} |", flush=True)
    if args.default:
        default_model(args.default, max(2, args.repeats // 2))
    print(f"# load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
