"""Bootstrap replicates over two gloo ranks equal one process's (the copies are split between the ranks)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_nets import tiny_cnn  # noqa: E402

KW = dict(n_samples=21, bootstrap=12, bootstrap_seed=4, batch_size=4, progress=False)


def _image() -> torch.Tensor:
    return torch.rand(1, 3, 10, 10, generator=torch.Generator().manual_seed(2))


@pytest.mark.slow
def test_replicates_over_two_ranks_equal_one_process(tmp_path):
    import neuronviz as nv

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, __file__, str(r), str(tmp_path)], env=env) for r in range(2)]
    assert all(p.wait(120) == 0 for p in procs)
    single = nv.score_neurons(tiny_cnn().eval(), _image(), ["relu1", "relu2"], **KW)
    for r in range(2):
        got = torch.load(tmp_path / f"rank{r}.pt")
        for metric in ("correlation", "precision"):
            for layer in ("relu1", "relu2"):
                torch.testing.assert_close(got[metric][layer], single.replicates[metric][layer], rtol=1e-6, atol=1e-7)


if __name__ == "__main__":
    import torch.distributed as dist

    import neuronviz as nv

    rank, out = int(sys.argv[1]), Path(sys.argv[2])
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=timedelta(seconds=60))
    try:
        s = nv.score_neurons(tiny_cnn().eval(), _image(), ["relu1", "relu2"], **KW)
        torch.save(s.replicates, out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()
