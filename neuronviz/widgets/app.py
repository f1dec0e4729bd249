"""App: the neuron explorer, PCACE and guided feature inversion of one model as tabs, and ``app()``.

The tabs come from one registry, :data:`TABS`: a tab is a name, the view class and how to
build the view from the app (its model, image and image set). Adding a tab is one entry::

    TABS["saliency"] = Tab(SaliencyView, lambda app, **kw: SaliencyView(app.model, app.x, **kw))
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import ipywidgets as W
import numpy as np
import torch
from PIL import Image
from torch import nn

from ..core.archive import archived
from ..core.archive import read as read_archive
from ..core.archive import save as save_archive
from ..core.errors import NeuronvizError, NeuronvizTypeError
from .colab import enable_colab_widgets
from .explorer import NeuronExplorer
from .inversion_view import InversionView
from .pcace_view import PCACEView
from .settings import Int
from .view import SavedView

__all__ = ["App", "SavedApp", "Tab", "TABS", "app"]


@dataclass(frozen=True)
class Tab:
    """One tab of an :class:`App`: its view class and how to build the view.

    Attributes
    ----------
    view : type
        The view class (a :class:`~neuronviz.widgets.view.View`); its ``title`` is the tab's title.
    make : callable
        ``make(app, **options) -> view``, the view of the app's model, image or image set
        (``app.model``, ``app.x``, :meth:`App.image_set`), ``options`` the user's keyword arguments
        of the view.
    takes_target : bool
        Whether the view takes ``target=`` (the app's ``target`` reaches it).
    """

    view: Any
    make: Callable[..., Any]
    takes_target: bool = True


#: The tabs of an :class:`App`, in order: name -> :class:`Tab`.
TABS: dict[str, Tab] = {
    "explorer": Tab(NeuronExplorer, lambda app, **kw: NeuronExplorer(app.model, app.x, **kw)),
    "pcace": Tab(PCACEView, lambda app, **kw: PCACEView(app.model, app.image_set(), **kw)),
    "inversion": Tab(InversionView, lambda app, **kw: InversionView(app.model, app.x, **kw)),
}


@archived("App")
@dataclass
class SavedApp:
    """What :meth:`App.save` writes: a :class:`~neuronviz.widgets.view.SavedView` per tab that had
    run, the app's image, its PCACE images (None: made from the photo when needed), the photo
    (uint8 (H, W, 3), or None), ``n_images``, ``seed``, ``target``, the tab shown, and the model's
    class and weights fingerprint.
    """

    tab: str
    views: dict[str, SavedView]
    image: torch.Tensor
    images: torch.Tensor | None
    photo: np.ndarray | None
    n_images: int
    seed: int
    target: int | None
    model_class: str
    fingerprint: str | None


class App(W.Tab):
    """The neuron explorer, PCACE and guided feature inversion of one model and image, as tabs.

    Tab "Neurons" is a :class:`NeuronExplorer` of the image, "PCACE" a :class:`PCACEView` of a
    set of images of its class, "Inversion" an :class:`InversionView` of the image (the tabs of
    :data:`TABS`, in order). With ``lazy=True`` a tab's view is built (and its first run started)
    when the tab is first shown, so the explorer appears at once. Runs of the views take turns
    on the model (one thread at a time runs it), so the model is never run by two of them at once.

    Python interface
    ----------------
    explorer, pcace, inversion
        The views, one property per tab (accessing one builds it if its tab was not shown yet).
    views : dict of str to View
        The views built so far, by tab name (:data:`TABS`).
    tab : str
        The tab shown; settable (``app.tab = "pcace"``).
    image_set()
        The images of the PCACE tab.
    wait(timeout=None)
        Block until every built view's run ended.
    save(path), App.load(path, model=None)
        The tabs that ran, in one file; loaded back without running the model.
    close()
        Stop every view's worker and close the widgets.

    Parameters
    ----------
    model : torch.nn.Module
        A classifier returning (N, classes) scores; left exactly as it was.
    image : torch.Tensor or PIL.Image.Image or numpy.ndarray
        The image, normalised as the model expects ((1, C, H, W) or (C, H, W)); or a photo (a
        PIL image or a uint8 (H, W, 3) array), which is then prepared with
        :func:`neuronviz.preprocess` (the default model's normalisation).
    images : torch.Tensor, optional
        (N, C, H, W) images of the image's class for PCACE (at least 20). Default, for a photo:
        ``nv.augment(photo, n_images, seed=seed)``, random views of it; for a tensor image the
        PCACE tab asks for them.
    n_images : int
        Views of the photo made for PCACE when ``images`` is not given.
    seed : int
        Seed of those views.
    target : int, optional
        The class every view explains at first; default each view's own (the prediction).
    lazy : bool
        Build a tab's view when the tab is first shown (True), or all at once.
    **options : dict
        Keyword arguments of a tab's view, by tab name: ``explorer=`` of
        :class:`NeuronExplorer`, ``pcace=`` of :class:`PCACEView`, ``inversion=`` of
        :class:`InversionView` (e.g. ``explorer={"n_samples": 32}``,
        ``inversion={"stage2_steps": 30}``).

    Raises
    ------
    NeuronvizError
        A bad image, ``n_images``, ``seed`` or options (or a tab that does not exist); errors
        of a lazily built view are shown in its tab when it is opened (and raised by the
        property that builds it).
    """

    def __init__(
        self,
        model: nn.Module,
        image: Any,
        images: torch.Tensor | None = None,
        *,
        n_images: int = 40,
        seed: int = 0,
        target: int | None = None,
        lazy: bool = True,
        **options: dict | None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise NeuronvizError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        n_images = Int(1)(n_images, "n_images")
        seed = Int(0, 2**31 - 1)(seed, "seed")
        for name, value in options.items():
            if name not in TABS:
                raise NeuronvizError(f"App() got an unexpected keyword argument {name!r}: the tabs are {list(TABS)}, "
                                     "and a tab's options go in a dict under its name")
            if value is not None and not isinstance(value, dict):
                raise NeuronvizError(f"{name}= must be a dict of keyword arguments of its view, got {value!r}")
        self._photo: Any = None
        self._saved: dict[str, SavedView] = {}  # tabs restored from a file (App.load)
        self._source: str | None = None
        if isinstance(image, (Image.Image, np.ndarray)):
            from ..data import preprocess

            self._photo = image
            x = preprocess(image)
        elif isinstance(image, torch.Tensor):
            x = image
        else:
            raise NeuronvizError(
                f"image must be a tensor as the model takes it, or a photo (PIL image or uint8 array), "
                f"got {type(image).__name__}"
            )
        self._setup(model, x, images, n_images, seed, target, {name: dict(options.get(name) or {}) for name in TABS})
        self._build(self._names[0], raise_errors=True)  # the first tab: a bad argument fails here, at once
        if not lazy:
            for name in self._names[1:]:
                self._build(name)

    def _setup(self, model: nn.Module | None, x: torch.Tensor, images: torch.Tensor | None, n_images: int,
               seed: int, target: int | None, options: dict[str, dict]) -> None:
        """The tabs, empty until their views are built (``_photo`` and ``_saved`` are set before)."""
        super().__init__()
        enable_colab_widgets()
        self.add_class("nv-app")
        self.model, self.x, self._images = model, x, images
        self._n_images, self._seed, self._target = n_images, seed, target
        self._options = options
        self._names = list(TABS)
        self._views: dict[str, Any] = {}
        self._errors: dict[str, BaseException] = {}
        self._slots = {name: W.VBox([W.HTML(f"<i>{tab.view.title}: opens when this tab is shown</i>")])
                       for name, tab in TABS.items()}
        for name, slot in self._slots.items():
            slot.add_class(f"nv-tab-{name}")
        self.children = list(self._slots.values())
        self.titles = [tab.view.title for tab in TABS.values()]
        self.selected_index = 0
        self.observe(self._tab_changed, names="selected_index")

    # ------------------------------------------------------------------ views

    @property
    def views(self) -> dict[str, Any]:
        """The views built so far, by tab name."""
        return dict(self._views)

    @property
    def tab(self) -> str:
        """The name of the tab shown (one of :data:`TABS`); settable."""
        return self._names[self.selected_index or 0]

    @tab.setter
    def tab(self, name: str) -> None:
        if name not in self._names:
            raise NeuronvizError(f"tab must be one of {self._names}, got {name!r}")
        self.selected_index = self._names.index(name)

    def view(self, name: str) -> Any:
        """The view of tab ``name``, built now if its tab was not shown yet.

        Raises
        ------
        NeuronvizError
            An unknown tab, or the view could not be built (the error it raised).
        """
        if name not in TABS:
            raise NeuronvizError(f"tab must be one of {list(TABS)}, got {name!r}")
        return self._build(name, raise_errors=True)

    def image_set(self) -> torch.Tensor:
        """The (N, C, H, W) images of the PCACE tab: those given, or ``n_images`` views of the photo.

        Raises
        ------
        NeuronvizError
            Neither images nor a photo were given.
        """
        if self._images is None:
            if self._photo is None:
                raise NeuronvizError(
                    "PCACE ranks channels over a set of images: pass images= (N, C, H, W), e.g. "
                    "nv.augment(photo, 48) for views of one photo, or give the App the photo itself"
                )
            from ..data import augment

            self._images = augment(self._photo, self._n_images, seed=self._seed)
        return self._images

    def wait(self, timeout: float | None = None) -> None:
        """Block until the run of every view built so far ended (``TimeoutError`` after ``timeout`` s each)."""
        for view in list(self._views.values()):
            view.wait(timeout)

    def close(self) -> None:
        """Stop the views' workers and close the widgets."""
        for view in list(getattr(self, "_views", {}).values()):
            view.close()
        for slot in getattr(self, "_slots", {}).values():
            _replace(slot, [])
            slot.close()
        super().close()

    # ------------------------------------------------------------------ saving and loading

    def save(self, path: str | Path) -> Path:
        """Save the app: each tab whose view finished a run (as :meth:`View.save` saves it), the image,
        the PCACE images and the tab shown, in one file :meth:`load` restores.

        Tabs not built or not run yet are left out (loaded with the model, they compute when
        shown); so are the views' constructor options that are not settings (e.g. ``examples=``).

        Parameters
        ----------
        path : str or pathlib.Path
            The file, e.g. ``"app.nvz"``.

        Returns
        -------
        pathlib.Path

        Raises
        ------
        NeuronvizError
            No tab has finished a run yet.
        """
        views = {name: view.saved_state() for name, view in self._views.items() if view.outcome is not None}
        if not views:
            raise NeuronvizError("nothing to save yet: no tab has finished a run (call app.wait() first)")
        photo = self._photo
        first = next(iter(views.values()))
        state = SavedApp(
            tab=self.tab, views=views, image=self.x, images=self._images,
            photo=np.asarray(photo.convert("RGB")) if isinstance(photo, Image.Image) else photo,
            n_images=self._n_images, seed=self._seed, target=self._target,
            model_class=first.model_class, fingerprint=first.fingerprint,
        )
        record = {"class": state.model_class, "fingerprint": state.fingerprint}
        return save_archive(path, state, settings={"tabs": list(views)}, model_record=record)

    @classmethod
    def load(cls, path: str | Path, model: nn.Module | None = None) -> "App":
        """An app saved with :meth:`save`: its saved tabs show their results without running the model.

        Parameters
        ----------
        path : str or pathlib.Path
            The file.
        model : torch.nn.Module, optional
            The model the file was made with (checked by weights fingerprint): the views can then
            run again, and the tabs that were not saved compute when shown. Without it the saved
            tabs show and export only, and the others say that they need the model.

        Returns
        -------
        App

        Raises
        ------
        NeuronvizError
            The file is not a saved app, is damaged or from a newer version, or ``model``'s
            weights fingerprint differs from the file's.
        """
        name = Path(path).name
        state, header = read_archive(path)
        if not isinstance(state, SavedApp):
            kind = header.get("type")
            hint = f"{state.view}.load(path)" if isinstance(state, SavedView) else "nv.load(path)"
            raise NeuronvizError(f"{name} holds {'an' if str(kind)[:1] in 'AEIOU' else 'a'} {kind}, not a saved App; "
                                 f"{hint} reads it")
        unknown = sorted(set(state.views) - set(TABS))
        if unknown:
            raise NeuronvizError(f"{name} holds tabs {unknown} this neuronviz does not have; its tabs are {list(TABS)}")
        if model is not None and not isinstance(model, nn.Module):
            raise NeuronvizTypeError(f"model must be a torch.nn.Module or None, got {type(model).__name__}")
        app = cls.__new__(cls)
        app._photo, app._saved, app._source = state.photo, dict(state.views), name
        app._setup(model, state.image, state.images, state.n_images, state.seed, state.target,
                   {tab: {} for tab in TABS})
        try:
            for tab in state.views:  # restored now: a model with other weights is refused here
                app._build(tab, raise_errors=True)
        except BaseException:
            app.close()
            raise
        app.tab = state.tab if state.tab in state.views or model is not None else next(iter(state.views))
        return app

    # ------------------------------------------------------------------ internals

    def _tab_changed(self, change: dict) -> None:
        index = change["new"]
        if index is not None and 0 <= index < len(self._names):
            self._build(self._names[index])

    def _build(self, name: str, raise_errors: bool = False) -> Any:
        view = self._views.get(name)
        if view is not None:
            return view
        if name in self._errors:
            if raise_errors:
                raise self._errors[name]
            return None
        tab, slot = TABS[name], self._slots[name]
        _replace(slot, [W.HTML(f"<i>{tab.view.title}: preparing…</i>")])
        kwargs = dict(self._options[name])
        if tab.takes_target and self._target is not None:
            kwargs.setdefault("target", self._target)
        try:
            if name in self._saved:
                view = tab.view.from_state(self._saved[name], self.model, self._source)
            elif self.model is None:
                raise NeuronvizError(f"the {tab.view.title} tab was not saved in {self._source} (it had not run): "
                                     "App.load(path, model=...) with the model it was made with computes it")
            else:
                view = tab.make(self, **kwargs)
        except Exception as err:  # noqa: BLE001 - shown in the tab; raised by the property that asked
            self._errors[name] = err
            _replace(slot, [_error_box(f"{tab.view.title} could not start: {type(err).__name__}: {err}")])
            if raise_errors:
                raise
            return None
        self._views[name] = view
        _replace(slot, [view])
        return view

    def __repr__(self) -> str:
        built = {name: view.status for name, view in self._views.items()}
        return f"App(tab={self.tab!r}, views={built})"


def _tab_property(name: str) -> property:
    def get(self: App) -> Any:
        return self.view(name)

    return property(get, doc=f"The view of tab {name!r} ({TABS[name].view.__name__}); built now if not shown yet.")


for _name in TABS:  # one property per tab: app.explorer, app.pcace, app.inversion
    setattr(App, _name, _tab_property(_name))


def _replace(slot: W.Box, children: list[W.Widget]) -> None:
    """Put ``children`` in ``slot``, closing the notes they replace (views are closed by their own close())."""
    old, slot.children = slot.children, children
    for child in old:
        if not isinstance(child, W.Box):
            child.close()


def _error_box(message: str) -> W.HTML:
    box = W.HTML(
        '<div style="color:#a40000;background:#fff0f0;border:1px solid #e0b4b4;padding:4px 8px;'
        f'white-space:pre-wrap;font-family:monospace;font-size:12px">{html.escape(message)}</div>'
    )
    box.add_class("nv-error")
    return box


def app(image: str = "cat", *, n_images: int = 40, **kwargs: Any) -> App:
    """An :class:`App` on the default model (EfficientNet-Lite0) and a bundled photo: the demo of all three views.

    Parameters
    ----------
    image : str
        A bundled photo (``nv.sample_image_names()``); the cat by default.
    n_images : int
        Random views of the photo that PCACE ranks the channels over (``nv.augment``).
    **kwargs
        Passed to :class:`App` (``lazy``, ``target``, ``explorer={...}``, ``pcace={...}``,
        ``inversion={...}``).

    Returns
    -------
    App
        Displays itself; the explorer's first run starts at once, the other tabs' when shown.
    """
    from ..data import sample_image
    from ..models import default_model

    return App(default_model(), sample_image(image), n_images=n_images, **kwargs)
