"""PCACE and neuron scores over a data set, split across processes with torch.distributed.

Every process reads its own shard of the images; neuronviz reduces the statistics across the
processes, so each one gets the result of the whole data set (printed by rank 0). Run it
alone, or with torchrun:

    python examples/distributed_pcace.py                                      # one process
    torchrun --nproc_per_node=2 examples/distributed_pcace.py                 # CPUs, gloo
    torchrun --nproc_per_node=4 examples/distributed_pcace.py --device cuda   # one GPU each, NCCL

The three print the same ranking. The data are the 1,797 UCI digits bundled with neuronviz
and the model is its digits CNN: nothing is downloaded. For your own data set, replace
``shard_of`` with your Dataset (a ``DistributedSampler`` shards it for you; with
``drop_last=False`` it repeats a few images to even out the shards, and those count twice).
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Subset, TensorDataset

import neuronviz as nv


def shard_of(data: TensorDataset, rank: int, world: int) -> Subset:
    """Every ``world``-th image from ``rank`` on: disjoint shards that cover the data exactly once."""
    return Subset(data, range(rank, len(data), world))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--digit", type=int, default=3, help="the class whose logit PCACE explains")
    ap.add_argument("--layers", nargs="+", default=["conv1", "conv2", "conv3"])
    ap.add_argument("--device", default="cpu", help="cpu, or cuda for one GPU per process")
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()

    launched = "RANK" in os.environ  # set by torchrun
    if args.device == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if launched:
        # a short timeout: a rank that dies leaves the others waiting no longer than this
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(minutes=5))
    rank = dist.get_rank() if launched else 0
    world = dist.get_world_size() if launched else 1
    try:
        model = nv.digits_model().to(device)
        images, labels = nv.load_digits("all")

        # PCACE over every image of one digit: which channels carry that digit's logit?
        of_digit = TensorDataset(images[labels == args.digit], labels[labels == args.digit])
        loader = DataLoader(shard_of(of_digit, rank, world), batch_size=args.batch_size)
        started = time.perf_counter()
        ranking = nv.rank_layers(model, loader, args.layers, target=args.digit)
        pcace_s = time.perf_counter() - started

        # correlation and precision over the whole data set, explaining the same logit
        everything = DataLoader(shard_of(TensorDataset(images, labels), rank, world), batch_size=args.batch_size)
        started = time.perf_counter()
        scores = nv.score_neurons(
            model, images[0], args.layers[-1], target=args.digit, output="logit", samples=everything
        )
        scores_s = time.perf_counter() - started

        if rank == 0:
            n = ranking[args.layers[0]].n_images
            print(f"{world} process(es) on {device}: PCACE over {n} images of digit {args.digit} "
                  f"in {pcace_s:.2f} s, scores over {scores.n_samples} images in {scores_s:.2f} s\n")
            print(ranking)
            for name in args.layers:
                top = ranking[name].top(5)
                print(f"{name:<8} top channels {top}  scores {[round(float(ranking[name].scores[c]), 3) for c in top]}")
            last = args.layers[-1]
            print(f"\n{last} by correlation with the digit-{args.digit} logit: {scores.top('correlation', 5)[last]}")
    finally:
        if launched:
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
