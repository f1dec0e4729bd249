"""top_examples in two gloo processes gives what one process gives on all the images, ties included.

The ranks run in subprocesses that execute this file as a script (as tests/methods/test_distributed.py
does); each saves its result and the test compares it with a single-process run made here.
Batches of one image keep the forward pass's rounding the same in both, so the comparison is exact.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from torch import nn

WORLD = 2
N_IMAGES = 120
LAYERS = ["1", "3"]


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 3, stride=2, padding=1), nn.ReLU())


def make_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(N_IMAGES, 3, 8, 8, generator=g), torch.randint(0, 5, (N_IMAGES,), generator=g)
    x[100], x[7] = x[3], x[3]  # exact ties, which fall on different ranks under either split
    return x, y


def summary(ex) -> dict:
    out = {}
    for name in LAYERS:
        g = ex.generality(name)
        out[name] = (ex.values[name], ex.images[name], ex.positions[name], g.share, g.threshold, g.entropy)
    return out


def _on_a_rank(rank: int) -> dict:
    import neuronviz as nv

    x, y = make_data()
    model = make_model()
    data = torch.utils.data.TensorDataset(x, y)
    sampler = torch.utils.data.distributed.DistributedSampler(data, num_replicas=WORLD, rank=rank, shuffle=False)
    block = range(N_IMAGES * rank // WORLD, N_IMAGES * (rank + 1) // WORLD)
    return {
        "sampler": summary(nv.top_examples(model, torch.utils.data.DataLoader(data, batch_size=1, sampler=sampler),
                                           LAYERS, k=5, progress=False)),
        "tensor": summary(nv.top_examples(model, x, LAYERS, k=5, labels=y, batch_size=1, progress=False)),
        "own batches": summary(nv.top_examples(model, [(x[i:i + 1], y[i:i + 1]) for i in block], LAYERS, k=5,
                                               progress=False)),
    }


def _main(out_dir: str) -> None:
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=timedelta(seconds=30))
    try:
        torch.save(_on_a_rank(rank), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ranks")
    port = _free_port()
    procs = []
    for rank in range(WORLD):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(WORLD), "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, __file__, str(out)], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    started = time.monotonic()
    try:
        for p in procs:
            _, err = p.communicate(timeout=max(1.0, 120 - (time.monotonic() - started)))
            assert p.returncode == 0, err[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.mark.slow
def test_two_gloo_ranks_equal_one_process_for_every_way_of_splitting_the_images(ranks):
    import neuronviz as nv

    x, y = make_data()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as on the ranks: another thread count sums the convolutions in another order
    try:
        single = summary(nv.top_examples(make_model(), x, LAYERS, k=5, labels=y, batch_size=1, progress=False))
    finally:
        torch.set_num_threads(threads)
    for rank_result in ranks:
        for how, got in rank_result.items():
            for name in LAYERS:
                for want, have in zip(single[name], got[name]):
                    assert torch.equal(want.nan_to_num(-1.0) if want.is_floating_point() else want,
                                       have.nan_to_num(-1.0) if have.is_floating_point() else have), (how, name)


def test_tied_copies_rank_the_smaller_index_first():
    import neuronviz as nv

    x, _ = make_data()
    ex = nv.top_examples(make_model(), x, "1", k=N_IMAGES, batch_size=1, progress=False)
    for c in range(6):
        order = ex.images["1"][:, c].tolist()
        assert order.index(3) < order.index(7) < order.index(100)


if __name__ == "__main__":
    _main(sys.argv[1])
