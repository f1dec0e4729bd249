"""Which post-activation layers of the default model to score by default: measured on a photo.

For every activation output (``*.act``) of EfficientNet-Lite0 with a spatial map, the cat photo's
50 perturbed copies (the paper's scheme) are scored, and per layer this prints: channels, how
many have a mean activation under 0.1 (the paper's exclusion from precision), how many of those
are really silent (all zero over every copy), the share of the correlation top-5 that is also in
the precision top-5, and the spread of the channel correlations (the gap between the top-5 mean
and the median: how clearly the best channels stand out).

Run: ``python benchmarks/bench_default_layers.py [--image cat] [--n-samples 50]``.
"""

from __future__ import annotations

import argparse

import torch

import neuronviz as nv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="cat")
    parser.add_argument("--n-samples", type=int, default=50)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = nv.default_model()
    x = nv.preprocess(nv.sample_image(args.image))
    summary = nv.layer_summary(model, x)
    layers = [i.name for i in summary if i.name.endswith(".act") and len(i.shape) == 3 and i.positions > 1]
    print("| layer | shape | mean < 0.1 | of which all zero | corr top-5 in prec top-5 | corr top-5 mean - median |")
    print("|---|---|---|---|---|---|")
    for layer in layers:
        s = nv.score_neurons(model, x, [layer], n_samples=args.n_samples, keep_channel_means=True)
        mean = s.mean_activation[layer]
        silent = mean < 0.1
        # a channel is all zero when its position-averaged activation is 0 on every copy
        zero = (s.channel_means[layer].abs().amax(0) == 0)
        corr = s.correlation[layer]
        top_c = set(s.top("correlation", 5)[layer])
        top_p = set(s.top("precision", 5)[layer])
        valid = corr[~torch.isnan(corr)]
        spread = float(valid.sort(descending=True).values[:5].mean() - valid.median())
        shape = "x".join(str(d) for d in s.shapes[layer])
        print(f"| {layer} | {shape} | {int(silent.sum())} | {int((silent & zero).sum())} | "
              f"{len(top_c & top_p)}/5 | {spread:.3f} |", flush=True)


if __name__ == "__main__":
    main()
