"""Data-set scale: throughput of streamed scores on 1 and K processes, and memory against N.

Three measurements, each in fresh processes:

- throughput: bare forward passes, ``score_neurons`` over a loader and streaming ``pcace``
  over N synthetic images, on 1 process and on K processes launched by torchrun (each rank
  reads its share, the statistics are reduced across ranks; gloo on CPUs, NCCL on GPUs).
  Images per second = N / the slowest rank's time; the ratio to bare forward passes is the
  cost of the method (streaming PCACE reads the images twice: once up to the layer, once
  whole).
- memory: peak resident memory (CPU) or peak allocated GPU memory of one process running
  streaming PCACE, against the same with the activations held in memory, for several N.
- the GPU comparison of the issue is ``--device cuda`` with the defaults it selects:
  ResNet-50 at 224 px, one layer (``layer3``), streaming PCACE against bare forward passes.

The images are generated on the compute device batch by batch from a seed (no data set is
held, no loading cost), so what is timed is the method. Usage:

    python benchmarks/bench_distributed.py                        # CPU: ResNet-18, 64 px
    python benchmarks/bench_distributed.py --device cuda          # GPU: ResNet-50, 224 px
    python benchmarks/bench_distributed.py --only throughput --procs 1 2 --images 512
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import timedelta

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


class SyntheticImages:
    """Batches of random images made on the device from (seed, batch index); this rank's share only."""

    def __init__(self, n: int, batch: int, size: int, device: torch.device, rank: int = 0, world: int = 1) -> None:
        self.n, self.batch, self.size, self.device = n, batch, size, device
        self.mine = [i for i in range(-(-n // batch)) if i % world == rank]

    def __iter__(self):
        for i in self.mine:
            b = min(self.batch, self.n - i * self.batch)
            g = torch.Generator(device=self.device).manual_seed(i)
            yield torch.randn(b, 3, self.size, self.size, generator=g, device=self.device)

    def __len__(self) -> int:
        return len(self.mine)


def _model(name: str, device: torch.device) -> torch.nn.Module:
    import torchvision

    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None).eval().to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- children ------------------------------------------------------------------------------------


def child_throughput(args: argparse.Namespace) -> None:
    """One rank (or the only process): time the three workloads on this rank's share."""
    import torch.distributed as dist

    import neuronviz as nv

    launched = "RANK" in os.environ
    if args.device == "cuda":
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    torch.set_num_threads(args.threads)
    if launched:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(minutes=10))
    rank, world = (dist.get_rank(), dist.get_world_size()) if launched else (0, 1)

    def barrier() -> None:
        _sync(device)
        if launched:
            dist.barrier()

    model = _model(args.model, device)
    x0 = torch.randn(1, 3, args.image_size, args.image_size, device=device)

    def forward(data: SyntheticImages) -> None:
        with torch.no_grad():
            for b in data:
                model(b)

    def scores(data: SyntheticImages) -> None:
        nv.score_neurons(model, x0, args.layer, target=0, output="logit", samples=data)

    def pcace(data: SyntheticImages) -> None:
        nv.pcace(model, data, args.layer, target=0)

    warm = SyntheticImages(max(2 * args.batch_size, 40 * world), args.batch_size, args.image_size, device, rank, world)
    data = SyntheticImages(args.n, args.batch_size, args.image_size, device, rank, world)
    runs = {"forward": forward, "score_neurons": scores, "pcace": pcace}
    seconds = {name: float("inf") for name in runs}
    for run in runs.values():
        run(warm)
    for _ in range(args.repeats):  # interleaved rounds, best of each: a busy machine only slows runs down
        for name, run in runs.items():
            barrier()
            started = time.perf_counter()
            run(data)
            barrier()
            seconds[name] = min(seconds[name], time.perf_counter() - started)
    if rank == 0:
        print(json.dumps({"procs": world, "threads": args.threads, "device": str(device), "n": args.n,
                          "seconds": seconds}))
    if launched:
        dist.destroy_process_group()


def _resident_bytes() -> int:
    """Current resident memory of this process (Linux), 0 where unknown."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class _Watched:
    """Passes ``source``'s batches through, noting the memory in use each time one is asked for."""

    def __init__(self, source: SyntheticImages, used) -> None:
        self.source, self.used, self.peak = source, used, 0

    def __iter__(self):
        for batch in self.source:
            self.peak = max(self.peak, self.used())
            yield batch


def child_memory(args: argparse.Namespace) -> None:
    """Memory of one streaming (or holding) PCACE over N images, over the warmed-up level.

    Two numbers: the most in use while the images are read (sampled whenever a batch is asked
    for), and the peak of the whole call, which includes ACE on the N x C projections (on a
    CPU: how far the call raised the process's high-water mark over the warm-up's).
    """
    import neuronviz as nv

    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    model = _model(args.model, device)
    streaming = args.mode == "streaming"
    nv.pcace(model, SyntheticImages(2 * args.batch_size, args.batch_size, args.image_size, device), args.layer,
             target=0, streaming=streaming)  # warm-up
    if device.type == "cuda":
        _sync(device)
        used = lambda: torch.cuda.memory_allocated(device)  # noqa: E731
        torch.cuda.reset_peak_memory_stats(device)
    else:
        used = _resident_bytes
        high_water = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    base = used()
    data = _Watched(SyntheticImages(args.n, args.batch_size, args.image_size, device), used)
    started = time.perf_counter()
    nv.pcace(model, data, args.layer, target=0, streaming=streaming)
    seconds = time.perf_counter() - started
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - base
    else:  # the high-water mark can only rise: its rise over the warm-up's is what this call added
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - high_water
    print(json.dumps({"n": args.n, "mode": args.mode, "base_bytes": base, "passes_bytes": data.peak - base,
                      "peak_bytes": peak, "seconds": seconds}))


# -- parent --------------------------------------------------------------------------------------


def _common(args: argparse.Namespace) -> list[str]:
    return ["--device", args.device, "--model", args.model, "--layer", args.layer, "--image-size",
            str(args.image_size), "--batch-size", str(args.batch_size), "--repeats", str(args.repeats)]


def _run(cmd: list[str], env: dict | None = None) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-4000:]}")
    return done.stdout


def _last_json(out: str) -> dict:
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


def run_throughput(args: argparse.Namespace) -> list[dict]:
    cores = os.cpu_count() or 1
    rows = []
    for k in args.procs:
        threads = max(1, cores // k) if args.device == "cpu" else 1
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={k}", __file__,
               "--child", "throughput", "--images", str(args.n), "--threads", str(threads), *_common(args)]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        rows.append(_last_json(_run(cmd, env)))
    if args.device == "cpu" and 1 in args.procs and cores > 1:  # one process, one thread: the per-core rate
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", __file__,
               "--child", "throughput", "--images", str(args.n), "--threads", "1", *_common(args)]
        rows.append(_last_json(_run(cmd, {**os.environ, "OMP_NUM_THREADS": "1"})))
    print(f"\nthroughput: {args.model} at {args.image_size} px, layer {args.layer}, N = {args.n}, "
          f"batch {args.batch_size}, best of {args.repeats}, {args.device}")
    print(f"{'procs x threads':>16} {'forward img/s':>14} {'score_neurons':>14} {'pcace':>10} "
          f"{'scores/fwd time':>16} {'pcace/fwd time':>15}")
    for r in rows:
        s = r["seconds"]
        rate = {k: args.n / v for k, v in s.items()}
        print(f"{r['procs']:>8} x {r['threads']:<5} {rate['forward']:>14.1f} {rate['score_neurons']:>14.1f} "
              f"{rate['pcace']:>10.1f} {s['score_neurons'] / s['forward']:>16.2f} {s['pcace'] / s['forward']:>15.2f}")
    return rows


def run_memory(args: argparse.Namespace) -> list[dict]:
    rows = []
    for mode in ("streaming", "held"):
        for n in args.sizes:
            cmd = [sys.executable, __file__, "--child", "memory", "--mode", mode, "--images", str(n), "--threads",
                   str(args.threads), *_common(args)]
            rows.append(_last_json(_run(cmd)))
    print(f"\nmemory: pcace of {args.model} {args.layer} at {args.image_size} px, batch {args.batch_size}, "
          f"one process, {args.device}; growth over the warmed-up level, while the images are read and "
          "at the peak of the call (which includes ACE on the N x C projections)")
    print(f"{'mode':<10} {'N':>6} {'reading MiB':>12} {'peak MiB':>9} {'seconds':>8}")
    for r in rows:
        print(f"{r['mode']:<10} {r['n']:>6} {r['passes_bytes'] / 2**20:>12.1f} {r['peak_bytes'] / 2**20:>9.1f} "
              f"{r['seconds']:>8.1f}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", help="a torchvision model name (random weights); resnet18 on CPU, resnet50 on GPU")
    ap.add_argument("--layer", default="layer3")
    ap.add_argument("--image-size", type=int)
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--images", dest="n", type=int, help="images in the throughput runs")
    ap.add_argument("--procs", type=int, nargs="+", default=None, help="process counts (default 1 and 2)")
    ap.add_argument("--sizes", type=int, nargs="+", help="N of the memory runs")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, help="threads per process (throughput on CPU: cores / processes; "
                    "memory: 1)")
    ap.add_argument("--only", choices=["throughput", "memory"])
    ap.add_argument("--child", choices=["throughput", "memory"], help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="streaming", help=argparse.SUPPRESS)
    args = ap.parse_args()
    gpu = args.device.startswith("cuda")
    args.model = args.model or ("resnet50" if gpu else "resnet18")
    args.image_size = args.image_size or (224 if gpu else 64)
    args.batch_size = args.batch_size or (128 if gpu else 64)
    args.n = args.n or (4096 if gpu else 512)
    args.sizes = args.sizes or ([2048, 16384] if gpu else [2048, 8192])
    args.procs = args.procs or ([1] if gpu else [1, 2])
    args.threads = args.threads or 1
    if args.child == "throughput":
        child_throughput(args)
        return
    if args.child == "memory":
        child_memory(args)
        return
    sys.path.insert(0, HERE)
    from machine import cpu_name

    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}"
          + (f", {torch.cuda.get_device_name()}" if gpu and torch.cuda.is_available() else ""))
    report = {}
    if args.only in (None, "throughput"):
        report["throughput"] = run_throughput(args)
    if args.only in (None, "memory"):
        report["memory"] = run_memory(args)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
