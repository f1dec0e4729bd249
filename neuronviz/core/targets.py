"""What to explain: turn ``target`` and ``output`` arguments into a function of the model output."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Sequence, Union

import numpy as np
import torch

from .errors import NeuronvizError, NeuronvizTypeError
from .locks import runs_model

__all__ = ["Target", "TargetSpec", "resolve_target", "check_class_output", "class_scores", "top_predictions"]

TargetSpec = Union[None, int, Callable[[Any], torch.Tensor]]

OUTPUT_KINDS = ("probability", "logit")


def class_scores(out: object) -> object:
    """The class scores inside a model output, by the documented default.

    A tensor is itself; an object with a ``logits`` tensor attribute (a HuggingFace-style
    ``ModelOutput``) or a mapping with a ``"logits"`` key gives that; otherwise a mapping gives
    its first tensor value and a tuple or list its first tensor item (``(logits, aux)``
    outputs). Anything else is returned unchanged (and refused by :func:`check_class_output`).

    Parameters
    ----------
    out : object
        What the model returned.

    Returns
    -------
    object
        The scores tensor when one was found.
    """
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping):
        if isinstance(out.get("logits"), torch.Tensor):
            return out["logits"]
        return next((v for v in out.values() if isinstance(v, torch.Tensor)), out)
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(out, (tuple, list)):
        return next((v for v in out if isinstance(v, torch.Tensor)), out)
    return out


def check_class_output(out: object) -> torch.Tensor:
    """The (N, classes) scores of a model output (see :func:`class_scores` for tuples and dicts).

    Parameters
    ----------
    out : object
        What the model returned.

    Returns
    -------
    torch.Tensor
        The (N, classes) tensor: ``out`` itself, its ``logits``, or its first tensor.

    Raises
    ------
    NeuronvizError
        No 2-D tensor of scores in it (a scalar, a 1-D or 4-D tensor, no tensor at all); the
        message says to pass a callable ``target``.
    """
    scores = class_scores(out)
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2:
        if isinstance(scores, torch.Tensor):
            what = "a scalar (0-d tensor)" if scores.dim() == 0 else f"a tensor of shape {tuple(scores.shape)}"
        else:
            what = type(out).__name__ + " without a tensor"
        raise NeuronvizError(
            f"the model returned {what}, not (N, classes) scores; pass target=callable that maps the "
            "model output to one value per image, e.g. target=lambda out: out['logits'][:, 3]"
        )
    if not torch.is_floating_point(scores):
        raise NeuronvizError(f"the model returned {scores.dtype} scores; class scores must be floats (logits)")
    return scores


def _class_index(target: object) -> int:
    """An int class index from an int, a numpy integer or a one-element integer tensor / array."""
    if isinstance(target, (torch.Tensor, np.ndarray)) and target.ndim <= 1 and int(np.prod(target.shape)) == 1:
        integral = not target.dtype.is_floating_point and target.dtype != torch.bool \
            if isinstance(target, torch.Tensor) else np.issubdtype(target.dtype, np.integer)
        if integral:
            return int(target.reshape(()).item())
    if isinstance(target, (int, np.integer)) and not isinstance(target, (bool, np.bool_)):
        return int(target)
    shown = f" {target!r}" if isinstance(target, (float, str, bool)) else ""
    raise NeuronvizTypeError(
        f"target must be None, a class index (int) or a callable, got {type(target).__name__}{shown}"
    )


@dataclass(frozen=True)
class Target:
    """A resolved target: the class (if any) and how a batch's model output becomes (N,) values.

    Attributes
    ----------
    class_index : int or None
        The explained class; ``None`` for a callable target.
    output : str
        ``"probability"`` (softmax of the class), ``"logit"`` or ``"callable"``.
    fn : callable
        Maps the model output of a batch to a float (N,) tensor.
    """

    class_index: int | None
    output: str
    fn: Callable[[Any], torch.Tensor]

    def __call__(self, model_output: object) -> torch.Tensor:
        """The (N,) target values of a batch's model output, checked to be one per image."""
        values = self.fn(model_output)
        primary = class_scores(model_output)
        n = primary.shape[0] if isinstance(primary, torch.Tensor) and primary.dim() > 0 else None
        if not isinstance(values, torch.Tensor) or values.dim() != 1 or (n is not None and values.shape[0] != n):
            got = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
            raise NeuronvizError(f"the target must give one value per image, shape (N,); it gave {got}")
        return values


def resolve_target(
    target: TargetSpec,
    output: str = "probability",
    *,
    predict: Callable[[], object] | None = None,
) -> Target:
    """Resolve a user's ``target`` into a :class:`Target`.

    Parameters
    ----------
    target : None, int or callable
        ``None``: the class predicted on the unperturbed image (``predict`` must be given);
        an int (numpy integers and one-element tensors too): that class; a callable: maps
        the model output (N, ...) -- whatever the model returns, tuple, dict or
        ``ModelOutput`` included -- to (N,) values and is used as is. Class targets read the
        scores :func:`class_scores` finds (the tensor, its ``logits``, or its first tensor).
    output : {"probability", "logit"}
        For class targets: the softmax probability of the class or its raw score.
    predict : callable, optional
        Returns the model output of a batch whose first image is the unperturbed one;
        called only when ``target`` is None or an int (to check the class is in range).

    Returns
    -------
    Target

    Raises
    ------
    NeuronvizError
        Unknown ``output``, a class out of range, a model output that is not (N, classes).
    NeuronvizTypeError
        ``target`` is of an unsupported type (also a ``TypeError``).
    """
    if callable(target) and not isinstance(target, (torch.Tensor, np.ndarray)):
        return Target(None, "callable", target)
    if output not in OUTPUT_KINDS:
        raise NeuronvizError(f"output={output!r} is not one of {OUTPUT_KINDS}")
    if target is not None:
        target = _class_index(target)
    if predict is None:
        raise NeuronvizError("a class target needs the model output on the unperturbed image")
    clean = check_class_output(predict())
    n_classes = clean.shape[1]
    if target is None:
        target = int(clean[0].argmax().item())
    elif not 0 <= target < n_classes:
        raise NeuronvizError(f"target={target} is out of range: the model has {n_classes} classes (0..{n_classes - 1})")
    c = int(target)

    if output == "probability":
        def fn(out: object) -> torch.Tensor:
            return torch.softmax(check_class_output(out).double(), dim=1)[:, c]
    else:
        def fn(out: object) -> torch.Tensor:
            return check_class_output(out)[:, c].double()
    return Target(c, output, fn)


@runs_model
def top_predictions(
    model: "torch.nn.Module", x: torch.Tensor, k: int = 5, categories: Sequence[str] | None = None
) -> list[tuple[int, str, float]]:
    """The model's ``k`` most probable classes on one image.

    One forward pass in eval mode without gradients; the model's modes are restored.

    Parameters
    ----------
    model : torch.nn.Module
        A classifier returning (N, classes) scores.
    x : torch.Tensor
        The image, (1, C, H, W) or (C, H, W).
    k : int
        How many classes.
    categories : sequence of str, optional
        Class names, index-aligned (e.g. ``nv.imagenet_categories()``); "class i" otherwise.

    Returns
    -------
    list of (int, str, float)
        ``(class index, name, softmax probability)``, most probable first.

    Raises
    ------
    NeuronvizError
        Bad image, ``k < 1``, fewer ``categories`` than classes, or an output without
        (N, classes) scores (tuples, dicts and ``ModelOutput`` s are read as in
        :func:`class_scores`).
    """
    from .model_state import model_device, preserved_state
    from .validation import check_image, check_int, forward_checked

    k = check_int(k, "k", 1)
    if categories is not None and (isinstance(categories, str) or not isinstance(categories, Sequence)):
        raise NeuronvizTypeError(f"categories must be a list of class names, got {type(categories).__name__}")
    x = check_image(x, model).to(model_device(model))
    with preserved_state(model), torch.no_grad():
        model.eval()
        out = check_class_output(forward_checked(model, x))
    probs = torch.softmax(out[0].double(), dim=0)
    if categories is not None and len(categories) < probs.numel():
        raise NeuronvizError(
            f"categories names {len(categories)} classes but the model scores {probs.numel()}; pass one name per "
            "class (nv.imagenet_categories() for ImageNet models)"
        )
    values, indices = probs.topk(min(k, probs.numel()))
    names = categories if categories is not None else [f"class {i}" for i in range(probs.numel())]
    return [(int(i), str(names[int(i)]), float(p)) for p, i in zip(values, indices)]
