"""Time of neuronviz's batched maximal_correlation against looping the `ace` 0.4.2 package.

B problems of n observations share one y (as channels of a layer share the class score), with
dependences from none to strong. The reference (pure Python, one problem at a time) is timed
on a few of them spread over the batch and extrapolated to B; the sampled problems' rho are
compared with neuronviz's. Usage:

    python benchmarks/bench_ace.py [--problems 512] [--n 300] [--ref-sample 8] [--repeats 3]
                                   [--device cpu|cuda] [--threads T]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import time

import numpy as np
import torch

from neuronviz.methods.ace import maximal_correlation
from machine import cpu_name  # benchmarks/machine.py, beside this script


def problems(b: int, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """x (b, n), y (n,): noise, noisy y^2, noisy sin(2y) and noisy exp(y), in turn."""
    rng = np.random.default_rng(seed)
    y = rng.standard_normal(n)
    noise = rng.standard_normal((b, n))
    level = np.linspace(0.05, 2.0, b)[:, None]
    kinds = np.arange(b) % 4
    x = np.where(kinds[:, None] == 0, noise, 0.0)
    x = np.where(kinds[:, None] == 1, y**2 + level * noise, x)
    x = np.where(kinds[:, None] == 2, np.sin(2 * y) + level * noise, x)
    x = np.where(kinds[:, None] == 3, np.exp(y) + level * noise, x)
    return x, y


def reference_rho(x: np.ndarray, y: np.ndarray) -> float:
    from ace import ace as ace_ref

    solver = ace_ref.ACESolver()
    solver.specify_data_set([x], y)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints every iteration
        solver.solve()
    return abs(float(np.corrcoef(solver.x_transforms[0], solver.y_transform)[0, 1]))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=512)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--ref-sample", type=int, default=8, help="problems run through the reference")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"# machine: {machine}, {torch.get_num_threads()} threads, torch {torch.__version__}")

    x, y = problems(args.problems, args.n)
    xt = torch.tensor(x, device=device)
    yt = torch.tensor(y, device=device)
    maximal_correlation(xt[:8], yt)  # warm-up: allocator, kernels
    times = []
    for _ in range(args.repeats):
        _sync(device)
        t0 = time.perf_counter()
        rho = maximal_correlation(xt, yt)
        _sync(device)
        times.append(time.perf_counter() - t0)
    ours_s = statistics.median(times)

    sample = np.linspace(0, args.problems - 1, args.ref_sample).round().astype(int)
    t0 = time.perf_counter()
    rho_ref = [reference_rho(x[i], y) for i in sample]
    ref_per_problem = (time.perf_counter() - t0) / len(sample)
    ref_s = ref_per_problem * args.problems
    diff = float(np.max(np.abs(rho.cpu().numpy()[sample] - np.array(rho_ref))))

    print(
        f"{args.problems} problems, n={args.n}: neuronviz maximal_correlation {ours_s:.3f} s "
        f"(median of {args.repeats}); ace 0.4.2 loop {ref_per_problem * 1e3:.1f} ms/problem over "
        f"{len(sample)} problems -> {ref_s:.1f} s for {args.problems}; speed-up {ref_s / ours_s:.0f}x; "
        f"max |rho difference| on the sampled problems {diff:.1e}"
    )
    print(
        json.dumps(
            {
                "device": str(device),
                "machine": machine,
                "threads": torch.get_num_threads(),
                "problems": args.problems,
                "n": args.n,
                "neuronviz_s": ours_s,
                "reference_s_per_problem": ref_per_problem,
                "reference_s_extrapolated": ref_s,
                "speedup": ref_s / ours_s,
                "max_abs_rho_diff": diff,
            }
        )
    )


if __name__ == "__main__":
    main()
