"""A generated table of bad inputs across the public API and the views.

Every row calls one public function (or view) with one bad argument and asserts that

- the error is a :class:`neuronviz.NeuronvizError` (never a raw torch, numpy or Python error),
- its message names what would be right (a substring of it),
- the model is exactly as before (parameters, buffers, modes, ``requires_grad``, no hook).

Rows are generated: each kind of bad model, image, image batch, device and target is tried on
every function that takes one, and each function's own arguments are tried on their own.
Further tests check that inputs which are legitimate (numpy numbers, float64 images, models
returning tuples, dicts or ``ModelOutput`` s, callable targets) work, and that results which
would silently mislead come with a :class:`neuronviz.NeuronvizWarning`.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pytest
import torch
from tiny_nets import tiny_cnn
from torch import nn

import neuronviz as nv

CUDA = torch.cuda.is_available()
GFI = {"mask_layer": "conv1", "feature_layer": "conv2", "stage1_steps": 1, "stage2_steps": 1}


def image(*shape: int, seed: int = 1, **kw: Any) -> torch.Tensor:
    return torch.randn(*(shape or (1, 3, 16, 16)), generator=torch.Generator().manual_seed(seed), **kw)


def images(n: int = 24) -> torch.Tensor:
    return image(n, 3, 16, 16, seed=2)


def with_nan(x: torch.Tensor, value: float = float("nan")) -> torch.Tensor:
    x = x.clone()
    x.view(-1)[5] = value
    return x


# -- the public functions, each with working defaults that a row overrides --------------------

Call = Callable[..., Any]


def _score(m, x=None, **kw):
    kw = {"n_samples": 6, "target": 1, **kw}
    return nv.score_neurons(m, image() if x is None else x, kw.pop("layers", "conv2"), **kw)


def _pcace(m, xs=None, **kw):
    return nv.pcace(m, images() if xs is None else xs, kw.pop("layer", "conv2"), kw.pop("target", 1), **kw)


def _rank(m, xs=None, **kw):
    return nv.rank_layers(m, images() if xs is None else xs, kw.pop("layers", ["conv1", "conv2"]),
                          kw.pop("target", 1), **kw)


def _invert(m, x=None, **kw):
    return nv.guided_feature_inversion(m, image() if x is None else x, **{"target": 1, **GFI, **kw})


def _baselines(m, x=None, **kw):
    return nv.baseline_scores(m, image() if x is None else x, kw.pop("layers", "conv2"), **kw)


def _summary(m, x=None, **kw):
    return nv.layer_summary(m, image() if x is None else x, **kw)


def _top(m, x=None, **kw):
    return nv.top_predictions(m, image() if x is None else x, **kw)


def _capture(m, x=None, **kw):
    with nv.capture(m, kw.pop("layers", "conv2"), **kw):
        pass


def _samples(m, xs=None, **kw):
    return _score(m, samples=images(6) if xs is None else xs, **kw)


FUNCTIONS: dict[str, Call] = {
    "score_neurons": _score, "pcace": _pcace, "rank_layers": _rank, "guided_feature_inversion": _invert,
    "baseline_scores": _baselines, "layer_summary": _summary, "top_predictions": _top, "capture": _capture,
}
ONE_IMAGE = {"score_neurons": _score, "baseline_scores": _baselines, "top_predictions": _top,
             "guided_feature_inversion": _invert, "layer_summary": _summary}
BATCHES = {"pcace": _pcace, "rank_layers": _rank, "score_neurons(samples=)": _samples}
WITH_DEVICE = {"score_neurons": _score, "pcace": _pcace, "rank_layers": _rank, "guided_feature_inversion": _invert}
WITH_TARGET = {"score_neurons": _score, "pcace": _pcace, "rank_layers": _rank, "guided_feature_inversion": _invert}

ROWS: list = []


def row(name: str, call: Callable[[nn.Module], Any], expect: str, *, model: Callable[[], nn.Module] | None = None,
        marks: tuple = ()) -> None:
    ROWS.append(pytest.param(call, expect, model or tiny_cnn, id=name, marks=marks))


# -- objects that are not models --------------------------------------------------------------

class NotAModule:
    def __call__(self, x):
        return x


def meta_model() -> nn.Module:
    return tiny_cnn().to("meta")


BAD_MODELS: dict[str, tuple[Callable[[nn.Module], Any], str]] = {
    "function": (lambda net: (lambda x: net(x)), "torch.nn.Module, got function"),
    "None": (lambda net: None, "torch.nn.Module, got NoneType"),
    "state_dict": (lambda net: net.state_dict(), "load_state_dict"),
    "class": (lambda net: type(net), "pass an instance"),
    "string": (lambda net: "resnet18", "torch.nn.Module, got str"),
    "callable_object": (lambda net: NotAModule(), "torch.nn.Module, got NotAModule"),
}
for fname, fn in FUNCTIONS.items():
    for kind, (make, expect) in BAD_MODELS.items():
        row(f"{fname}-model-{kind}", lambda net, fn=fn, make=make: fn(make(net)), expect)
    row(f"{fname}-model-meta", lambda net, fn=fn: fn(meta_model()), "meta")

# -- bad single images --------------------------------------------------------------------------

BAD_IMAGES: dict[str, tuple[Callable[[], Any], str]] = {
    "numpy": (lambda: image().numpy(), "nv.preprocess"),
    "list": (lambda: image().tolist(), "torch tensor"),
    "pil_like_hwc_uint8": (lambda: torch.randint(0, 255, (16, 16, 3), dtype=torch.uint8), "float"),
    "uint8": (lambda: torch.randint(0, 255, (1, 3, 16, 16), dtype=torch.uint8), "float"),
    "int64": (lambda: torch.ones(1, 3, 16, 16, dtype=torch.int64), "float"),
    "bool": (lambda: torch.ones(1, 3, 16, 16, dtype=torch.bool), "float"),
    "complex": (lambda: torch.ones(1, 3, 16, 16, dtype=torch.complex64), "float"),
    "nan": (lambda: with_nan(image()), "finite"),
    "inf": (lambda: with_nan(image(), float("inf")), "finite"),
    "-inf": (lambda: with_nan(image(), float("-inf")), "finite"),
    "one_channel": (lambda: image(1, 1, 16, 16), "takes 3"),
    "four_channels": (lambda: image(1, 4, 16, 16), "(N, 3, H, W)"),
    "channels_last_hwc": (lambda: image(16, 16, 3), "takes 3"),
    "2d": (lambda: image(16, 16), "(1, C, H, W)"),
    "1d": (lambda: image(16), "(1, C, H, W)"),
    "5d": (lambda: image(1, 1, 3, 16, 16), "(1, C, H, W)"),
    "0d": (lambda: torch.tensor(1.0), "(1, C, H, W)"),
    "empty_hw": (lambda: torch.zeros(1, 3, 0, 0), "empty"),
    "empty_width": (lambda: torch.zeros(1, 3, 16, 0), "empty"),
    "meta": (lambda: torch.empty(1, 3, 16, 16, device="meta"), "meta"),
}
ONE_ONLY = {"batch_of_two": (lambda: image(2, 3, 16, 16), "one image")}
for fname, fn in ONE_IMAGE.items():
    kinds = dict(BAD_IMAGES)
    if fname not in ("guided_feature_inversion", "layer_summary"):  # these take a batch
        kinds.update(ONE_ONLY)
    for kind, (make, expect) in kinds.items():
        if fname == "guided_feature_inversion" and kind in ("2d", "1d", "0d", "5d"):
            expect = "(N, C, H, W)"
        if fname == "layer_summary" and kind in ("2d", "1d", "0d", "5d"):
            continue  # layer_summary takes any input the model takes; these reach the model's own check below
        row(f"{fname}-image-{kind}", lambda net, fn=fn, make=make: fn(net, make()), expect)
for kind, make in {"2d": lambda: image(16, 16), "5d": lambda: image(1, 1, 3, 16, 16), "1d": lambda: image(16)}.items():
    row(f"layer_summary-image-{kind}-refused-by-the-model", lambda net, make=make: _summary(net, make()),
        "the model refused an input of shape")
row("layer_summary-image-0d", lambda net: _summary(net, torch.tensor(1.0)), "(1, C, H, W)")

# -- bad image batches ----------------------------------------------------------------------------

BAD_BATCHES: dict[str, tuple[Callable[[], Any], str]] = {
    "numpy": (lambda: images().numpy(), "(B, C, H, W)"),
    "list_of_tensors": (lambda: list(images()), "(N, C, H, W)"),
    "uint8": (lambda: torch.randint(0, 255, (24, 3, 16, 16), dtype=torch.uint8), "float"),
    "nan": (lambda: with_nan(images()), "finite"),
    "inf": (lambda: with_nan(images(), float("inf")), "finite"),
    "one_channel": (lambda: image(24, 1, 16, 16), "takes 3"),
    "3d": (lambda: image(3, 16, 16), "(N, C, H, W)"),
    "5d": (lambda: image(2, 24, 3, 16, 16), "(N, C, H, W)"),
    "empty": (lambda: torch.zeros(0, 3, 16, 16), "at least"),
    "empty_images": (lambda: torch.zeros(24, 3, 0, 0), "empty"),
    "meta": (lambda: torch.empty(24, 3, 16, 16, device="meta"), "meta"),
}
for fname, fn in BATCHES.items():
    for kind, (make, expect) in BAD_BATCHES.items():
        if fname.startswith("score_neurons") and kind in ("list_of_tensors",):
            continue  # a list of (C, H, W) tensors is a stream of batches there; see its own row
        if fname.startswith("score_neurons") and kind == "3d":
            expect = "(N, C, H, W)"
        if fname.startswith("score_neurons") and kind == "numpy":
            expect = "torch tensor"
        row(f"{fname}-images-{kind}", lambda net, fn=fn, make=make: fn(net, make()), expect)
row("pcace-images-None", lambda net: nv.pcace(net, None, "conv2", 1), "images")
row("rank_layers-images-int", lambda net: nv.rank_layers(net, 24, ["conv2"], 1), "images")
row("score_neurons-samples-string", lambda net: nv.score_neurons(net, image(), "conv2", samples="images/"), "samples")
row("pcace-too-few-images", lambda net: _pcace(net, images(5)), "at least 20")
row("score_neurons-too-few-samples", lambda net: _samples(net, images(2)), "at least 3")
row("score_neurons-samples-stream-of-3d-tensors", lambda net: _samples(net, list(images(6))), "(N, C, H, W)")

# -- devices ---------------------------------------------------------------------------------------

BAD_DEVICES: dict[str, tuple[Any, str]] = {
    "meta": ("meta", "meta device holds no values"),
    "unknown_name": ("banana", "not a device"),
    "typo_cuda": ("cdua:0", "not a device"),
    "list": (["cpu"], "device name"),
    "float": (1.5, "device name"),
    "cuda_index_out_of_range": ("cuda:99", "cuda:0" if CUDA else "CUDA is not available"),
}
if not CUDA:
    BAD_DEVICES["cuda_without_cuda"] = ("cuda", "CUDA is not available")
for fname, fn in WITH_DEVICE.items():
    for kind, (dev, expect) in BAD_DEVICES.items():
        row(f"{fname}-device-{kind}", lambda net, fn=fn, dev=dev: fn(net, device=dev), expect)
row("pcace-offload-meta", lambda net: _pcace(net, offload="meta"), "meta device holds no values")
row("pcace-offload-unknown", lambda net: _pcace(net, offload="floppy"), "not a device")

# -- targets -----------------------------------------------------------------------------------------

BAD_TARGETS: dict[str, tuple[Any, str]] = {
    "string": ("cat", "class index"),
    "float": (1.5, "class index"),
    "bool": (True, "class index"),
    "negative": (-1, "out of range"),
    "too_large": (5, "0..4"),
    "huge": (10**12, "out of range"),
    "numpy_out_of_range": (np.int64(7), "out of range"),
    "dict": ({"class": 1}, "class index"),
    "float_tensor": (torch.tensor(1.5), "class index"),
}
for fname, fn in WITH_TARGET.items():
    for kind, (t, expect) in BAD_TARGETS.items():
        row(f"{fname}-target-{kind}", lambda net, fn=fn, t=t: fn(net, target=t), expect)
for fname in ("score_neurons", "guided_feature_inversion"):
    row(f"{fname}-target-callable-wrong-shape",
        lambda net, fn=FUNCTIONS[fname]: fn(net, target=lambda out: out), "one value per image")
row("pcace-target-none", lambda net: _pcace(net, target=None), "needs a target")
row("pcace-target-constant-callable", lambda net: _pcace(net, target=lambda out: out[:, 0] * 0), "same on every image")

# -- models whose output is not class scores ---------------------------------------------------------


class Wrapped(nn.Module):
    """The tiny CNN with its output turned into something else."""

    def __init__(self, how: Callable[[torch.Tensor], Any]) -> None:
        super().__init__()
        self.net, self.how = tiny_cnn(), how

    def forward(self, x):
        return self.how(self.net(x))


BAD_OUTPUTS: dict[str, Callable[[torch.Tensor], Any]] = {
    "scalar": lambda out: out.sum(),
    "1d": lambda out: out[:, 0],
    "4d": lambda out: out[:, :, None, None],
    "string": lambda out: "a caption",
    "int_tensor": lambda out: out.argsort(1),
    "tuple_without_tensor": lambda out: ("a", 3),
}
for kind, how in BAD_OUTPUTS.items():
    for fname in ("score_neurons", "pcace", "guided_feature_inversion", "top_predictions"):
        layer = {"layers": "net.conv2"} if fname == "score_neurons" else {"layer": "net.conv2"} if fname == "pcace" \
            else {"mask_layer": "net.conv1", "feature_layer": "net.conv2"} if fname.startswith("guided") else {}
        expect = "floats" if kind == "int_tensor" else "target=callable"
        row(f"{fname}-model-output-{kind}", lambda net, fn=FUNCTIONS[fname], layer=layer: fn(net, **layer), expect,
            model=lambda how=how: Wrapped(how))

# -- each function's own arguments --------------------------------------------------------------------

SPECIFIC: list[tuple[str, Call, dict, str]] = [
    # score_neurons
    ("score_neurons", _score, {"layers": "conv22"}, "Did you mean 'conv2'"),
    ("score_neurons", _score, {"layers": []}, "at least one layer"),
    ("score_neurons", _score, {"layers": 3}, "layer name"),
    ("score_neurons", _score, {"layers": ["conv2", 5]}, "strings"),
    ("score_neurons", _score, {"layers": [["conv2"]]}, "layer name"),
    ("score_neurons", _score, {"layers": "flat.missing"}, "no layer named"),
    ("score_neurons", _score, {"n_samples": 2}, ">= 3"),
    ("score_neurons", _score, {"n_samples": -1}, ">= 3"),
    ("score_neurons", _score, {"n_samples": 2.5}, "integer"),
    ("score_neurons", _score, {"n_samples": "10"}, "integer"),
    ("score_neurons", _score, {"n_samples": True}, "integer"),
    ("score_neurons", _score, {"n_samples": 10**13}, "fewer images"),
    ("score_neurons", _score, {"batch_size": 0}, "positive integer"),
    ("score_neurons", _score, {"batch_size": -4}, "positive integer"),
    ("score_neurons", _score, {"batch_size": 1.5}, "positive integer"),
    ("score_neurons", _score, {"batch_size": "8"}, "positive integer"),
    ("score_neurons", _score, {"n_samples": 10**7, "batch_size": 10**7, "x": image(1, 3, 224, 224)},
     "smaller batch_size"),
    ("score_neurons", _score, {"output": "prob"}, "output='prob'"),
    ("score_neurons", _score, {"perturbation": "bogus"}, "perturbation"),
    ("score_neurons", _score, {"dead_threshold": float("nan")}, "number"),
    ("score_neurons", _score, {"dead_threshold": "low"}, "number"),
    ("score_neurons", _score, {"distributed": True}, "process group"),
    ("score_neurons", _score, {"layers": "fc", "x": image(1, 3, 16, 16), "per_unit": "yes"}, "per_unit"),
    ("score_neurons", _score, {"unknown_option": 1}, "its parameters are"),
    # pcace / rank_layers
    ("pcace", _pcace, {"n_components": 0}, "positive integer"),
    ("pcace", _pcace, {"n_components": -1}, "positive integer"),
    ("pcace", _pcace, {"n_components": 1.5}, "positive integer"),
    ("pcace", _pcace, {"n_components": 10**6}, "n_components <= 64"),
    ("pcace", _pcace, {"n_components": 10**6, "streaming": True}, "n_components <= 64"),
    ("pcace", _pcace, {"variant": "best"}, "variant must be one of"),
    ("pcace", _pcace, {"layer": ["conv1", "conv2"]}, "rank_layers takes several"),
    ("pcace", _pcace, {"layer": "conv7"}, "Did you mean"),
    ("pcace", _pcace, {"store_dtype": torch.int8}, "float dtype"),
    ("pcace", _pcace, {"store_dtype": "half"}, "float dtype"),
    ("pcace", _pcace, {"streaming": "yes"}, "streaming must be True, False or None"),
    ("pcace", _pcace, {"batch_size": 0}, ">= 1"),
    ("rank_layers", _rank, {"batch_size": -1}, ">= 1"),
    ("pcace", _pcace, {"xs": image(1, 3, 64, 64).expand(3_000_000, -1, -1, -1), "layer": "conv1"}, "fewer images"),
    ("pcace", _pcace, {"xs": torch.zeros(24, 3, 16, 16)}, "same on every image"),
    ("rank_layers", _rank, {"k": 0}, "k (the top channels"),
    ("rank_layers", _rank, {"k": -2}, ">= 1"),
    ("rank_layers", _rank, {"k": 2.5}, "integer"),
    ("rank_layers", _rank, {"layers": []}, "at least one layer"),
    ("rank_layers", _rank, {"layers": "conv3"}, "Did you mean"),
    # guided_feature_inversion
    ("guided_feature_inversion", _invert, {"mask_layer": "pool"}, "at least 2x2"),
    ("guided_feature_inversion", _invert, {"mask_layer": "fc"}, "spatial map"),
    ("guided_feature_inversion", _invert, {"mask_layer": "conv9"}, "Did you mean"),
    ("guided_feature_inversion", _invert, {"feature_layer": 3}, "strings"),
    ("guided_feature_inversion", _invert, {"stage1_steps": -1}, ">= 0"),
    ("guided_feature_inversion", _invert, {"stage2_steps": 1.5}, "integer"),
    ("guided_feature_inversion", _invert, {"stage2_steps": "70"}, "integer"),
    ("guided_feature_inversion", _invert, {"lr": 0}, "> 0"),
    ("guided_feature_inversion", _invert, {"lr": -0.1}, "> 0"),
    ("guided_feature_inversion", _invert, {"lr": float("nan")}, "finite"),
    ("guided_feature_inversion", _invert, {"lr": float("inf")}, "finite"),
    ("guided_feature_inversion", _invert, {"lr": "fast"}, "number"),
    ("guided_feature_inversion", _invert, {"gamma": -1}, ">= 0"),
    ("guided_feature_inversion", _invert, {"lam": float("nan")}, "finite"),
    ("guided_feature_inversion", _invert, {"delta": -3}, ">= 0"),
    ("guided_feature_inversion", _invert, {"background": "pink"}, "background must be one of"),
    ("guided_feature_inversion", _invert, {"loss": "l2"}, "loss must be one of"),
    ("guided_feature_inversion", _invert, {"target": []}, "one class per image"),
    ("guided_feature_inversion", _invert, {"target": [1, 2], "x": image(3, 3, 16, 16)}, "one per image"),
    ("guided_feature_inversion", _invert, {"target": torch.ones(2, 2, dtype=torch.long)}, "1-D"),
    ("guided_feature_inversion", _invert, {"target": ["a"]}, "class index"),
    # baseline_scores, layer_summary, top_predictions, capture
    ("baseline_scores", _baselines, {"min_mean": "x"}, "number"),
    ("baseline_scores", _baselines, {"min_mean": float("nan")}, "number"),
    ("baseline_scores", _baselines, {"weight_layers": {"conv1": "conv1"}}, "scored"),
    ("baseline_scores", _baselines, {"weight_layers": {"conv2": "nope"}}, "no layer named"),
    ("baseline_scores", _baselines, {"layers": "conv5"}, "Did you mean"),
    ("layer_summary", _summary, {"max_depth": 0}, "positive integer"),
    ("layer_summary", _summary, {"max_depth": "2"}, "positive integer"),
    ("top_predictions", _top, {"k": 0}, ">= 1"),
    ("top_predictions", _top, {"k": 2.5}, "integer"),
    ("top_predictions", _top, {"categories": ["a", "b"]}, "one name per class"),
    ("top_predictions", _top, {"categories": "abcde"}, "list of class names"),
    ("capture", _capture, {"layers": "conv8"}, "Did you mean"),
    ("capture", _capture, {"layers": 8}, "layer name"),
    ("capture", _capture, {"layers": []}, "at least one layer"),
]
for fname, fn, kw, expect in SPECIFIC:
    label = ",".join(f"{k}={v!r}"[:28] for k, v in kw.items() if k not in ("x", "xs")) or "images"
    if "xs" in kw or "x" in kw:
        label += "-" + ("x" if "x" in kw else "xs") + "x".join(map(str, tuple((kw.get("x", kw.get("xs"))).shape)))
    row(f"{fname}-{label}", lambda net, fn=fn, kw=kw: fn(net, **{k: v for k, v in kw.items()}), expect)

# -- the rest of nv.__all__: the functions that take a model, and those that take data --------------------

OTHER_MODEL_FUNCTIONS: dict[str, Call] = {
    "knockout_effect": lambda m: nv.knockout_effect(m, image(), {"conv2": [0]}, 1),
    "deletion_curve": lambda m: nv.deletion_curve(m, image(), {"conv2": [0, 1]}, target=1),
    "mask_deletion_curve": lambda m: nv.mask_deletion_curve(m, image(), torch.rand(16, 16), target=1),
    "default_inversion_layers": lambda m: nv.default_inversion_layers(m),
    "default_inversion_delta": lambda m: nv.default_inversion_delta(m),
    "render_scores": lambda m: nv.render_scores(None, m, image()),
    "render_pcace": lambda m: nv.render_pcace(None, m, images()),
}
for fname, fn in OTHER_MODEL_FUNCTIONS.items():
    for kind in ("function", "state_dict", "string"):
        make, expect = BAD_MODELS[kind]
        row(f"{fname}-model-{kind}", lambda net, fn=fn, make=make: fn(make(net)), expect)
    row(f"{fname}-model-meta", lambda net, fn=fn: fn(meta_model()), "meta")

DATA_ROWS: list[tuple[str, Callable[[nn.Module], Any], str]] = [
    ("preprocess-None", lambda net: nv.preprocess(None), "PIL image"),
    ("preprocess-path-string", lambda net: nv.preprocess("cat.jpg"), "PIL image"),
    ("preprocess-float-array", lambda net: nv.preprocess(np.full((8, 8, 3), np.nan)), "uint8"),
    ("preprocess-seven-channels", lambda net: nv.preprocess(np.zeros((8, 8, 7), dtype=np.uint8)), "(H, W, 3"),
    ("preprocess-size-negative", lambda net: nv.preprocess(np.zeros((8, 8, 3), dtype=np.uint8), size=-1),
     "positive"),
    ("sample_image-unknown", lambda net: nv.sample_image("dog"), "available: cat"),
    ("sample_image-number", lambda net: nv.sample_image(3), "available: cat"),
    ("deprocess-string", lambda net: nv.deprocess("x"), "torch tensor"),
    ("deprocess-5d", lambda net: nv.deprocess(torch.zeros(1, 1, 3, 4, 4)), "(1, 3, H, W)"),
    ("load_digits-split", lambda net: nv.load_digits("validation"), "'train'"),
    ("overlap-not-selections", lambda net: nv.overlap(1, 2), "NeuronScores.top()"),
    ("overlap-kind", lambda net: nv.overlap({"a": [1]}, {"a": [1]}, kind="dice"), "'jaccard'"),
    ("overlap-different-layers", lambda net: nv.overlap({"a": [1]}, {"b": [1]}), "different layers"),
    ("ace-strings", lambda net: nv.ace(np.array(["a"] * 30), np.arange(30.0)), "numbers"),
    ("ace-nan", lambda net: nv.ace(torch.full((50,), float("nan")), torch.randn(50)), "finite"),
    ("ace-constant-y", lambda net: nv.ace(torch.randn(50), torch.ones(50)), "constant"),
    ("maximal_correlation-1d", lambda net: nv.maximal_correlation(torch.randn(3), torch.randn(5)), "(B, n)"),
    ("render_inversion-None", lambda net: nv.render_inversion(None, image()), "InversionResult"),
    ("render_layer_ranking-None", lambda net: nv.render_layer_ranking(None), "LayerRanking"),
]
for name, call, expect in DATA_ROWS:
    row(name, call, expect)

# -- the views (constructors and settable properties) ---------------------------------------------------

VIEWS: list[tuple[str, Callable[[nn.Module], Any], str]] = [
    ("NeuronExplorer-model-function", lambda net: nv.NeuronExplorer(lambda x: x, image(), autorun=False),
     "torch.nn.Module"),
    ("NeuronExplorer-image-numpy", lambda net: nv.NeuronExplorer(net, image().numpy(), autorun=False),
     "torch tensor"),
    ("NeuronExplorer-image-one-channel", lambda net: nv.NeuronExplorer(net, image(1, 1, 16, 16), autorun=False),
     "takes 3"),
    ("NeuronExplorer-image-nan", lambda net: nv.NeuronExplorer(net, with_nan(image()), autorun=False), "finite"),
    ("NeuronExplorer-layers-unknown",
     lambda net: nv.NeuronExplorer(net, image(), layers="conv22", autorun=False), "Did you mean"),
    ("NeuronExplorer-n_samples-negative",
     lambda net: nv.NeuronExplorer(net, image(), layers=["conv2"], n_samples=-1, autorun=False), "n_samples"),
    ("NeuronExplorer-n_samples-string",
     lambda net: nv.NeuronExplorer(net, image(), layers=["conv2"], n_samples="48", autorun=False), "n_samples"),
    ("NeuronExplorer-target-string",
     lambda net: nv.NeuronExplorer(net, image(), layers=["conv2"], target="cat", autorun=False), "target"),
    ("NeuronExplorer-target-out-of-range",
     lambda net: nv.NeuronExplorer(net, image(), layers=["conv2"], target=99, autorun=False), "target"),
    ("NeuronExplorer-device-meta",
     lambda net: nv.NeuronExplorer(net, image(), layers=["conv2"], device="meta", autorun=False), "cpu"),
    ("NeuronExplorer-set-n_samples-negative", lambda net: setattr(
        nv.NeuronExplorer(net, image(), layers=["conv2"], autorun=False), "n_samples", -1), "n_samples"),
    ("PCACEView-model-function", lambda net: nv.PCACEView(lambda x: x, images(), autorun=False), "torch.nn.Module"),
    ("PCACEView-images-numpy", lambda net: nv.PCACEView(net, images().numpy(), autorun=False), "torch tensor"),
    ("PCACEView-layers-unknown", lambda net: nv.PCACEView(net, images(), layers=["conv22"], autorun=False),
     "Did you mean"),
    ("PCACEView-n_components-zero",
     lambda net: nv.PCACEView(net, images(), layers=["conv2"], n_components=0, autorun=False), "n_components"),
    ("PCACEView-target-string",
     lambda net: nv.PCACEView(net, images(), layers=["conv2"], target="cat", autorun=False), "target"),
    ("InversionView-model-function", lambda net: nv.InversionView(lambda x: x, image(), autorun=False),
     "torch.nn.Module"),
    ("InversionView-image-uint8",
     lambda net: nv.InversionView(net, torch.zeros(1, 3, 16, 16, dtype=torch.uint8), autorun=False), "float"),
    ("InversionView-stage1_steps-negative",
     lambda net: nv.InversionView(net, image(), stage1_steps=-1, autorun=False), "stage1_steps"),
    ("InversionView-target-string", lambda net: nv.InversionView(net, image(), target="cat", autorun=False), "target"),
]
for name, call, expect in VIEWS:
    row(name, call, expect)


@pytest.mark.parametrize("call, expect, make_model", ROWS)
def test_bad_input_is_refused_with_a_neuronviz_error_that_names_the_fix_and_leaves_the_model_untouched(
    call, expect, make_model, snapshot
):
    net = make_model()
    snap = snapshot(net)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a refusal, not a warning, is what each row asks for
        with pytest.raises(nv.NeuronvizError) as info:
            call(net)
    message = str(info.value)
    assert expect in message, f"{type(info.value).__name__}: {message}"
    snap.assert_unchanged()


def test_the_table_covers_every_public_function_that_takes_a_model():
    assert len(ROWS) >= 300
    covered = {p.id.split("-")[0] for p in ROWS}
    takes_model = {"score_neurons", "pcace", "rank_layers", "guided_feature_inversion", "baseline_scores",
                   "layer_summary", "top_predictions", "capture", "NeuronExplorer", "PCACEView", "InversionView"}
    assert takes_model <= covered and takes_model <= set(nv.__all__)


def test_type_refusals_are_also_type_errors_and_every_refusal_a_value_error():
    net = tiny_cnn()
    with pytest.raises(TypeError):
        nv.score_neurons(lambda x: x, image(), "conv2")
    with pytest.raises(TypeError):
        nv.score_neurons(net, image(), "conv2", target="cat")
    with pytest.raises(ValueError):
        nv.score_neurons(net, image(), "conv2", device="meta")
    assert issubclass(nv.NeuronvizTypeError, nv.NeuronvizError) and issubclass(nv.NeuronvizError, ValueError)


# -- legitimate inputs that must work ----------------------------------------------------------------------


def test_numpy_numbers_are_accepted_everywhere_and_give_the_python_numbers_results():
    net = tiny_cnn()
    x = image()
    plain = nv.score_neurons(net, x, "conv2", n_samples=6, target=1, dead_threshold=0.1)
    numpy = nv.score_neurons(net, x, "conv2", n_samples=np.int64(6), target=np.int64(1),
                             dead_threshold=np.float32(0.1))
    assert numpy.target == 1 and torch.equal(plain.correlation["conv2"], numpy.correlation["conv2"])
    a = nv.rank_layers(net, images(), ["conv2"], np.int32(1), k=np.int64(2), n_components=np.int64(1))
    b = nv.rank_layers(net, images(), ["conv2"], 1, k=2)
    assert a.k == 2 and torch.equal(a["conv2"].scores, b["conv2"].scores)
    inv = nv.guided_feature_inversion(net, x, target=np.int64(1), mask_layer="conv1", feature_layer="conv2",
                                      stage1_steps=np.int64(2), stage2_steps=np.int16(2), lr=np.float64(0.01))
    assert inv.target == [1]
    assert nv.top_predictions(net, x, k=np.int64(2))[0][0] == nv.top_predictions(net, x, k=2)[0][0]
    assert nv.score_neurons(net, x, "conv2", n_samples=6, target=torch.tensor(1)).target == 1
    assert nv.score_neurons(net, x, "conv2", n_samples=6, target=np.array([1])).target == 1


def test_float64_and_float16_images_are_cast_to_the_models_dtype():
    net = tiny_cnn()
    x = image()
    ref = nv.score_neurons(net, x, "conv2", n_samples=6, target=1)
    got = nv.score_neurons(net, x.double(), "conv2", n_samples=6, target=1, samples=None)
    torch.testing.assert_close(got.correlation["conv2"], ref.correlation["conv2"], equal_nan=True)
    assert nv.pcace(net, images().double(), "conv2", 1).scores.shape == (4,)
    assert nv.guided_feature_inversion(net, x.double(), target=1, **GFI).mask.dtype == torch.float32
    assert nv.layer_summary(net, x.half()).names()[0] == "conv1"
    assert nv.top_predictions(net, x.double())[0][0] == nv.top_predictions(net, x)[0][0]


class ModelOutput(OrderedDict):
    """A HuggingFace-style output: a mapping whose keys are also attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass
class WithLogits:
    logits: torch.Tensor
    hidden: torch.Tensor | None = None


OUTPUT_KINDS = {
    "tuple": lambda out: (out, out.detach() * 0),
    "list": lambda out: [out],
    "dict_logits": lambda out: {"aux": "ignored", "logits": out},
    "dict_first_tensor": lambda out: {"scores": out, "other": out * 2},
    "model_output": lambda out: ModelOutput(loss=None, logits=out),
    "dataclass_with_logits": lambda out: WithLogits(logits=out, hidden=out * 3),
}


@pytest.mark.parametrize("kind", list(OUTPUT_KINDS))
def test_models_returning_tuples_dicts_or_model_outputs_are_read_by_their_logits_in_every_method(kind, snapshot):
    wrapped = Wrapped(OUTPUT_KINDS[kind])
    plain = Wrapped(lambda out: out)  # the same weights (same seed), a plain tensor output
    snap = snapshot(wrapped)
    x = image()
    a = nv.score_neurons(wrapped, x, "net.conv2", n_samples=6)
    b = nv.score_neurons(plain, x, "net.conv2", n_samples=6)
    assert a.target == b.target and torch.equal(a.correlation["net.conv2"], b.correlation["net.conv2"])
    assert torch.equal(nv.pcace(wrapped, images(), "net.conv2", 1).scores,
                       nv.pcace(plain, images(), "net.conv2", 1).scores)
    layers = {"mask_layer": "net.conv1", "feature_layer": "net.conv2", "stage1_steps": 2, "stage2_steps": 2}
    torch.testing.assert_close(nv.guided_feature_inversion(wrapped, x, **layers).mask,
                               nv.guided_feature_inversion(plain, x, **layers).mask)
    assert nv.top_predictions(wrapped, x) == nv.top_predictions(plain, x)
    assert nv.baseline_scores(wrapped, x, "net.conv2").layers == ["net.conv2"]
    snap.assert_unchanged()


def test_a_callable_target_works_in_every_method_whatever_the_model_returns(snapshot):
    wrapped = Wrapped(OUTPUT_KINDS["model_output"])
    snap = snapshot(wrapped)
    x = image()

    def target(out):
        return torch.log_softmax(out.logits, dim=1)[:, 2]

    assert nv.score_neurons(wrapped, x, "net.conv2", n_samples=6, target=target).target is None
    assert nv.pcace(wrapped, images(), "net.conv2", target).target is None
    result = nv.guided_feature_inversion(wrapped, x, target=target, mask_layer="net.conv1",
                                         feature_layer="net.conv2", stage1_steps=2, stage2_steps=2)
    assert result.target == [None] and result.mask.shape == (1, 16, 16)
    torch.testing.assert_close(result.probability, target(wrapped.eval()(x)).double().detach())
    wrapped.train()
    snap.assert_unchanged()


def test_layer_summary_checks_its_image_like_every_method():
    net = tiny_cnn()
    rows = nv.layer_summary(net, image(2, 3, 16, 16))  # a batch: the first image is used
    assert rows.names()[:2] == ["conv1", "relu1"]


# -- silent garbage becomes a warning that a view can catch -------------------------------------------------


def test_an_inversion_whose_weights_all_collapse_warns_instead_of_returning_an_empty_mask_silently(snapshot):
    net = tiny_cnn()
    snap = snapshot(net)
    with pytest.warns(nv.NeuronvizWarning, match="lr=1e"):
        result = nv.guided_feature_inversion(net, image(), target=1, mask_layer="conv1", feature_layer="conv2",
                                             stage1_steps=3, stage2_steps=3, lr=1e6, gamma=1e9, delta=1e9)
    assert float(result.mask.max()) == 0.0
    snap.assert_unchanged()


def test_a_constant_target_warns_that_every_correlation_is_nan():
    net = tiny_cnn()
    with pytest.warns(nv.NeuronvizWarning, match="every correlation is NaN"):
        scores = nv.score_neurons(net, image(), "conv2", n_samples=6, target=lambda out: out[:, 0] * 0)
    assert torch.isnan(scores.correlation["conv2"]).all()


def test_neuronviz_warnings_can_be_collected_around_a_call_as_a_view_does():
    net = tiny_cnn()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", nv.NeuronvizWarning)
        nv.score_neurons(net, image(), "conv2", n_samples=6, target=lambda out: out[:, 0] * 0)
    mine = [w for w in caught if issubclass(w.category, nv.NeuronvizWarning)]
    assert len(mine) == 1 and "NaN" in str(mine[0].message)
    assert issubclass(nv.NeuronvizWarning, RuntimeWarning)
