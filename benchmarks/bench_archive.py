"""Size and time of a saved demo explorer run (``w.save("run.nvz")``) and of its scores alone.

The explorer of :func:`neuronviz.demo` (default model, cat photo, 50 copies, its two default
layers, 32 bootstrap replicates), run once; then ``--repeats`` interleaved rounds of saving the
view, loading it without the model, and saving the scores alone; medians. Also the size of each
part (the largest arrays, compressed and not) and the time of the weights fingerprint. Usage:

    python benchmarks/bench_archive.py [--repeats 3] [--out /tmp]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import zipfile
from pathlib import Path

import torch

import neuronviz as nv
from machine import cpu_name  # benchmarks/machine.py, beside this script
from neuronviz.core.archive import weights_fingerprint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=tempfile.gettempdir())
    args = parser.parse_args()
    out = Path(args.out)
    w = nv.demo()
    w.wait(900)
    assert w.status == "done", w.error
    view_path, scores_path = out / "demo-run.nvz", out / "demo-scores.nvz"
    save_s, load_s, scores_s, print_s = [], [], [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        w.save(view_path)
        save_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        v = nv.NeuronExplorer.load(view_path)
        load_s.append(time.perf_counter() - t)
        v.close()
        t = time.perf_counter()
        w.scores.save(scores_path)
        scores_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        weights_fingerprint(w.model)
        print_s.append(time.perf_counter() - t)
    with zipfile.ZipFile(view_path) as z:
        members = z.infolist()
    raw = sum(m.file_size for m in members)
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"demo view: layers {w.layers}, {w.n_samples} copies")
    print(f"view file {view_path.stat().st_size / 1024:.0f} KB ({raw / 1024:.0f} KB uncompressed, {len(members)} "
          f"arrays); save {statistics.median(save_s):.2f} s, load without the model {statistics.median(load_s):.2f} s")
    print(f"scores alone {scores_path.stat().st_size / 1024:.0f} KB; save {statistics.median(scores_s):.2f} s")
    print(f"weights fingerprint {statistics.median(print_s) * 1000:.0f} ms")
    for m in sorted(members, key=lambda m: -m.compress_size)[:5]:
        print(f"  {m.filename}: {m.compress_size / 1024:.0f} KB of {m.file_size / 1024:.0f} KB")
    w.close()


if __name__ == "__main__":
    main()
