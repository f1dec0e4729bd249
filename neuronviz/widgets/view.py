"""The base of every view: declared settings become controls and properties; run, show, export, close.

A view is what makes it different from the others, and nothing else::

    @dataclass(frozen=True)
    class Settings:
        layer: str = setting(None, Layer(), control="layer", css="nv-layer")
        top_k: int = setting(5, Int(1), control="slider", span=(1, 20), rerun=False, css="nv-topk")

    class ChannelMeans(View):
        Settings = Settings
        title = "Means"

        def compute(self, s, job):                 # worker thread: a plain result record
            return nv.score_neurons(self.model, self.x, s.layer, progress=job.progress)

        def show(self, result):                    # the panels show a result (lock held)
            self.text.value = str(result.top("correlation", self.top_k))

        def snapshot(self):                        # what the figure needs, as plain data
            return self.outcome.result

        def draw(self, record, *, dpi, path=None):  # matplotlib, from data only
            return nv.render_scores(record, dpi=dpi, path=path)

The base (:class:`View`) builds from the declaration the controls (in columns by ``group``), a
validated property per setting, the settings object handed to :meth:`View.compute`, and the
"settings changed" notice; it runs the computation in one worker thread holding the model's
lock (Run / Cancel / progress / stale results dropped / errors and warnings in the widget),
exports the current figure to PNG, SVG or PDF, puts a static PNG in the display data, and
``close()`` waits for the model to be restored and closes every widget it made.
"""

from __future__ import annotations

import base64
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator

import ipywidgets as W
import torch
import traitlets
from torch import nn

from ..core.archive import archived, weights_fingerprint
from ..core.archive import read as read_archive
from ..core.archive import save as save_archive
from ..core.capture import LayerInfo, LayerSummary, layer_summary
from ..core.errors import NeuronvizError, NeuronvizTypeError
from ..core.locks import hold_model
from ..core.model_state import model_device
from ..core.targets import check_class_output
from ..render.figure import check_path
from ..render.html import PAGE_SUFFIXES, write_page
from .classes import ClassChoices
from .colab import enable_colab_widgets
from .jobs import Job, Worker
from .panels import ExportRow, RunBar
from .pictures import figure_png
from .settings import Setting, control_value, fields_of, make_control, settings_panel, show_value

__all__ = ["View", "Outcome", "SavedView", "check_dpi"]

#: DPI of the static picture beside a widget in its display data.
STATIC_DPI = 60
#: Seconds :meth:`View.close` waits for a cancelled run to reach its next cancel point.
CLOSE_WAIT_S = 30.0
#: Live mode: seconds after the last change of a setting before its run starts.
LIVE_DEBOUNCE_S = 0.1
#: Live mode is on by default while the last run took less than this many seconds.
LIVE_UNDER_S = 3.0


@dataclass
class Outcome:
    """A finished run: the settings it ran with, what :meth:`View.compute` returned, its warnings."""

    settings: Any
    result: Any
    seconds: float
    warnings: list[str] = field(default_factory=list)


@archived("View")
@dataclass
class SavedView:
    """What :meth:`View.save` writes: the view's class, settings, last result and inputs, as data.

    ``values`` are the settings of the next run, ``run_settings`` those the result was computed
    with; ``attributes`` the inputs the view's constructor kept (:attr:`View.saved_attributes`:
    the image, its picture), ``widgets`` the values of :attr:`View.saved_widgets`; ``layers``,
    ``probe_output`` and ``probabilities`` what :meth:`View.probe` found.
    """

    view: str
    model_class: str
    fingerprint: str | None
    values: dict[str, Any]
    run_settings: dict[str, Any]
    result: Any
    seconds: float
    warnings: list[str]
    selected: Any
    attributes: dict[str, Any]
    widgets: dict[str, Any]
    layers: list[LayerInfo] | None = None
    probe_output: Any = None
    probabilities: list[float] | None = None


class View(W.VBox):
    """Base of a view that computes in the background from declared settings.

    A subclass sets :attr:`Settings` (a frozen dataclass of :func:`~neuronviz.widgets.settings.setting`
    fields), :attr:`title`, and implements :meth:`compute`, :meth:`show`, :meth:`snapshot` and
    :meth:`draw`; optionally :meth:`build` (its panels), :meth:`header_html`,
    :meth:`check_selected` / :meth:`show_selected` (if it has a selection) and
    :meth:`setting_changed`. Its constructor checks its own inputs, calls :meth:`probe` for the
    layer list and the classes, then ``super().__init__(model, autorun=..., **settings)``.

    Attributes
    ----------
    status : str
        ``"idle"``, ``"running"``, ``"done"``, ``"cancelled"`` or ``"error"`` (a traitlet:
        ``view.observe(fn, "status")``).
    error : str or None
        The last run's error message (None after a successful run).
    warnings : list of str
        The warnings the last finished run raised (also shown in the widget).
    selected : object
        What is selected (a traitlet; views define what it holds and check it).
    outcome : Outcome or None
        The latest finished run.
    side_work : list
        The panels' own work on the model in the background (e.g. a
        :class:`~neuronviz.widgets.knockouts.CurvesSection`; anything with ``clear()`` and
        ``wait(timeout)``), which :meth:`build` appends: cleared when a run starts (the run
        needs the model and makes it stale), cleared and waited for by :meth:`close`.
    """

    status = traitlets.Unicode("idle")
    error = traitlets.Unicode(None, allow_none=True)
    selected = traitlets.Any(None, allow_none=True)

    #: The declared settings (a frozen dataclass of ``setting(...)`` fields).
    Settings: ClassVar[type]
    #: Short name of the view, e.g. for its tab in an app.
    title: ClassVar[str] = "view"
    #: DOM class of the view's box.
    css: ClassVar[str] = ""
    #: The file name the Export row offers.
    export_name: ClassVar[str] = "view.png"
    run_label: ClassVar[str] = "Run"
    #: Whether live mode turns itself on while runs are fast (see :attr:`live`); a view that
    #: publishes partial results sets it.
    live_auto: ClassVar[bool] = False
    live_toggle: W.Checkbox
    _live_auto: bool
    #: What a saved view keeps besides its settings and result (:meth:`save`): the attributes its
    #: constructor sets from its inputs (the image, its picture), the attributes a loaded view
    #: starts with instead (inputs that are not data, such as a data loader), and the widgets
    #: (attribute paths, e.g. ``"overlay.opacity"``) whose value is kept.
    saved_attributes: ClassVar[tuple[str, ...]] = ()
    unsaved_attributes: ClassVar[dict[str, Any]] = {}
    saved_widgets: ClassVar[tuple[str, ...]] = ()
    _loaded_from: tuple[str, str, str | None] | None = None  # (file name, model class, fingerprint)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared = cls.__dict__.get("Settings")
        if declared is None:
            return
        for name in fields_of(declared):
            if not any(name in vars(k) for k in cls.__mro__ if k not in (View, W.VBox) and issubclass(k, View)):
                setattr(cls, name, _setting_property(name))

    def __init__(self, model: nn.Module, *, autorun: bool = True, **values: Any) -> None:
        live = values.pop("live", None)  # live mode: see the ``live`` property
        super().__init__()
        enable_colab_widgets()
        self.model = model
        self._worker = Worker(f"neuronviz-{type(self).__name__.lower()}")
        self.lock = self._worker.lock
        self.outcome: Outcome | None = None
        self.warnings: list[str] = []
        self._pending_displays: list[Any] = []
        self.side_work: list[Any] = []  # panels' own model work: see the class docstring
        self._png_cache: tuple[int, bytes] | None = None
        self._view_version = 0  # bumped whenever what the static picture shows changes
        before = _instances()
        self._fields = fields_of(self.Settings)
        self._values: dict[str, Any] = {}
        restored = self.__dict__.pop("_restored_values", None)  # View.load: values checked when saved
        if restored is None:
            self._check_values(values)
        else:
            self._values = restored
        self.controls: dict[str, W.Widget] = {}
        for name, (_default, meta) in self._fields.items():
            if meta.control is not None:
                widget = make_control(name, meta, self._values[name], self)
                widget.observe(self._control_moved(name, meta), names="value")
                self.controls[name] = widget
        if self.css:
            self.add_class(self.css)
        self.header = W.HTML("")
        self.run_bar = RunBar(self._run_clicked, self.cancel, run_label=self.run_label)
        self._live_setup(live)
        self.exporter = ExportRow(self._export_from_row, self.report_error, filename=self.export_name)
        body = self.build()
        self.children = [self.header, self.settings_panel(), self.run_bar.widget, *body, self.exporter.widget]
        self._update_header()
        self._owned = [w for k, w in _instances().items() if k not in before]
        if autorun:
            self.run()

    # ------------------------------------------------------------------ what a view provides

    def compute(self, settings: Any, job: Job) -> Any:
        """The run, in the worker thread, holding the model's lock: return a plain result record.

        Pass ``job.progress`` as ``progress=`` to neuronviz methods (it raises to cancel) and
        call ``job.check()`` between stages.
        """
        raise NotImplementedError

    def show(self, result: Any) -> None:
        """Bring the panels to a finished run's result (worker thread, lock held)."""
        raise NotImplementedError

    def snapshot(self, **options: Any) -> Any:
        """What the figure needs, as a plain-data record of the current view (lock held)."""
        raise NotImplementedError

    def draw(self, record: Any, *, dpi: int, path: Path | None = None) -> Any:
        """The matplotlib figure of ``record`` (saved to ``path`` when given); never runs the model."""
        raise NotImplementedError

    def build(self) -> list[W.Widget]:
        """Make the panels; return the widgets that go between the run bar and the Export row."""
        return []

    def settings_panel(self) -> W.Widget:
        """The controls laid out; default columns by each setting's ``group``."""
        return settings_panel({n: (w, self._fields[n][1]) for n, w in self.controls.items()})

    def header_html(self) -> str:
        """The HTML of the header line."""
        return f"<b>{self.title}</b> · {self.model_name}"

    @property
    def model_name(self) -> str:
        """The model's class name (of a view loaded without its model: the one it was made with)."""
        if self.model is None and self._loaded_from is not None:
            return self._loaded_from[1]
        return type(self.model).__name__

    def done_text(self, outcome: Outcome) -> str:
        """The status line after a run."""
        return f"done in {outcome.seconds:.1f} s"

    def default_for(self, name: str) -> Any:
        """The value of a setting declared with default None (e.g. the model's device)."""
        if name == "device":
            return model_device(self.model).type
        raise NeuronvizError(f"{name} has no default here; give it")

    def setting_changed(self, name: str, value: Any) -> None:
        """A setting changed (from its control or its property); ``rerun=False`` ones apply here."""

    def check_selected(self, value: Any) -> Any:
        """``value`` checked as a selection (default: any)."""
        return value

    def show_selected(self) -> None:
        """Bring the panels to :attr:`selected` (lock held)."""

    def static_png(self) -> bytes | None:
        """The picture beside the widget in its display data; default the figure at 60 dpi."""
        if self.outcome is None:
            return None
        return figure_png(self.draw(self.snapshot(), dpi=STATIC_DPI), STATIC_DPI)

    # ------------------------------------------------------------------ probing the model

    def probe(self, model: nn.Module, x: Any, *, classify: bool = True) -> LayerSummary:
        """One forward pass of ``model`` on ``x`` for the layer list (and the class probabilities).

        Called by a view's constructor before ``super().__init__``; sets :attr:`model`,
        :attr:`summary`, :attr:`layer_names`, :attr:`layer_options` and :attr:`classes`.

        Raises
        ------
        NeuronvizError
            The model fails on ``x``, or (``classify``) does not return (N, classes) scores.
        """
        import torch

        self.model = model
        with hold_model(self.model):
            try:
                summary = layer_summary(self.model, x.to(model_device(self.model)))
            except NeuronvizError:
                raise
            except RuntimeError as err:
                raise NeuronvizError(f"the model failed on the input {tuple(x.shape)}: {err}") from err
        self._use_summary(summary)
        if classify:
            output = getattr(summary, "output", None)
            if output is None:  # an older summary without the probe's output
                from ..core.targets import top_predictions

                with hold_model(self.model):
                    ranked = top_predictions(self.model, x, k=10**9)
                probs = torch.zeros(len(ranked), dtype=torch.float64)
                for c, _name, p in ranked:
                    probs[c] = p
            else:
                try:
                    scores = check_class_output(output)
                except NeuronvizError as err:
                    raise NeuronvizError(
                        f"{type(self).__name__} explains one class of a classifier that returns (N, classes) "
                        f"scores: {err}. For other outputs, use the functions with target=callable"
                    ) from None
                probs = torch.softmax(scores.detach().double().mean(0), 0)
            self.classes = ClassChoices(probs)
        return summary

    def _use_summary(self, summary: LayerSummary) -> None:
        self.summary = summary
        self.layer_names = [i.name for i in summary]
        self.layer_options = [(f"{i.name}  {tuple(i.shape)}", i.name) for i in summary]

    # ------------------------------------------------------------------ settings

    def _check_values(self, values: dict[str, Any]) -> None:
        unknown = sorted(set(values) - set(self._fields))
        if unknown:
            raise NeuronvizError(f"unknown setting(s) {unknown}; this view's settings are {list(self._fields)}")
        for name, (default, meta) in self._fields.items():  # in order: a rule may read earlier settings
            value = values.get(name, default)
            self._values[name] = meta.rule(self.default_for(name) if value is None else value, name, self)

    def _set(self, name: str, value: Any) -> None:
        meta = self._fields[name][1]
        value = meta.rule(value, name, self)
        widget = self.controls.get(name)
        if widget is None:
            self._values[name] = value
            self._changed(name, value)
        else:
            show_value(widget, meta, value, self)  # the control's observer stores it

    def _control_moved(self, name: str, meta: Setting):  # noqa: ANN202 - an observer
        def moved(change: dict) -> None:
            value = control_value(self.controls[name], meta)
            if self._values.get(name) == value:
                return
            self._values[name] = value
            self._changed(name, value)

        return moved

    def _changed(self, name: str, value: Any) -> None:
        try:
            with self.lock:
                self.setting_changed(name, value)
                if not self._fields[name][1].rerun:
                    self._view_version += 1
                elif self.live:
                    self._live_schedule()
                elif self.status == "done" and self.outcome is not None and self._stale(self.outcome):
                    self.run_bar.status.value = f"{self.done_text(self.outcome)} · settings changed: press Run"
        except Exception as err:  # noqa: BLE001 - shown in the widget, not lost in a callback log
            self.report_error(err)

    def _stale(self, outcome: Outcome) -> bool:
        current = self.current_settings()
        rerun = [n for n, (_default, meta) in self._fields.items() if meta.rerun]
        return any(getattr(current, n) != getattr(outcome.settings, n) for n in rerun)

    def current_settings(self) -> Any:
        """The settings the next run would use, as the :attr:`Settings` dataclass."""
        return self.Settings(**self._values)

    @property
    def settings(self) -> dict[str, Any]:
        """Every setting of the next run as a plain dict (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self._values.items()}

    # ------------------------------------------------------------------ selection

    @traitlets.validate("selected")
    def _validate_selected(self, proposal: dict) -> Any:
        return self.check_selected(proposal["value"])

    @traitlets.observe("selected")
    def _selected_changed(self, _change: dict) -> None:
        with self.lock:
            self._view_version += 1
            self.show_selected()

    def select_from_ui(self, value: Any) -> None:
        """What a panel's click does: select ``value``, or show why it cannot be."""
        try:
            self.selected = value
        except Exception as err:  # noqa: BLE001 - shown in the widget
            self.report_error(err)

    # ------------------------------------------------------------------ running

    def run(self) -> Job:
        """Start a run with the current settings in the background (cancelling a running one).

        Returns
        -------
        Job
            The run (its ``id`` is the run id); :meth:`wait` blocks until it ended.

        Raises
        ------
        NeuronvizError
            A setting that cannot run (for example no layer picked), or a view loaded without
            its model.
        """
        self.require_model()
        for part in self.side_work:
            part.clear()
        with self.lock:
            settings = self.current_settings()
            job = self._worker.submit(lambda job: self._work(job, settings), on_progress=self._progress,
                                      on_finish=self._finished)
            self.error = None
            self.status = "running"
            self.run_bar.running("running")
        return job

    def _work(self, job: Job, settings: Any) -> Outcome:
        job.publish = lambda partial: self._publish(job, partial)  # what compute calls with a partial result
        with hold_model(self.model, check=job.check, on_wait=self._waiting), _collect_warnings() as caught:
            start = time.perf_counter()
            result = self.compute(settings, job)
            return Outcome(settings, result, time.perf_counter() - start, caught)

    def _run_clicked(self) -> None:
        try:
            self.run()
        except Exception as err:  # noqa: BLE001 - shown in the widget
            self.report_error(err)

    def _progress(self, job: Job, done: int, total: int) -> None:
        self.run_bar.set_progress(done, total)

    def _finished(self, job: Job) -> None:
        if job.state == "done":
            outcome: Outcome = job.result
            if self._live_auto:
                self.live_toggle.value = self.estimate_seconds(outcome) < LIVE_UNDER_S
                self._live_auto = True  # still the view's own choice, not the user's
            previous = self.outcome
            try:
                self.outcome = outcome
                self.show(outcome.result)
            except Exception as err:  # noqa: BLE001 - a failure to show a result is an error of the run
                self.outcome = previous
                self._show_failure(err)
                return
            self.warnings = list(outcome.warnings)
            self._view_version += 1
            self._update_header()
            self._refresh_pending_displays()
            self.error = None
            self.run_bar.finished("done", self.done_text(outcome))
            self.run_bar.show_warnings(self.warnings)
            self.status = "done"
        elif job.state == "cancelled":
            self.run_bar.finished("cancelled")
            self.status = "cancelled"
        else:
            self._show_failure(job.error)

    def _waiting(self) -> None:
        with self.lock:
            latest = self._worker.latest
            if latest is None or not latest.cancelled:
                self.run_bar.status.value = "waiting: another call is running this model"

    def _show_failure(self, err: BaseException | None) -> None:
        message = error_message(err)
        self.error = message
        self.run_bar.show_error(message)
        self.run_bar.finished("error", "error (see below)")
        self.status = "error"

    def report_error(self, err: BaseException) -> None:
        """Show an error raised by a button or other callback in the error area and in :attr:`error`."""
        with self.lock:
            self.error = error_message(err)
            self.run_bar.show_error(self.error)

    def cancel(self) -> None:
        """Cancel the running computation (no effect when none runs); the current results stay."""
        self._worker.cancel()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the current run ended and its results are shown (for scripts and tests).

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait at most.

        Raises
        ------
        TimeoutError
            The run is still going after ``timeout`` seconds.
        """
        timer = self._live_timer
        if timer is not None:
            timer.join(timeout)  # a live run about to start is the run to wait for
        self._worker.wait(timeout)

    def _update_header(self) -> None:
        self.header.value = self.header_html()

    # ------------------------------------------------------------------ live mode

    def show_partial(self, partial: Any) -> None:
        """Show a partial result a live run published (``job.publish``); default :meth:`show` (lock held)."""
        self.show(partial)

    def estimate_seconds(self, outcome: Outcome) -> float:
        """Seconds a run of the current settings would take, estimated from ``outcome`` (default its time)."""
        return outcome.seconds

    def wants_model(self) -> bool:
        """Whether a run of this view is scheduled (the live pause) or under way, results shown included.

        Background helpers of the view that run the model (data-set examples) give way while it
        is True, so that a live run neither waits for them nor shares the processor with them.
        """
        timer = self._live_timer
        return (timer is not None and timer.is_alive()) or self._worker.busy

    @property
    def live(self) -> bool:
        """Live mode: a change of a setting that needs a run starts one by itself, after a short pause.

        In a view with :attr:`live_auto`, on by default while a run of the current settings is
        estimated (:meth:`estimate_seconds`) to take under :data:`LIVE_UNDER_S` seconds, until
        the user chooses; settable (and the ``live`` constructor argument). A live run shows
        partial results as they come (``job.publish(partial)`` in :meth:`compute`); the
        previous picture stays until then.
        """
        return bool(self.live_toggle.value)

    @live.setter
    def live(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise NeuronvizError(f"live must be True or False, got {value!r}")
        self.live_toggle.value = value

    def _live_setup(self, live: bool | None) -> None:
        if live is not None and not isinstance(live, bool):
            raise NeuronvizError(f"live must be True, False or None (automatic), got {live!r}")
        self._live_timer: threading.Timer | None = None
        self._live_auto = live is None and self.live_auto
        self.live_toggle = W.Checkbox(value=bool(live), description="live", indent=False,
                                      tooltip="run by itself shortly after a setting changes",
                                      layout=W.Layout(width="70px"))
        self.live_toggle.add_class("nv-live")
        self.live_toggle.observe(self._live_toggled, names="value")
        row = self.run_bar.widget.children[0]
        row.children = (*row.children, self.live_toggle)

    def _live_toggled(self, _change: dict) -> None:
        self._live_auto = False  # the user chose

    def _live_schedule(self) -> None:
        """(Re)start the pause after which the current settings run; a burst of changes runs once."""
        if self._live_timer is not None:
            self._live_timer.cancel()
        self._live_timer = threading.Timer(LIVE_DEBOUNCE_S, self._live_fire)
        self._live_timer.daemon = True
        self._live_timer.start()
        self.run_bar.status.value = "live: running shortly"

    def _live_fire(self) -> None:
        with self.lock:
            if threading.current_thread() is not self._live_timer or not self.live:
                return
            try:
                self.run()
            except Exception as err:  # noqa: BLE001 - shown in the widget
                self.report_error(err)

    def _publish(self, job: Job, partial: Any) -> None:
        job.check()
        with self.lock:
            if self.live and self._worker.is_latest(job) and not job.cancelled:
                try:
                    self.show_partial(partial)
                except Exception as err:  # noqa: BLE001 - a partial picture is never worth the run
                    self.report_error(err)

    # ------------------------------------------------------------------ figures

    def _record(self, **options: Any) -> Any:
        if self.outcome is None:
            raise NeuronvizError("nothing to export yet: the first run has not finished (call w.wait() first)")
        return self.snapshot(**options)

    def figure(self, dpi: int = 100, **options: Any) -> Any:
        """The current view drawn with matplotlib.

        Parameters
        ----------
        dpi : int
            Resolution.
        **options
            What the view's :meth:`snapshot` takes (e.g. ``part=`` of the PCACE view).

        Returns
        -------
        neuronviz.render.StaticFigure
            Displays itself in a notebook; ``savefig`` it or use :meth:`export`.

        Raises
        ------
        NeuronvizError
            No run has finished yet.
        """
        dpi = check_dpi(dpi)
        with self.lock:
            record = self._record(**options)
        return self.draw(record, dpi=dpi)

    def export(self, path: str | Path, dpi: int = 150, **options: Any) -> Path:
        """Save the current view as a print-quality PNG, SVG or PDF, or as an interactive HTML page (by the suffix).

        A ``.html`` file is one self-contained page (:meth:`page`) that opens offline in any
        browser, without a kernel: plots, numbers, the embedded overlays and a small script.

        Parameters
        ----------
        path : str or pathlib.Path
            File name ending in ``.png``, ``.svg``, ``.pdf`` or ``.html``.
        dpi : int
            Resolution of a PNG (and of the images embedded in SVG and PDF).
        **options
            As for :meth:`figure`.

        Returns
        -------
        pathlib.Path

        Raises
        ------
        NeuronvizError
            Another suffix, a bad ``dpi``, or no finished run yet.
        """
        if Path(path).suffix.lower() in PAGE_SUFFIXES:
            with self.lock:
                page = self.page(self._record(**options))
            return write_page(page, path)
        try:
            target = check_path(path)
        except ValueError as err:
            raise NeuronvizError(f"{err}, or .html for an interactive page") from None
        if target is None:
            raise NeuronvizError("export needs a file name ending in .png, .svg, .pdf or .html")
        dpi = check_dpi(dpi)
        with self.lock:
            record = self._record(**options)
        self.draw(record, dpi=dpi, path=target)
        return target

    def page(self, record: Any) -> str:
        """The interactive HTML page of ``record`` (:mod:`neuronviz.render.html`); never runs the model.

        A view with a page implements it in a few lines; :meth:`export` writes it for ``.html``.
        """
        raise NeuronvizError(f"{type(self).__name__} has no HTML page; export it as .png, .svg or .pdf")

    def page_settings(self) -> list[tuple[str, Any]]:
        """The last run's settings as (label, value) rows for a page: the model's class, then each setting."""
        assert self.outcome is not None  # asked for only once a run finished
        rows: list[tuple[str, Any]] = [("model", self.model_name)]
        for name, (_default, meta) in self._fields.items():
            # what applies at once (top-k) as shown now, the rest as the run had it
            value = getattr(self.outcome.settings, name) if meta.rerun else self._values[name]
            if name == "target" and hasattr(self, "classes") and isinstance(value, int):
                value = self.classes.name(value)
            elif isinstance(value, (tuple, list)):
                value = ", ".join(map(str, value))
            rows.append((meta.label or name.replace("_", " "), value))
        return rows

    def export_options(self) -> dict[str, Any]:
        """The options the Export button passes to :meth:`export` (e.g. the part chosen)."""
        return {}

    def _export_from_row(self, name: str) -> Path:
        return self.export(name, **self.export_options())

    # ------------------------------------------------------------------ saving and loading

    def save(self, path: str | Path) -> Path:
        """Save the view: its class, settings, last result and inputs, in a file :meth:`load` restores.

        The file is an npz with a JSON header (:mod:`neuronviz.core.archive`: no pickle), with
        the model's class name and weights fingerprint; the model itself is not saved.

        Parameters
        ----------
        path : str or pathlib.Path
            The file, e.g. ``"run.nvz"`` (written as given).

        Returns
        -------
        pathlib.Path

        Raises
        ------
        NeuronvizError
            No run has finished yet, or the result holds something that is not data.
        """
        state = self.saved_state()
        record = {"class": state.model_class, "fingerprint": state.fingerprint}
        return save_archive(path, state, settings={"view": state.view, **state.run_settings}, model_record=record)

    def saved_state(self) -> SavedView:
        """What :meth:`save` writes, as a record (an :class:`~neuronviz.App` file holds one per tab).

        Returns
        -------
        SavedView

        Raises
        ------
        NeuronvizError
            No run has finished yet.
        """
        with self.lock:
            outcome = self.outcome
            if outcome is None:
                raise NeuronvizError("nothing to save yet: the first run has not finished (call w.wait() first)")
            summary, classes = getattr(self, "summary", None), getattr(self, "classes", None)
            output = getattr(summary, "output", None)
            state = SavedView(
                view=type(self).__name__, model_class=self.model_name, fingerprint=None, values=dict(self._values),
                run_settings={n: getattr(outcome.settings, n) for n in fields_of(type(outcome.settings))},
                result=outcome.result, seconds=outcome.seconds, warnings=list(outcome.warnings),
                selected=self.selected, attributes={n: getattr(self, n) for n in self.saved_attributes},
                widgets={n: _widget_at(self, n).value for n in self.saved_widgets},
                layers=None if summary is None else list(summary),
                probe_output=output if isinstance(output, torch.Tensor) else None,
                probabilities=None if classes is None else [classes.probabilities[c] for c in range(classes.n_classes)],
            )
        # the weights are read outside the view's lock: a run holds the model, never changes its weights
        state.fingerprint = (weights_fingerprint(self.model) if self.model is not None
                             else None if self._loaded_from is None else self._loaded_from[2])
        return state

    @classmethod
    def load(cls, path: str | Path, model: nn.Module | None = None) -> "View":
        """A view saved with :meth:`save`, its panels showing the saved result, without running the model.

        Parameters
        ----------
        path : str or pathlib.Path
            The file.
        model : torch.nn.Module, optional
            The model the file was made with (same weights, checked by fingerprint): the view
            can then run again. Without it the view shows and exports the saved result; Run is
            disabled.

        Returns
        -------
        View
            An instance of the saved view's class (``nv.View.load`` accepts any).

        Raises
        ------
        NeuronvizError
            The file is not a saved view of this class, is damaged or from a newer version, or
            ``model``'s weights fingerprint differs from the one the file was made with.
        """
        name = Path(path).name
        state, header = read_archive(path)
        if not isinstance(state, SavedView):
            kind = header.get("type")
            hint = "nv.App.load(path)" if kind == "App" else "nv.load(path)"
            raise NeuronvizError(f"{name} holds {'an' if str(kind)[:1] in 'AEIOU' else 'a'} {kind}, not a saved view; "
                                 f"{hint} reads it")
        return cls.from_state(state, model, name)

    @classmethod
    def from_state(cls, state: SavedView, model: nn.Module | None = None, name: str = "a saved view") -> "View":
        """The view of a record of :meth:`saved_state`, as :meth:`load` makes it from a file.

        Parameters
        ----------
        state : SavedView
            The record.
        model : torch.nn.Module, optional
            As for :meth:`load`.
        name : str
            Where the record came from, for messages.

        Returns
        -------
        View

        Raises
        ------
        NeuronvizError
            As :meth:`load`.
        """
        found = _view_class(state.view)
        if found is None:
            raise NeuronvizError(f"{name} holds a saved {state.view}, a view this neuronviz does not have")
        if not issubclass(found, cls):
            raise NeuronvizError(f"{name} holds a saved {state.view}, not a {cls.__name__}: load it with "
                                 f"{state.view}.load(path)")
        if model is not None:
            if not isinstance(model, nn.Module):
                raise NeuronvizTypeError(f"model must be a torch.nn.Module or None, got {type(model).__name__}")
            mine = weights_fingerprint(model)
            if state.fingerprint is not None and mine != state.fingerprint:
                other = (f"a {type(model).__name__}, not a {state.model_class}" if type(model).__name__ !=
                         state.model_class else f"a {state.model_class} with other weights")
                raise NeuronvizError(
                    f"the model does not match {name}: its weights fingerprint {mine[:19]}… differs from the file's "
                    f"{state.fingerprint[:19]}…; the file was made with a {state.model_class}, this is {other}. Pass "
                    "the model it was made with, or model=None to show the saved result without running")
        view = found.__new__(found)
        view._restore(state, model, name)
        return view

    def _restore(self, state: SavedView, model: nn.Module | None, name: str) -> None:
        # only what this class declares is taken from the file: a file cannot set other attributes
        unknown = sorted(set(state.attributes) - set(self.saved_attributes)) + sorted(
            set(state.widgets) - set(self.saved_widgets))
        missing = sorted(set(self.saved_attributes) - set(state.attributes))
        if unknown or missing:
            raise NeuronvizError(f"{name} does not hold a {type(self).__name__} this neuronviz can restore: "
                                 f"unknown parts {unknown}, missing parts {missing} (another version?)")
        for attribute, value in {**state.attributes, **self.unsaved_attributes}.items():
            setattr(self, attribute, value)
        self.model = model  # type: ignore[assignment]  # None: a view that shows a saved result only
        self._loaded_from = (name, state.model_class, state.fingerprint)
        if state.layers is not None:
            summary = LayerSummary(state.layers)
            summary.output = state.probe_output
            self._use_summary(summary)
        if state.probabilities is not None:
            self.classes = ClassChoices(state.probabilities)
        values, fields = dict(state.values), fields_of(self.Settings)
        if model is not None and "device" in values:  # the saved device may not be here; then the model's
            try:
                values["device"] = fields["device"][1].rule(values["device"], "device", self)
            except NeuronvizError:
                values["device"] = model_device(model).type
        self._restored_values = {n: values.get(n, default) for n, (default, _meta) in fields.items()}
        View.__init__(self, model, autorun=False)  # type: ignore[arg-type]
        for path, value in state.widgets.items():
            _widget_at(self, path).value = value
        ran = self.Settings(**{n: v for n, v in state.run_settings.items() if n in fields})
        outcome = Outcome(ran, state.result, state.seconds, list(state.warnings))
        with self.lock:
            self.outcome = outcome
            self.show(state.result)
            if state.selected is not None and state.selected != self.selected:
                try:
                    self.selected = state.selected
                except NeuronvizError:
                    pass  # the saved selection is not in the result: the view's own choice stays
            self.warnings = list(outcome.warnings)
            self._view_version += 1
            self._update_header()
            note = "" if model is not None else " · no model: Run is off"
            self.run_bar.finished("done", f"loaded from {name} · {self.done_text(outcome)}{note}")
            self.run_bar.show_warnings(self.warnings)
            if model is None:
                self.run_bar.run_button.disabled = True
                self.run_bar.run_button.tooltip = self._no_model_reason()
                self.live_toggle.disabled = True
            self.status = "done"

    def require_model(self) -> nn.Module:
        """The view's model, for work that runs it (a run, a panel's knock-outs).

        Returns
        -------
        torch.nn.Module

        Raises
        ------
        NeuronvizError
            The view was loaded from a file without its model.
        """
        if self.model is None:
            raise NeuronvizError(self._no_model_reason())
        return self.model

    def _no_model_reason(self) -> str:
        name, model_class, _fp = self._loaded_from or ("a file", "?", None)
        return (f"this {type(self).__name__} was loaded from {name} without its model, so it cannot run; "
                f"{type(self).__name__}.load(path, model=...) with the {model_class} it was made with runs it again")

    # ------------------------------------------------------------------ display

    def _repr_mimebundle_(self, **kwargs: Any) -> dict | None:
        data = super()._repr_mimebundle_(**kwargs)
        if data is None:
            return data
        png = self._cached_png()
        if png is not None:
            data["image/png"] = base64.b64encode(png).decode("ascii")
        return data

    def _ipython_display_(self) -> None:
        from IPython.display import display

        bundle = self._repr_mimebundle_()
        with self.lock:
            handle = display(bundle, raw=True, display_id=True)
            if handle is not None and self.outcome is None:
                self._pending_displays.append(handle)  # updated once the first result is shown

    def _cached_png(self) -> bytes | None:
        cached = self._png_cache
        if cached is not None and cached[0] == self._view_version:
            return cached[1]
        try:
            with self.lock:
                png = self.static_png()
        except Exception:  # noqa: BLE001 - a missing picture must never break the display of the widget
            png = None
        if png is not None:
            self._png_cache = (self._view_version, png)
        return png

    def _refresh_pending_displays(self) -> None:
        handles, self._pending_displays = self._pending_displays, []
        if not handles:
            return
        try:
            bundle = self._repr_mimebundle_()
            for handle in handles:
                handle.update(bundle, raw=True)
        except Exception:  # noqa: BLE001 - only the static picture of a notebook export is at stake
            pass

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Stop the run, wait until the model is restored, then close every widget this view made."""
        worker = getattr(self, "_worker", None)  # absent when the constructor failed early
        timer = getattr(self, "_live_timer", None)
        if timer is not None:
            timer.cancel()
        for part in getattr(self, "side_work", []):
            part.clear()
            part.wait(CLOSE_WAIT_S)
        if worker is not None:
            worker.close()
            worker.join(CLOSE_WAIT_S)
        for widget in list(_descendants(self)) + list(getattr(self, "_owned", [])):
            if widget is not self:
                widget.close()
        self._pending_displays = []
        super().close()

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.settings.items())
        return f"{type(self).__name__}(status={self.status!r}, {shown})"


def _setting_property(name: str) -> property:
    def get(self: View) -> Any:
        value = self._values[name]
        return list(value) if isinstance(value, tuple) else value  # layer lists read as lists

    def put(self: View, value: Any) -> None:
        self._set(name, value)

    return property(get, put, doc=f"The setting ``{name}`` (validated when set; the control follows).")


def _widget_at(view: View, path: str) -> Any:
    target: Any = view
    for part in path.split("."):
        target = getattr(target, part)
    return target


def _view_class(name: str) -> type[View] | None:
    """The subclass of :class:`View` called ``name`` (views register by being defined; nothing is imported)."""
    stack: list[type[View]] = [View]
    while stack:
        cls = stack.pop()
        if cls.__name__ == name:
            return cls
        stack.extend(cls.__subclasses__())
    return None


def check_dpi(dpi: object) -> int:
    """``dpi`` as an int in [10, 1200], or a :class:`NeuronvizError`."""
    if isinstance(dpi, bool) or not isinstance(dpi, (int, float)) or not 10 <= dpi <= 1200:
        raise NeuronvizError(f"dpi must be a number between 10 and 1200, got {dpi!r}")
    return int(dpi)


def error_message(err: BaseException | None) -> str:
    """``"Type: message"`` of an exception, as the widgets show it."""
    if err is None:
        return "unknown error"
    text = str(err).strip()
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _instances() -> dict:
    from ipywidgets.widgets import widget as _w

    return dict(_w._instances)


def _descendants(root: W.Widget) -> Iterator[W.Widget]:
    """Every widget reachable from ``root`` through its synced traits (children, marks, scales, layouts)."""
    seen: set[int] = set()
    stack: list[Any] = [root]
    while stack:
        value = stack.pop()
        if isinstance(value, W.Widget):
            if id(value) in seen:
                continue
            seen.add(id(value))
            yield value
            for key in value.keys:
                try:
                    stack.append(getattr(value, key))
                except Exception:  # noqa: BLE001 - a trait that cannot be read holds no widget
                    continue
        elif isinstance(value, (list, tuple)):
            stack.extend(value)
        elif isinstance(value, dict):
            stack.extend(value.values())


# -- warnings raised in a worker thread reach that thread's view, not the notebook


_collecting = threading.local()
_original_warn = warnings.warn
_install_guard = threading.Lock()
_installed = False


def _warn(message: Any, category: Any = None, stacklevel: int = 1, source: Any = None) -> None:
    # filters and showwarning are process-wide (and replaced by catch_warnings), so a worker
    # thread's warnings are caught where they are raised, by thread
    sink = getattr(_collecting, "sink", None)
    if sink is not None:
        kind = category or (type(message) if isinstance(message, Warning) else UserWarning)
        if not issubclass(kind, (DeprecationWarning, PendingDeprecationWarning)):
            text = str(message)
            if text not in sink:
                sink.append(text)
            return
    _original_warn(message, category, stacklevel + 1, source)


class _collect_warnings:
    """Within the block, the warnings this thread raises go to a list instead of the notebook."""

    def __enter__(self) -> list[str]:
        global _installed
        with _install_guard:
            if not _installed:
                warnings.warn = _warn
                _installed = True
        self._previous = getattr(_collecting, "sink", None)
        _collecting.sink = []
        return _collecting.sink

    def __exit__(self, *exc: object) -> None:
        _collecting.sink = self._previous
