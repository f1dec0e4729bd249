"""Command line: ``neuronviz demo`` draws the input-resampling figure, ``neuronviz layers`` lists layers.

Run ``python -m neuronviz --help`` (or ``neuronviz --help``) for the options.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Sequence

from .core.errors import LayerNotFoundError, NeuronvizError

__all__ = ["main", "build_parser"]

# neuronviz.core.layer_choice.EFFICIENTNET_LITE0_LAYERS (not imported here: torch loads only when a command runs)
_DEFAULT_LAYERS = ["blocks.10.expand.act", "blocks.15.depthwise.act"]
_N_PRINTED = 5


def _sample_names() -> list[str]:
    from .data import sample_image_names

    return sample_image_names()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``neuronviz`` command.

    Returns
    -------
    argparse.ArgumentParser
    """
    samples = ", ".join(_sample_names())
    parser = argparse.ArgumentParser(
        prog="neuronviz",
        description="Explain a convolutional network from the inside, on the bundled EfficientNet-Lite0.",
        epilog=(
            "Example: neuronviz demo --out demo.png --image coffee "
            "--layers blocks.10.expand.act blocks.15.depthwise.act"
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="score neurons on a sample photo and save the correlation-vs-precision figure",
        description=(
            "Score every neuron of the chosen layers of the default model (EfficientNet-Lite0, ImageNet) "
            "by correlation with the predicted class and by activation precision over perturbed copies of "
            "a sample photo, save the figure, and print the best neurons of each layer."
        ),
    )
    demo.add_argument("--out", required=True, type=Path, metavar="PATH",
                      help="where to write the figure; the suffix picks the format (.png, .svg or .pdf)")
    demo.add_argument("--image", default="cat", metavar="NAME", help=f"bundled sample photo: {samples} (default: cat)")
    demo.add_argument("--layers", nargs="+", default=_DEFAULT_LAYERS, metavar="LAYER",
                      help=f"layers to score (default: {' '.join(_DEFAULT_LAYERS)}); 'neuronviz layers' lists them")
    demo.add_argument("--n-samples", type=int, default=50, metavar="N",
                      help="perturbed copies of the image, at least 3 (default: %(default)s)")
    demo.add_argument("--k", type=int, default=3, help="neurons drawn per layer and metric (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the perturbations (default: %(default)s)")
    demo.add_argument("--device", default="cpu", help="where to compute: cpu, cuda or cuda:N (default: %(default)s)")

    layers = sub.add_parser(
        "layers",
        help="list the layers of the default model with their output shapes",
        description="Print every layer of the default model that can be scored, with its type and output shape.",
    )
    layers.add_argument("--image", default="cat", metavar="NAME",
                        help=f"sample photo to run the model on: {samples} (default: cat)")
    return parser


def _load(image_name: str):
    """The default model and a preprocessed sample image."""
    from .data import preprocess, sample_image
    from .models import default_model

    x = preprocess(sample_image(image_name))  # first: a bad name fails before the model loads
    return default_model(), x


def _format_top(scores, metric: str, n: int) -> str:
    values = scores.metric(metric)
    lines = []
    for layer, channels in scores.top(metric, n).items():
        if metric == "precision":
            cells = [f"{c} ({'inf' if math.isinf(float(values[layer][c])) else format(float(values[layer][c]), '.3g')})"
                     for c in channels]
        else:
            cells = [f"{c} ({float(values[layer][c]):.3f})" for c in channels]
        lines.append(f"  {layer:<20} {', '.join(cells) if cells else '(no valid neuron)'}")
    return "\n".join(lines)


def _run_demo(args: argparse.Namespace) -> int:
    from .core.model_state import resolve_device
    from .figures import render_scores
    from .methods.resampling import overlap, score_neurons
    from .render import SAVE_FORMATS, class_label

    if args.out.suffix.lower() not in SAVE_FORMATS:  # fail before minutes of scoring
        raise NeuronvizError(f"--out must end in one of {', '.join(SAVE_FORMATS)}, got {str(args.out)!r}")
    if not args.out.parent.is_dir():
        raise NeuronvizError(f"cannot write {str(args.out)!r}: the folder {str(args.out.parent)!r} does not exist")
    if args.k < 1:
        raise NeuronvizError(f"--k must be at least 1, got {args.k}")
    model, x = _load(args.image)
    device = resolve_device(model, args.device)
    model.to(device)
    x = x.to(device)
    # a bar on stderr when it is a terminal, nothing in a pipe or a log
    scores = score_neurons(model, x, args.layers, n_samples=args.n_samples, seed=args.seed, progress=True)
    render_scores(scores, model, x, k=args.k, path=args.out)

    print(f"wrote {args.out}")
    n_classes = getattr(getattr(model, "classifier", None), "out_features", None)
    print(f"target: {class_label(scores.target, n_classes)}, {scores.n_samples} perturbed samples")
    for metric in ("correlation", "precision"):
        print(f"top {_N_PRINTED} by {metric} (channel (score)):")
        print(_format_top(scores, metric, _N_PRINTED))
    for n in sorted({args.k, _N_PRINTED}):
        ov = overlap(scores.top("correlation", n), scores.top("precision", n))
        ov_text = "n/a" if math.isnan(ov) else f"{ov:.3f}"
        print(f"overlap of the top-{n} selections (paper's measure, max 0.5): {ov_text}")
    return 0


def _run_layers(args: argparse.Namespace) -> int:
    from .core.capture import layer_summary

    model, x = _load(args.image)
    print(layer_summary(model, x))
    return 0


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush does not fail again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (e.g. captured output)
        pass


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``neuronviz`` command.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name; default ``sys.argv[1:]``.

    Returns
    -------
    int
        Exit status: 0 on success, 2 for bad input (with a one-line message on stderr),
        1 when the output file cannot be written.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else [str(a) for a in argv])
    except SystemExit as exc:  # --help, or argparse's own usage error (already printed)
        return int(exc.code or 0)
    run = {"demo": _run_demo, "layers": _run_layers}[args.command]
    try:
        return run(args)
    except ValueError as err:  # NeuronvizError and other bad-input errors (device names, ...)
        hint = " Run 'neuronviz layers' to list them." if isinstance(err, LayerNotFoundError) else ""
        print(f"neuronviz: error: {_one_line(err)}{hint}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading: not an error
        _silence_stdout()
        return 0
    except OSError as err:
        print(f"neuronviz: error: {_one_line(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("neuronviz: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
