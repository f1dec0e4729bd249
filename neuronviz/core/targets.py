"""What to explain: turn ``target`` and ``output`` arguments into a function of the model output."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence, Union

import torch

from .errors import NeuronvizError

__all__ = ["Target", "TargetSpec", "resolve_target", "check_class_output", "top_predictions"]

TargetSpec = Union[None, int, Callable[[torch.Tensor], torch.Tensor]]

OUTPUT_KINDS = ("probability", "logit")


def check_class_output(out: object) -> torch.Tensor:
    """Check that a model output is a (N, classes) tensor of scores.

    Parameters
    ----------
    out : object
        What the model returned.

    Returns
    -------
    torch.Tensor
        ``out`` itself.

    Raises
    ------
    NeuronvizError
        The output is not a 2-D tensor; the message says to pass a callable ``target``.
    """
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        what = f"a tensor of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise NeuronvizError(
            f"the model returned {what}, not (N, classes) scores; pass target=callable that maps the "
            "model output to one value per image, e.g. target=lambda out: out['logits'][:, 3]"
        )
    return out


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
    fn: Callable[[torch.Tensor], torch.Tensor]

    def __call__(self, model_output: object) -> torch.Tensor:
        values = self.fn(model_output)
        n = model_output.shape[0] if isinstance(model_output, torch.Tensor) else None
        if not isinstance(values, torch.Tensor) or values.dim() != 1 or (n is not None and values.shape[0] != n):
            got = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
            raise NeuronvizError(f"the target must give one value per image, shape (N,); it gave {got}")
        return values


def resolve_target(
    target: TargetSpec,
    output: str = "probability",
    *,
    predict: Callable[[], torch.Tensor] | None = None,
) -> Target:
    """Resolve a user's ``target`` into a :class:`Target`.

    Parameters
    ----------
    target : None, int or callable
        ``None``: the class predicted on the unperturbed image (``predict`` must be given);
        an int: that class; a callable: maps the model output (N, ...) to (N,) values and is
        used as is.
    output : {"probability", "logit"}
        For class targets: the softmax probability of the class or its raw score.
    predict : callable, optional
        Returns the model output on the unperturbed image, (1, classes); called only
        when ``target`` is None or an int (to check the class is in range).

    Returns
    -------
    Target

    Raises
    ------
    NeuronvizError
        Unknown ``output``, a class out of range, a model output that is not (N, classes).
    TypeError
        ``target`` is of an unsupported type.
    """
    if callable(target):
        return Target(None, "callable", target)
    if output not in OUTPUT_KINDS:
        raise NeuronvizError(f"output={output!r} is not one of {OUTPUT_KINDS}")
    if target is not None and (isinstance(target, bool) or not isinstance(target, int)):
        if isinstance(target, torch.Tensor) and target.numel() == 1:
            target = int(target.item())
        else:
            raise TypeError(f"target must be None, a class index (int) or a callable, got {type(target).__name__}")
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
        def fn(out: torch.Tensor) -> torch.Tensor:
            return torch.softmax(check_class_output(out).double(), dim=1)[:, c]
    else:
        def fn(out: torch.Tensor) -> torch.Tensor:
            return check_class_output(out)[:, c].double()
    return Target(c, output, fn)


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
        Bad image, or an output that is not (N, classes).
    """
    from .model_state import model_device, preserved_state
    from .validation import check_image, forward_checked

    x = check_image(x, model).to(model_device(model))
    with preserved_state(model), torch.no_grad():
        model.eval()
        out = check_class_output(forward_checked(model, x))
    probs = torch.softmax(out[0].double(), dim=0)
    values, indices = probs.topk(min(k, probs.numel()))
    names = categories if categories is not None else [f"class {i}" for i in range(probs.numel())]
    return [(int(i), str(names[int(i)]), float(p)) for p, i in zip(values, indices)]
