"""Two gloo processes give what one process gives on all the data, and a failing rank stops both.

The distributed runs happen in subprocesses that execute this file as a script (see the
bottom): each is one rank of a gloo process group on 127.0.0.1, saves what it computed, and
the tests compare that with a single-process run on the whole data, made here.
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
N_IMAGES = 240  # divisible by WORLD: a DistributedSampler then repeats no image
LAYERS = ["conv1", "conv2"]
GLOO_TIMEOUT_S = 30


def make_model() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential()
    net.add_module("conv1", nn.Conv2d(3, 6, 3, padding=1))
    net.add_module("relu1", nn.ReLU())
    net.add_module("conv2", nn.Conv2d(6, 5, 3, stride=2, padding=1))
    net.add_module("relu2", nn.ReLU())
    net.add_module("pool", nn.AdaptiveAvgPool2d(1))
    net.add_module("flat", nn.Flatten())
    net.add_module("fc", nn.Linear(5, 4))
    return net


def make_images() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(N_IMAGES, 3, 8, 8, generator=g)


def rank_order(n: int, world: int = WORLD) -> torch.Tensor:
    """Where the samples of a DistributedSampler(shuffle=False) end up: rank 0's, then rank 1's."""
    return torch.cat([torch.arange(r, n, world) for r in range(world)])


# ---------------------------------------------------------------------------------------------
# the ranks (run as a script)


class BreaksAt:
    """A loader that raises on one of its batches, on the given iteration over it."""

    def __init__(self, loader, batch: int, iteration: int = 0) -> None:
        self.loader, self.batch, self.iteration, self.iterations = loader, batch, iteration, 0

    def __iter__(self):
        it, self.iterations = self.iterations, self.iterations + 1
        for i, item in enumerate(self.loader):
            if it == self.iteration and i == self.batch:
                raise ValueError(f"broken batch {i} on pass {it + 1}")
            yield item


def _loader(images: torch.Tensor, rank: int) -> torch.utils.data.DataLoader:
    data = torch.utils.data.TensorDataset(images, torch.zeros(len(images)))
    sampler = torch.utils.data.distributed.DistributedSampler(data, num_replicas=WORLD, rank=rank, shuffle=False)
    return torch.utils.data.DataLoader(data, batch_size=16, sampler=sampler)


def _scores_on_a_rank(rank: int) -> dict:
    import neuronviz as nv

    images, model = make_images(), make_model()
    loader = _loader(images, rank)
    out = {}
    s = nv.score_neurons(model, images[0], LAYERS, target=2, samples=loader, keep_channel_means=True)
    out["loader"] = {"correlation": s.correlation, "precision": s.precision, "mean": s.mean_activation,
                     "outputs": s.outputs, "channel_means": s.channel_means, "n": s.n_samples}
    s = nv.score_neurons(model, images[0], LAYERS, n_samples=31, batch_size=8)
    out["perturbed"] = {"correlation": s.correlation, "precision": s.precision, "outputs": s.outputs,
                        "target": s.target}
    r = nv.rank_layers(model, loader, LAYERS, target=1)
    out["pcace"] = {name: (r[name].scores, r[name].ranking, r[name].explained_variance) for name in LAYERS}
    out["pcace_targets"] = r[LAYERS[0]].target_values
    own = nv.pcace(model, images[rank::WORLD], "conv2", target=1, n_components=2)  # the user's own shards
    out["pcace_tensor_shards"] = (own.scores, own.ranking)
    return out


def _failures_on_a_rank(rank: int) -> tuple[dict, BaseException]:
    import neuronviz as nv

    images, model = make_images(), make_model()
    loader = _loader(images, rank)
    seen, last = {}, None
    started = time.monotonic()
    for name, run in [
        ("score_neurons", lambda src: nv.score_neurons(model, images[0], LAYERS, samples=src)),
        ("pcace", lambda src: nv.pcace(model, src, "conv2", target=1)),  # fails on its second pass
    ]:
        src = BreaksAt(loader, batch=3, iteration=0 if name == "score_neurons" else 1) if rank == 1 else loader
        try:
            run(src)
            seen[name] = "no error"
        except Exception as err:  # noqa: BLE001 - recorded for the test, re-raised below
            seen[name] = f"{type(err).__name__}: {err}"
            last = err
    seen["seconds"] = time.monotonic() - started
    return seen, last


def _main(kind: str, out_dir: str) -> None:
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    torch.set_num_threads(1)  # two ranks share the cores
    dist.init_process_group("gloo", timeout=timedelta(seconds=GLOO_TIMEOUT_S))
    try:
        if kind == "scores":
            torch.save(_scores_on_a_rank(rank), Path(out_dir) / f"rank{rank}.pt")
        else:
            seen, err = _failures_on_a_rank(rank)
            torch.save(seen, Path(out_dir) / f"rank{rank}.pt")
            if err is not None:
                raise err  # the process ends with the error, as a script under torchrun would
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------
# the tests


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: on a busy machine every multi-threaded op would wait for a time slice."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(kind: str, out_dir: Path, timeout: float = 120) -> tuple[list[subprocess.CompletedProcess], float]:
    """Run WORLD ranks of this file; every one must end within ``timeout`` (a hang fails the test)."""
    port = _free_port()
    procs = []
    for rank in range(WORLD):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(WORLD), "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, __file__, kind, str(out_dir)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    started = time.monotonic()
    results = []
    try:
        for p in procs:
            left = max(1.0, timeout - (time.monotonic() - started))
            stdout, stderr = p.communicate(timeout=left)
            results.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return results, time.monotonic() - started


@pytest.fixture(scope="module")
def ranks_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ranks")
    runs, _ = _launch("scores", out)
    for r in runs:
        assert r.returncode == 0, r.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.fixture(scope="module")
def single():
    """The same computations in one process, on all the images as one tensor (the in-memory paths)."""
    import neuronviz as nv

    images, model = make_images(), make_model()
    return {
        "loader": nv.score_neurons(model, images[0], LAYERS, target=2, samples=images, keep_channel_means=True),
        "perturbed": nv.score_neurons(model, images[0], LAYERS, n_samples=31, batch_size=8),
        "pcace": nv.rank_layers(model, images, LAYERS, target=1),
        "pcace_conv2_q2": nv.pcace(model, images, "conv2", target=1, n_components=2),
    }


@pytest.mark.slow
def test_every_rank_gets_the_same_result(ranks_results):
    a, b = ranks_results
    for key in ("correlation", "precision"):
        for name in LAYERS:
            assert torch.equal(a["loader"][key][name].nan_to_num(-1), b["loader"][key][name].nan_to_num(-1))
    assert torch.equal(a["loader"]["outputs"], b["loader"]["outputs"])
    for name in LAYERS:
        assert torch.equal(a["pcace"][name][0], b["pcace"][name][0])


@pytest.mark.slow
def test_scores_over_a_sharded_loader_equal_one_process_on_all_samples(ranks_results, single):
    got, ref = ranks_results[0]["loader"], single["loader"]
    assert got["n"] == N_IMAGES
    for name in LAYERS:
        torch.testing.assert_close(got["correlation"][name], ref.correlation[name], rtol=0, atol=1e-6, equal_nan=True)
        torch.testing.assert_close(got["precision"][name], ref.precision[name], rtol=1e-6, atol=0, equal_nan=True)
        torch.testing.assert_close(got["mean"][name], ref.mean_activation[name], rtol=0, atol=1e-6)
        torch.testing.assert_close(got["channel_means"][name], ref.channel_means[name][rank_order(N_IMAGES)])
    torch.testing.assert_close(got["outputs"], ref.outputs[rank_order(N_IMAGES)], rtol=1e-6, atol=1e-9)


@pytest.mark.slow
def test_perturbed_copies_split_across_ranks_equal_one_process(ranks_results, single):
    got, ref = ranks_results[1]["perturbed"], single["perturbed"]
    assert got["target"] == ref.target
    torch.testing.assert_close(got["outputs"], ref.outputs, rtol=1e-6, atol=1e-9)  # contiguous blocks: same order; batch composition changes float32 rounding
    for name in LAYERS:
        torch.testing.assert_close(got["correlation"][name], ref.correlation[name], rtol=0, atol=1e-6, equal_nan=True)
        torch.testing.assert_close(got["precision"][name], ref.precision[name], rtol=1e-6, atol=0, equal_nan=True)


@pytest.mark.slow
def test_pcace_over_a_sharded_loader_equals_one_process_on_all_images(ranks_results, single):
    got = ranks_results[0]
    for name in LAYERS:
        scores, ranking, explained = got["pcace"][name]
        ref = single["pcace"][name]
        assert ranking.tolist() == ref.ranking.tolist()
        torch.testing.assert_close(scores, ref.scores, rtol=0, atol=1e-4)
        torch.testing.assert_close(explained, ref.explained_variance, rtol=0, atol=1e-8)
    ref_y = single["pcace"][LAYERS[0]].target_values
    torch.testing.assert_close(got["pcace_targets"], ref_y[rank_order(N_IMAGES)])
    scores, ranking = got["pcace_tensor_shards"]
    assert ranking.tolist() == single["pcace_conv2_q2"].ranking.tolist()
    torch.testing.assert_close(scores, single["pcace_conv2_q2"].scores, rtol=0, atol=1e-4)


@pytest.mark.slow
def test_a_loader_that_raises_on_one_rank_stops_every_rank_with_the_error(tmp_path):
    runs, seconds = _launch("failures", tmp_path, timeout=3 * GLOO_TIMEOUT_S)
    assert [r.returncode for r in runs] == [1, 1]
    # the ranks agree on the failure at once: nobody waits for the backend's timeout
    assert seconds < GLOO_TIMEOUT_S
    seen = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    assert seen[1]["score_neurons"] == "ValueError: broken batch 3 on pass 1"
    assert seen[1]["pcace"] == "ValueError: broken batch 3 on pass 2"
    for what in ("score_neurons", "pcace"):
        assert seen[0][what].startswith("PeerError: rank 1 of 2 failed during")
        assert "broken batch 3" in seen[0][what]
    assert "ValueError: broken batch 3 on pass 2" in runs[1].stderr
    assert "PeerError: rank 1 of 2 failed" in runs[0].stderr and "broken batch 3 on pass 2" in runs[0].stderr


def test_a_group_of_one_rank_runs_the_distributed_code_to_the_same_scores(tmp_path):
    import torch.distributed as dist

    import neuronviz as nv

    images, model = make_images()[:60], make_model()
    alone = nv.pcace(model, images, "conv2", target=1)
    alone_scores = nv.score_neurons(model, images[0], "conv2", samples=images)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1,
                            timeout=timedelta(seconds=GLOO_TIMEOUT_S))
    try:
        grouped = nv.pcace(model, images, "conv2", target=1, distributed=True)
        scores = nv.score_neurons(model, images[0], "conv2", samples=list(images.split(16)), distributed=True)
        with pytest.raises(ValueError, match="broken batch 1"):  # a rank's own error, not a PeerError
            nv.pcace(model, BreaksAt(list(images.split(16)), batch=1), "conv2", target=1, distributed=True)
    finally:
        dist.destroy_process_group()
    assert grouped.ranking.tolist() == alone.ranking.tolist()
    torch.testing.assert_close(grouped.scores, alone.scores, rtol=0, atol=1e-9)
    torch.testing.assert_close(scores.correlation["conv2"], alone_scores.correlation["conv2"], rtol=0, atol=1e-6)
    torch.testing.assert_close(scores.outputs, alone_scores.outputs, rtol=0, atol=1e-12)


def test_nccl_with_a_cpu_device_is_refused_with_advice():
    from neuronviz.core.distributed import _comm_device
    from neuronviz.core.errors import NeuronvizError

    with pytest.raises(NeuronvizError, match="NCCL.*CUDA tensors only.*backend='gloo'"):
        _comm_device("nccl", torch.device("cpu"))
    assert _comm_device("gloo", torch.device("cpu")) == torch.device("cpu")
    assert _comm_device("cpu:gloo,cuda:nccl", torch.device("cpu")) == torch.device("cpu")


def test_distributed_true_without_a_process_group_says_how_to_start_one():
    import neuronviz as nv
    from neuronviz.core.errors import NeuronvizError

    model, images = make_model(), make_images()[:40]
    with pytest.raises(NeuronvizError, match="torchrun.*init_process_group"):
        nv.score_neurons(model, images[0], "conv1", samples=images, distributed=True)
    with pytest.raises(NeuronvizError, match="torchrun.*init_process_group"):
        nv.pcace(model, images, "conv1", target=1, distributed=True)


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2])
