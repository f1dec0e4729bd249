"""Cost and memory of nv.top_examples against the bare forward passes of the same images.

The digits CNN over N images made from the 1,797 digits (each pass of the set shifted by a
seeded random offset, so no two passes repeat), streamed from a loader that builds each batch on
the fly, so the data set itself never sits in memory. In one process, per N and per repeat, one
after the other: the bare forward passes of the batches, top_examples (k=9, layers relu2 and
relu3) with generality, without it, and the bare passes again; each ratio is taken against the
mean of the two bare runs around it, and the table gives the medians over the repeats (wall
clock, and in brackets process CPU time, which the other jobs of a shared machine disturb less).
Peak resident memory is measured in a fresh subprocess per N. With --default N, the same on the
default model (EfficientNet-Lite0, 224 px) over N views of the bundled photos, batch 16; with
--resnet N, torchvision's resnet18 (random weights) over N views at 64 px, batch 64.

Each row also gives the minor page faults of a run (median). With glibc's default settings a
small network's plain forward pass can fault in most of its memory at every batch (what it frees
at the end of a batch goes back to the system); whether a pass with statistics does too depends
on where its own buffers land, so the ratio then measures page faults as much as work.
--no-trim runs the whole benchmark again in a process where glibc keeps freed memory
(MALLOC_TRIM_THRESHOLD_ and MALLOC_MMAP_THRESHOLD_ set high), so that neither pass faults and the
ratio is the work alone.
Usage:

    python benchmarks/bench_examples.py [--sizes 2000 5000 10000 20000] [--repeats 5] [--batch 256]
                                        [--default 64] [--resnet 2000] [--against REV] [--no-trim]
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


def timed(model: torch.nn.Module, n: int, batch: int, generality: bool, fn=None) -> float:
    t = time.perf_counter()
    (fn or nv.top_examples)(model, loader(n, batch), LAYERS, k=9, generality=generality, receptive_fields=False,
                            progress=False)
    return time.perf_counter() - t


def clocks(fn) -> tuple[float, float, int]:
    """(wall, process CPU) seconds of ``fn()`` and its minor page faults."""
    f = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f


def interleaved(bare_fn, fns: dict, repeats: int) -> dict[str, float]:
    """Per repeat: bare, each of ``fns``, bare; each ratio against the mean of the two bare runs.

    Returns the medians of the times (``name``) and of the wall and CPU ratios (``name/ratio``,
    ``name/cpu``), and the ratio of the fastest run to the fastest bare one (``name/best``), the
    least disturbed by other jobs.
    """
    rows = []
    for _ in range(repeats):
        b1 = clocks(bare_fn)
        got = {name: clocks(fn) for name, fn in fns.items()}
        b2 = clocks(bare_fn)
        b = [(x + y) / 2 for x, y in zip(b1, b2)]
        row = {"bare": b[0], "bare/faults": b[2]}
        for name, (w, c, f) in got.items():
            row.update({name: w, f"{name}/ratio": w / b[0], f"{name}/cpu": c / b[1], f"{name}/faults": f})
        rows.append(row)
    out = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
    best_bare = min(r["bare"] for r in rows)
    for name in fns:
        out[f"{name}/best"] = min(r[name] for r in rows) / best_bare
    return out


def previous(rev: str):
    """``top_examples`` of neuronviz/methods/examples.py at git revision ``rev``, loaded beside this one."""
    import importlib.util
    import pathlib
    import re
    import tempfile

    root = pathlib.Path(__file__).resolve().parents[1]
    text = subprocess.run(["git", "show", f"{rev}:neuronviz/methods/examples.py"], cwd=root, capture_output=True,
                          text=True, check=True).stdout
    text = re.sub(r"^from \.\.", "from neuronviz.", text, flags=re.M)
    path = pathlib.Path(tempfile.mkdtemp()) / "examples_before.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("examples_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["examples_before"] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module.top_examples


def child(n: int, batch: int) -> None:
    torch.set_num_threads(1)
    model = nv.digits_model()
    nv.top_examples(model, loader(n, batch), LAYERS, k=9, progress=False)
    print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def other_model(title: str, model: torch.nn.Module, data, layers: list[str], batch: int, repeats: int) -> None:
    """Bare passes against top_examples on ``model`` over the Dataset ``data``, interleaved."""
    n = len(data)
    model.eval()  # as top_examples runs it (a training-mode BatchNorm would slow the bare passes)

    def batches():
        return torch.utils.data.DataLoader(data, batch_size=batch)

    def bare_fn():
        with torch.no_grad():
            for x, _ in batches():
                model(x)

    def run(generality: bool):
        return lambda: nv.top_examples(model, batches(), layers, k=9, generality=generality,
                                       receptive_fields=False, progress=False)

    clocks(bare_fn)  # warm-up
    m = interleaved(bare_fn, {"with": run(True), "without": run(False)}, repeats)
    print(f"\n# {title}, {n} images, batch {batch}, layers {layers}")
    print("| N | bare forward (s) | top_examples (s) | ratio | without generality (s) | ratio "
          "| page faults: bare, with, without |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {n} | {m['bare']:.2f} | {m['with']:.2f} | {m['with/ratio']:.2f}x ({m['with/cpu']:.2f}x) | "
          f"{m['without']:.2f} | {m['without/ratio']:.2f}x ({m['without/cpu']:.2f}x) | "
          f"{m['bare/faults']:,.0f}, {m['with/faults']:,.0f}, {m['without/faults']:,.0f} |", flush=True)


def views(n: int, size: int) -> torch.utils.data.Dataset:
    """n views of the bundled photos, ``size`` px."""
    from neuronviz.widgets.examples import demo_examples

    per = max(1, -(-n // len(nv.sample_image_names())))
    return torch.utils.data.Subset(demo_examples(per_photo=per, size=size), range(n))


def default_model(n: int, repeats: int) -> None:
    """The default model over n views of the bundled photos, batch 16, its two PCACE layers."""
    other_model("default model (EfficientNet-Lite0, 224 px)", nv.default_model(), views(n, 224),
                ["blocks.10.expand.act", "blocks.15.depthwise.act"], 16, repeats)


def resnet(n: int, repeats: int) -> None:
    """torchvision's ResNet-18 (seeded random weights) over n 64 px views, batch 64, its last two stages.

    What follows them (pooling, the classifier), which top_examples does not run, is a negligible
    share of the pass, so the ratio is the statistics' cost.
    """
    import torchvision

    torch.manual_seed(0)
    other_model("torchvision resnet18 (random weights, seed 0), 64 px", torchvision.models.resnet18(weights=None),
                views(n, 64), ["layer3", "layer4"], 64, repeats)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 5000, 10000, 20000])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--default", type=int, default=0, help="also the default model over this many views")
    ap.add_argument("--resnet", type=int, default=0, help="also torchvision's resnet18 over this many 64 px views")
    ap.add_argument("--against", default=None, help="also time top_examples as of this git revision")
    ap.add_argument("--child", type=int, default=None)
    ap.add_argument("--no-trim", action="store_true", help="run where glibc keeps freed memory (no page faults)")
    args = ap.parse_args()
    if args.child is not None:
        child(args.child, args.batch)
        return
    if args.no_trim and os.environ.get("MALLOC_TRIM_THRESHOLD_") is None:
        big = str(1 << 30)
        env = dict(os.environ, MALLOC_TRIM_THRESHOLD_=big, MALLOC_MMAP_THRESHOLD_=big)
        sys.exit(subprocess.run([sys.executable, *sys.argv], env=env).returncode)
    torch.set_num_threads(1)
    model = nv.digits_model()
    before = previous(args.against) if args.against else None
    trim = "glibc keeps freed memory (--no-trim)" if os.environ.get("MALLOC_TRIM_THRESHOLD_") else "default glibc"
    print(f"# {cpu_name()}, 1 thread, torch {torch.__version__}, batch {args.batch}, k=9, layers {LAYERS}, "
          f"{args.repeats} interleaved repeats, {trim}, load average {os.getloadavg()[0]:.1f}")
    print("# ratio: median over the repeats of the wall-clock ratio (process CPU time); best: fastest run "
          "against the fastest bare one")
    extra = f" | as of {args.against}: ratio, best | without generality" if before else ""
    print("| N | bare forward (s) | top_examples (s) | ratio (CPU) | best | without generality (s) | ratio (CPU) "
          f"| best{extra} | page faults: bare, with, without | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|---|" + ("---|---|" if before else "") + "---|---|")
    timed(model, 2000, args.batch, True)  # warm-up
    for n in args.sizes:
        fns = {"with": lambda n=n: timed(model, n, args.batch, True),
               "without": lambda n=n: timed(model, n, args.batch, False)}
        if before is not None:
            fns["before"] = lambda n=n: timed(model, n, args.batch, True, before)
            fns["before0"] = lambda n=n: timed(model, n, args.batch, False, before)
        m = interleaved(lambda n=n: bare(model, n, args.batch), fns, args.repeats)
        out = subprocess.run([sys.executable, __file__, "--child", str(n), "--batch", str(args.batch)],
                             capture_output=True, text=True, check=True)
        rss = json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"]
        old = (f" {m['before/ratio']:.2f}x, {m['before/best']:.2f}x | {m['before0/ratio']:.2f}x, "
               f"{m['before0/best']:.2f}x |") if before is not None else ""
        print(f"| {n:,} | {m['bare']:.2f} | {m['with']:.2f} | {m['with/ratio']:.2f}x ({m['with/cpu']:.2f}x) | "
              f"{m['with/best']:.2f}x | {m['without']:.2f} | {m['without/ratio']:.2f}x ({m['without/cpu']:.2f}x) | "
              f"{m['without/best']:.2f}x |{old} {m['bare/faults']:,.0f}, {m['with/faults']:,.0f}, "
              f"{m['without/faults']:,.0f} | {rss:.0f} |", flush=True)
    if args.default:
        default_model(args.default, max(2, args.repeats // 2))
    if args.resnet:
        resnet(args.resnet, max(2, args.repeats // 2))
    print(f"# load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
