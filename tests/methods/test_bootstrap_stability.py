"""Selection stability: mean Jaccard of the top-k across seeds or bootstrap replicates."""

from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path

import pytest
import torch

import neuronviz as nv
from neuronviz.methods.stability import replicate_stability

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_bootstrap import _Planted  # noqa: E402


def _jaccard(a, b):
    return len(set(a) & set(b)) / len(set(a) | set(b))


def test_stability_across_seeds_is_the_mean_pairwise_jaccard_of_each_seeds_top_k():
    net, x = _Planted(), torch.randn(1, 3, 4, 4)
    kw = dict(n_samples=12, perturbation="additive", target=1, output="logit")
    st = nv.selection_stability(net, x, "mix", seeds=[0, 1, 2], k=2, **kw)
    tops = [nv.score_neurons(net, x, "mix", seed=s, **kw).top("precision", 2)["mix"] for s in (0, 1, 2)]
    want = sum(_jaccard(a, b) for a, b in itertools.combinations(tops, 2)) / 3
    assert st.source == "seeds" and st.n_sets == 3 and st.k == 2
    assert math.isclose(st.jaccard["precision"]["mix"], want)
    assert st.jaccard["correlation"]["mix"] <= 1 and "Jaccard" in repr(st)


def test_a_planted_driver_is_chosen_by_every_replicate():
    net = _Planted()
    torch.manual_seed(1)
    z = torch.randn(120, 3)
    samples = z[:, :, None, None] + 0.3 * torch.randn(120, 3, 4, 4)
    s = nv.score_neurons(net, samples[:1], "mix", samples=samples, target=1, output="logit", bootstrap=40)
    st = replicate_stability(s, k=1)
    assert st.source == "bootstrap" and st.n_sets == 40
    assert st.jaccard["correlation"]["mix"] == 1.0
    tops = [set(torch.argsort(-r, stable=True)[:3].tolist()) for r in s.replicates["correlation"]["mix"]]
    want = sum(len(a & b) / len(a | b) for a, b in itertools.combinations(tops, 2)) / (40 * 39 / 2)
    assert math.isclose(replicate_stability(s, k=3).jaccard["correlation"]["mix"], want)


def test_stability_refuses_bad_arguments():
    net, x = _Planted(), torch.randn(1, 3, 4, 4)
    for kwargs in ({"seeds": [1]}, {"seeds": [1, 1]}, {"k": 0}, {"seeds": [0, 1], "bootstrap": 4}, {"seed": 3}):
        with pytest.raises(nv.NeuronvizError):
            nv.selection_stability(net, x, "mix", n_samples=5, **kwargs)
