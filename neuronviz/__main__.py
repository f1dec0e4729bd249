"""Command line: ``neuronviz demo`` draws the input-resampling figure, ``neuronviz report`` writes the explorer as
an interactive HTML page, ``neuronviz layers`` lists layers.

Run ``python -m neuronviz --help`` (or ``neuronviz --help``) for the options.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from .core.errors import LayerNotFoundError, NeuronvizError

__all__ = ["main", "build_parser"]

# neuronviz.core.layer_choice.EFFICIENTNET_LITE0_LAYERS (not imported here: torch loads only when a command runs)
_DEFAULT_LAYERS = ["blocks.10.expand.act", "blocks.15.depthwise.act"]
_N_PRINTED = 5
# nv.demo()'s explorer settings (its layers are the explorer's default for the model: _DEFAULT_LAYERS)
_REPORT_DEFAULTS: dict[str, Any] = {"image": "cat", "n_samples": 50, "seed": 0, "top_k": 5, "device": "cpu"}
_PAGE_SUFFIXES = (".html", ".htm")  # neuronviz.render.html.PAGE_SUFFIXES, without importing torch here


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

    report = sub.add_parser(
        "report",
        help="score neurons on a sample photo and write the explorer as one interactive HTML page",
        description=(
            "Run the neuron explorer's computation on the default model (EfficientNet-Lite0, ImageNet) and a "
            "bundled photo, with the defaults of nv.demo(), without Jupyter, and write its view as one "
            "self-contained HTML page (opens offline in any browser: the scatter with each channel's numbers, "
            "the overlays of the top neurons, the top-k lists and the settings). With --from, write the page of "
            "a saved view instead (w.save('run.nvz')), without recomputing."
        ),
        epilog="Example: neuronviz report --out report.html --image coffee --samples 50",
    )
    report.add_argument("--out", required=True, type=Path, metavar="PATH", help="where to write the page (.html)")
    report.add_argument("--from", dest="source", type=Path, metavar="RUN.nvz",
                        help="a saved view (w.save('run.nvz')) to write the page of, instead of computing one")
    report.add_argument("--image", default=None, metavar="NAME", help=f"bundled sample photo: {samples} (default: cat)")
    report.add_argument("--layers", nargs="+", default=None, metavar="LAYER",
                        help=f"layers to score (default: the explorer's, {' '.join(_DEFAULT_LAYERS)})")
    report.add_argument("--samples", "--n-samples", dest="n_samples", type=int, default=None, metavar="N",
                        help=f"perturbed copies of the image, at least 3 (default: {_REPORT_DEFAULTS['n_samples']})")
    report.add_argument("--seed", type=int, default=None,
                        help=f"seed of the perturbations (default: {_REPORT_DEFAULTS['seed']})")
    report.add_argument("--k", "--top-k", dest="top_k", type=int, default=None,
                        help=f"top neurons per layer and criterion (default: {_REPORT_DEFAULTS['top_k']})")
    report.add_argument("--device", default=None,
                        help=f"where to compute: cpu, cuda or cuda:N (default: {_REPORT_DEFAULTS['device']})")

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


def _saved_view(path: Path):  # noqa: ANN202 - a View, imported lazily
    """The view saved in ``path`` (``w.save``), restored without a model: its panels, not its computation."""
    from .widgets.view import View

    if not path.is_file():
        raise NeuronvizError(f"--from: no file {str(path)!r} (a view saved with w.save('run.nvz'))")
    return View.load(path, model=None)  # any saved view; a damaged or foreign file fails here, clearly


def _run_report(args: argparse.Namespace) -> int:
    out: Path = args.out
    if out.suffix.lower() not in _PAGE_SUFFIXES:  # fail before the model loads
        raise NeuronvizError(f"--out must end in .html, got {str(out)!r}")
    if not out.parent.is_dir():
        raise NeuronvizError(f"cannot write {str(out)!r}: the folder {str(out.parent)!r} does not exist")
    computing = {"--image": args.image, "--layers": args.layers, "--samples": args.n_samples, "--seed": args.seed,
                 "--device": args.device}
    if args.source is not None:
        given = [name for name, value in computing.items() if value is not None]
        if given:
            raise NeuronvizError(f"--from writes the page of a saved view as it was saved; {', '.join(given)} "
                                 "apply only when the page is computed (without --from)")
        view = _saved_view(args.source)
        if args.top_k is not None:
            view.top_k = args.top_k
    else:
        from .widgets.explorer import NeuronExplorer

        model, x = _load(args.image or _REPORT_DEFAULTS["image"])
        settings = {name: _REPORT_DEFAULTS[name] if value is None else value
                    for name, value in (("n_samples", args.n_samples), ("seed", args.seed), ("top_k", args.top_k))}
        view = NeuronExplorer(model, x, args.layers, autorun=False, live=False,
                              device=args.device or _REPORT_DEFAULTS["device"], **settings)
        print(f"scoring {view.n_samples} perturbed copies of {args.image or _REPORT_DEFAULTS['image']!r} "
              f"({', '.join(view.layers)}) ...", file=sys.stderr)
        view.run()
    try:
        view.wait()
        if view.status != "done":
            raise NeuronvizError(f"the run did not finish: {view.error or view.status}")
        path = view.export(out)
    finally:
        view.close()
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB): open it in any browser, no kernel needed")
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
    run = {"demo": _run_demo, "report": _run_report, "layers": _run_layers}[args.command]
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
