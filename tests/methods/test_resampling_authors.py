"""On a post-ReLU layer, the precision and correlation selections are the input-resampling authors' exactly.

The reference below transcribes the selection of the authors' ``select_neurons.py``
(``extract_activation`` with ``select_precision`` / ``select_correlation``) in numpy: per channel,
the (H, W, N) slice of activations over the N perturbed copies; a channel whose mean is under
``min_threshold`` is skipped (0.1 for precision, 0 for correlation); the metric is
``1 / nanmean(var over copies)`` or the nanmean over positions of ``|corr(activation, output)|``;
channels are sorted by the metric, highest first, with Python's stable ``sorted``.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

import neuronviz as nv


def authors_selection(acts: np.ndarray, output: np.ndarray, metric: str, top_n: int = 5) -> list[int]:
    """acts: (N, C, H, W) float64; output: (N,)."""
    layer = np.moveaxis(acts, 0, -1)[None]  # (1, C, H, W, N) as their reshape loop builds it

    def vcorrcoef(x, y):
        xm = np.reshape(np.mean(x, axis=1), (x.shape[0], 1))
        ym = np.mean(y)
        r_num = np.sum((x - xm) * (y - ym), axis=1)
        r_den = np.sqrt(np.sum((x - xm) ** 2, axis=1) * np.sum((y - ym) ** 2))
        return r_num / r_den

    if metric == "precision":
        fn, min_threshold = (lambda x: 1.0 / np.nanmean(np.var(x, axis=2))), 1e-1
    else:
        fn, min_threshold = (lambda x: np.nanmean([np.abs(vcorrcoef(i, output)) for i in x])), 0.0
    holder = []
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for ind, t_slice in enumerate(layer[0]):
            if np.mean(t_slice) < min_threshold:
                continue
            holder.append([ind, fn(t_slice)])
    s_list = np.asarray(sorted(holder, key=lambda v_pair: v_pair[1], reverse=True))
    return [int(i) for i in s_list[:top_n, 0]]


def sparse_relu_net() -> nn.Sequential:
    """Conv + ReLU with channels from busy to nearly silent (mean under 0.1 yet not zero), one dead."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(12, 3))
    with torch.no_grad():
        net[0].bias.copy_(torch.linspace(0.3, -1.2, 12))
        net[0].bias[11] = -50.0  # dead: always 0
    return net


def test_post_relu_selection_equals_the_authors_and_silent_channels_keep_a_precision():
    net = sparse_relu_net()
    x = torch.rand(1, 3, 10, 10)
    scores = nv.score_neurons(net, x, ["1"], n_samples=50, target=0)
    samples = nv.perturb.MultiplicativeGaussian().sample(x, range(50), seed=0)
    net.eval()
    with torch.no_grad(), nv.capture(net, ["1"]) as rec:
        logits = net(samples)
        acts = rec["1"].double().numpy()
    output = torch.softmax(logits.double(), 1)[:, 0].numpy()
    assert scores.exclusion_rule["1"] == "mean"
    means = acts.mean(axis=(0, 2, 3))
    silent = (means < 0.1) & (acts.max(axis=(0, 2, 3)) > 0)
    assert silent.sum() >= 2  # the threshold matters here: some live channels are under it
    for metric in ("precision", "correlation"):
        assert scores.top(metric, 5)["1"] == authors_selection(acts, output, metric)
    # left out of the selection by the paper's rule, but their precision is still a number
    prec = scores.precision["1"].numpy()
    assert np.isfinite(prec[silent]).all()
    assert scores.excluded["1"].numpy().tolist() == (means < 0.1).tolist()
    assert np.isnan(prec[11])  # the dead channel: constant 0
    # without the threshold the quiet channels would win on precision: the rule decides here
    loose = nv.score_neurons(net, x, ["1"], n_samples=50, target=0, dead_threshold=-1.0)
    assert loose.top("precision", 5)["1"] != scores.top("precision", 5)["1"]
