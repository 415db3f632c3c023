"""Step through every cut of a recursive normalized cut, live: an ipywidgets app.

The five panels of :func:`~diffcut_lab.viz.step_figure.cut_steps_figure` (the sub-graph being cut, its
Fiedler vector, NCut against the threshold, the partition after the step, the tree of cuts) with a step
slider, previous/next buttons and play; a click on a node of the tree jumps to its step. ``tau`` prunes
the tree (no recomputation, :meth:`CutTree.prune`) and ``alpha`` recomputes the affinity and the cuts from
the features. Given a :class:`~diffcut_lab.pipeline.Segmentation` (``cut_stepper(seg)``) every recompute
keeps the whole cut configuration (:func:`~diffcut_lab.segmentation.recut`): an attention-walk tree is cut
again from the attention probabilities the segmentation kept, a ``tau="auto"`` tree stays automatic (its
tau slider switches explicitly to a fixed tau), a kNN tree stays sparse.

The static figure and the tree of cuts alone live in :mod:`diffcut_lab.viz.step_figure`, the icicle's
geometry in :mod:`diffcut_lab.viz.icicle`; they are importable from here too.
"""

from __future__ import annotations

import html
import time
from typing import Any

from ..config import DEFAULT_ALPHA
from ..errors import ParameterError
from ..options import AUTO
from ._common import ACCEPTED, REJECTED, app_mimebundle
from ._step_data import T_ICICLE, StepData, auto_rule, grid_of, is_accepted, require_steps, summary_parts
from .icicle import icicle_layout
from .step_figure import apply_step, background, base_figure, cut_steps_figure, cut_tree_figure

__all__ = ["CutStepper", "cut_stepper", "cut_steps_figure", "cut_tree_figure", "icicle_layout"]


class CutStepper:
    """An ipywidgets app to step through each recursive cut of a tree (slider, previous/next, play).

    ``cut_stepper(...)`` is the same class under the function-style name.

    Parameters
    ----------
    tree
        A :class:`~diffcut_lab.pipeline.Segmentation` -- its tree, image, features and (for an
        attention-walk cut) attention probabilities: every slider then recomputes --, or a
        :class:`~diffcut_lab.CutTree` built with ``grid=(h, w)``. A K-way tree has no steps: an error says
        so.
    image
        The segmented image (default: the Segmentation's); ``None`` shows the PCA colours of ``features``
        (or a grey canvas).
    features
        The ``(C, h, w)`` features the tree was cut from (default: the Segmentation's). With them, ``alpha``
        can be changed, ``tau`` raised above the tree's tau and ``tau="auto"`` switched on or off: the cuts
        are recomputed by the segmentation core (:func:`~diffcut_lab.segmentation.recut`) with every other
        setting of the tree (mode, min_size, max_depth, solver, knn, affinity and walk_steps, partition,
        auto_rule); without them ``tau`` can only be lowered (pruning, no recomputation).
    attention
        ``(N, N)`` self-attention probabilities of the layer (default: the Segmentation's): an
        attention-walk tree (``affinity="attention"``) is cut again from them, and without them it can only
        be pruned.
    alpha
        The affinity exponent the tree was computed with (default: the tree's own, recorded by
        :func:`~diffcut_lab.segmentation.cut_tree`, else 10).
    tau_range, alpha_range
        Slider ranges.
    max_side
        Longer side of the displayed image.
    height, width
        Size of the figure in pixels.

    Attributes
    ----------
    slider, prev_button, next_button, tau_slider, auto_box, alpha_slider, figure, status, info, tree, widget
        What a notebook (or a test) can drive or read: the 1-based step slider, the buttons, the tau slider,
        the "τ auto" box, the alpha slider (``None`` without features), the plotly ``FigureWidget``, the
        HTML status and note lines, the tree shown now and the whole app. Display the object (last
        expression of a cell) to use it; drive it from code with ``show_step``, ``set_tau``, ``set_auto``
        and ``set_alpha``.

    Notes
    -----
    A ``tau="auto"`` tree stays automatic through an alpha change. Its tau slider is disabled while
    "τ auto" is ticked (with the dynamic rule each cut was decided by the rule, so pruning would give a
    tree no setting cuts); unticking it, or :meth:`set_tau`, switches explicitly to a fixed tau, which the
    note line says. An attention-walk tree has no alpha (the walk does not use it): its alpha slider is
    disabled.

    Examples
    --------
    >>> import diffcut_lab as dl  # doctest: +SKIP
    >>> seg = dl.DiffCut(bb, tau="auto", refine="none").segment(image)  # doctest: +SKIP
    >>> cut_stepper(seg)  # doctest: +SKIP
    >>> tree = dl.cut_tree(feats, dl.DiffCutConfig(tau=0.5))  # doctest: +SKIP
    >>> cut_stepper(tree, image, features=feats)  # doctest: +SKIP
    """

    def __init__(
        self,
        tree: Any,
        image: Any = None,
        *,
        features: Any = None,
        attention: Any = None,
        alpha: float | None = None,
        tau_range: tuple[float, float] = (0.05, 1.0),
        alpha_range: tuple[float, float] = (1.0, 20.0),
        max_side: int = 192,
        height: int = 700,
        width: int | None = None,
    ) -> None:
        from ..pipeline import Segmentation

        if isinstance(tree, Segmentation):
            seg = tree
            tree = seg.tree
            image = seg.image if image is None else image
            features = seg.features if features is None else features
            attention = seg.attention if attention is None else attention
        require_steps(tree)
        self._features = features
        self._attention = attention
        self._walk = tree.params.get("affinity") == "attention"
        #: whether the cuts can be recomputed: the features, and for an attention-walk tree its attention
        self.recomputable = features is not None and (attention is not None or not self._walk)
        self._grid = grid_of(tree)
        self._full = tree  # the deepest tree computed so far for the current alpha (prune it for smaller tau)
        self.tree = tree
        self.alpha = float(alpha if alpha is not None else tree.params.get("alpha", DEFAULT_ALPHA))
        self.last_update_s = 0.0
        self._data = StepData(tree)
        self._busy = False
        self._syncing = False
        bg = background(image, features, self._grid, max_side)
        self.figure = base_figure(self._data, bg, widget=True, height=height, width=width)
        self.figure.data[T_ICICLE].on_click(self._on_tree_click)

        self._step_controls(len(tree.steps))
        self._cut_controls(tau_range, alpha_range, with_alpha=features is not None)
        self._connect()
        self.widget = self._assemble()
        self._sync_controls()
        self._write_info("")
        self._render_status()  # the figure already shows step 1 (see base_figure)

    def _step_controls(self, n: int) -> None:
        """The step slider, previous/next, play, and the status line."""
        import ipywidgets as widgets

        self.slider = widgets.IntSlider(value=1, min=1, max=n, step=1, description="cut", continuous_update=True,
                                        layout=widgets.Layout(width="420px"))  # fmt: skip
        self.prev_button = widgets.Button(description="◀ prev", tooltip="previous cut",
                                          layout=widgets.Layout(width="80px"))  # fmt: skip
        self.next_button = widgets.Button(description="next ▶", tooltip="next cut",
                                          layout=widgets.Layout(width="80px"))  # fmt: skip
        self.play = widgets.Play(value=1, min=1, max=n, interval=700, tooltip="play through the cuts",
                                 layout=widgets.Layout(width="150px"))  # fmt: skip
        widgets.jslink((self.play, "value"), (self.slider, "value"))
        self.status = widgets.HTML(layout=widgets.Layout(margin="0 0 0 12px"))

    def _cut_controls(self, tau_range: tuple[float, float], alpha_range: tuple[float, float], *,
                      with_alpha: bool) -> None:  # fmt: skip
        """The tau slider, the "τ auto" box, the alpha slider (with features) and the note line."""
        import ipywidgets as widgets

        tau = float(self.tree.tau)
        hi_tau = max(tau_range[1], tau) if self.recomputable else max(tau, tau_range[0])
        self.tau_slider = widgets.FloatSlider(
            value=tau, min=tau_range[0], max=hi_tau, step=0.01, description="τ",
            continuous_update=False, readout_format=".2f", layout=widgets.Layout(width="330px"),
        )  # fmt: skip
        self.auto_box = widgets.Checkbox(
            value=self.auto, description="τ auto", indent=False, disabled=not self.recomputable,
            tooltip="tau 'auto': a rule decides each cut (DiffCutConfig.auto_rule); recomputes",
            layout=widgets.Layout(width="90px"),
        )  # fmt: skip
        self.alpha_slider = None
        if with_alpha:
            self.alpha_slider = widgets.FloatSlider(
                value=self.alpha, min=alpha_range[0], max=max(alpha_range[1], self.alpha), step=0.5,
                description="α", continuous_update=False, readout_format=".1f",
                disabled=self._walk or not self.recomputable, layout=widgets.Layout(width="330px"),
            )  # fmt: skip
        self.info = widgets.HTML()

    def _connect(self) -> None:
        """Every control to its handler."""
        self.slider.observe(self._on_slider, names="value")
        self.prev_button.on_click(lambda _b: self.show_step(self.step - 1))
        self.next_button.on_click(lambda _b: self.show_step(self.step + 1))
        self.tau_slider.observe(self._on_tau, names="value")
        self.auto_box.observe(self._on_auto, names="value")
        if self.alpha_slider is not None:
            self.alpha_slider.observe(self._on_alpha, names="value")

    def _assemble(self) -> Any:
        """The app: the step controls, the status, the cut's controls, the note line, the figure."""
        import ipywidgets as widgets

        controls = [self.tau_slider, self.auto_box] + (
            [self.alpha_slider] if self.alpha_slider is not None else []
        )
        self.info.layout = widgets.Layout(margin="0 0 0 12px")
        app = widgets.VBox(
            [
                widgets.HBox([self.prev_button, self.slider, self.next_button, self.play],
                             layout=widgets.Layout(align_items="center", flex_flow="row wrap")),
                self.status,
                # the sliders wrap as a group on narrow screens; the recompute note has a line of its own
                widgets.HBox(controls, layout=widgets.Layout(align_items="center", flex_flow="row wrap")),
                self.info,
                self.figure,
            ]
        )  # fmt: skip
        app.add_class("diffcut-cut-stepper")
        return app

    # -- state ------------------------------------------------------------------------------------------
    @property
    def step(self) -> int:
        """The step shown now, 1-based."""
        return int(self.slider.value)

    @property
    def auto(self) -> bool:
        """Whether the tree shown now was cut with ``tau="auto"``."""
        return auto_rule(self.tree) is not None

    def show_step(self, k: int) -> None:
        """Show step ``k`` (1-based; clamped to the tree's steps)."""
        k = int(min(max(k, 1), len(self.tree.steps)))
        if k == self.slider.value:
            self._render()
        else:
            self.slider.value = k  # triggers _render through the observer

    def set_tau(self, tau: float) -> None:
        """Show the tree for a fixed ``tau``: prune the current tree when ``tau`` is not larger than the tau
        it was computed with (no recomputation), otherwise recompute from the features.

        On a ``tau="auto"`` tree this switches explicitly to a fixed tau (the note line says so): with the
        dynamic rule the cuts are recomputed at ``tau``, since the rule decided each of them; the stable
        rule's tree is the fixed-tau tree of its tau, pruned for a smaller one.

        Raises
        ------
        ParameterError
            When the cuts would have to be recomputed and the features (or, for an attention-walk tree,
            the attention probabilities) were not given.
        """
        tau = float(tau)
        was_auto = self.auto
        t0 = time.perf_counter()
        if tau <= float(self._full.tau) + 1e-12 and auto_rule(self._full) != "dynamic":
            tree = self._full.prune(tau)
            what = f"τ = {tau:.2f}: pruned"
        elif self.recomputable:
            self._full = self._recompute(tau=tau)
            tree = self._full
            what = f"τ = {tau:.2f}: recomputed"
        else:
            raise ParameterError(self._why_not_recomputable(
                f"tau={tau} needs the cuts recomputed ("
                + ("the tree was cut with tau='auto' by the dynamic rule, which decided each cut"
                   if auto_rule(self._full) == "dynamic" else f"it is larger than the tree's tau {self._full.tau:g}")
                + ")"
            ))  # fmt: skip
        if was_auto:
            what += f" with a fixed τ instead of τ auto ({self.tree.params.get('auto_rule', 'dynamic')} rule)"
        self._set_tree(tree, time.perf_counter() - t0, what)

    def set_auto(self, on: bool = True) -> None:
        """Switch ``tau="auto"`` on (recompute with the tree's ``auto_rule``) or off (the fixed tau of the
        tau slider, :meth:`set_tau`).

        Raises
        ------
        ParameterError
            Without the features (or, for an attention-walk tree, the attention probabilities).
        """
        if bool(on) == self.auto:
            self._sync_controls()
            return
        if not on:
            self.set_tau(float(self.tau_slider.value))
            return
        if not self.recomputable:
            raise ParameterError(self._why_not_recomputable("tau='auto' needs the cuts recomputed"))
        t0 = time.perf_counter()
        self._full = self._recompute(tau=AUTO)
        rule = self._full.params.get("auto_rule", "dynamic")
        self._set_tree(self._full, time.perf_counter() - t0, f"τ auto ({rule} rule): recomputed")

    def set_alpha(self, alpha: float) -> None:
        """Recompute the affinity (power ``alpha``) and the cuts from the features, with every other
        setting of the tree shown now (a ``tau="auto"`` tree stays automatic).

        Raises
        ------
        ParameterError
            Without the features (or, for an attention-walk tree, the attention probabilities).
        """
        if not self.recomputable:
            raise ParameterError(self._why_not_recomputable("changing alpha needs the cuts recomputed"))
        t0 = time.perf_counter()
        self.alpha = float(alpha)
        self._full = self._recompute()
        self._set_tree(self._full, time.perf_counter() - t0, f"α = {self.alpha:.1f}: recomputed")

    # -- internals ----------------------------------------------------------------------------------------
    def _why_not_recomputable(self, what: str) -> str:
        if self._features is None:
            return f"{what}: pass features= to cut_stepper (or pass it the Segmentation)."
        return (
            f"{what}: this tree walks on the layer's self-attention; pass attention= (the '<attn1>.probs' "
            "capture of the same image) to cut_stepper, or pass it the Segmentation, which keeps them."
        )

    def _sync(self, widget: Any, value: Any) -> None:
        """Move a widget to ``value`` without triggering its observer (the change is already applied)."""
        if isinstance(value, bool) and bool(widget.value) == value:
            return
        if not isinstance(value, bool) and abs(float(widget.value) - value) <= 1e-9:
            return
        self._syncing = True
        try:
            widget.value = value
        finally:
            self._syncing = False

    def _sync_controls(self) -> None:
        """The controls show the tree: its tau (its own, read-only while tau is "auto"), auto, alpha."""
        if float(self.tree.tau) > self.tau_slider.max:
            self.tau_slider.max = float(self.tree.tau)
        self._sync(self.tau_slider, float(self.tree.tau))
        self.tau_slider.disabled = self.auto
        self._sync(self.auto_box, self.auto)
        if self.alpha_slider is not None:
            self._sync(self.alpha_slider, self.alpha)

    def _on_tau(self, change: dict) -> None:
        if not self._syncing:
            self.set_tau(change["new"])

    def _on_auto(self, change: dict) -> None:
        if not self._syncing:
            self.set_auto(bool(change["new"]))

    def _on_alpha(self, change: dict) -> None:
        if not self._syncing:
            self.set_alpha(change["new"])

    def _recompute(self, **changes: Any) -> Any:
        from ..segmentation import recut

        # every setting of the tree shown now (mode, min_size, max_depth, solver, knn, affinity, walk_steps,
        # partition, auto_rule, and tau itself, "auto" included) is kept unless changed here
        return recut(self.tree, self._features, attention=self._attention, alpha=self.alpha, **changes)

    def _write_info(self, what: str) -> None:
        notes = []
        rule = auto_rule(self.tree)
        if rule == "dynamic":
            notes.append(
                f"τ auto: the dynamic rule decided each cut below τ {float(self.tree.tau):.2f}, where the "
                "τ slider rests; "
                + (
                    "untick it to cut at a fixed τ (recomputed)"
                    if self.recomputable
                    else "a fixed τ needs the cuts recomputed (pass features=)"
                )
            )
        elif rule == "stable":
            notes.append(f"τ auto: the stable rule chose τ {float(self.tree.tau):.2f}; untick it to move τ")
        if self._walk:
            notes.append(
                "the attention walk has no α"
                + (
                    ""
                    if self.recomputable
                    else "; without its attention probabilities (attention=) τ can only be lowered"
                )
            )
        elif not self.recomputable:
            notes.append(
                f"the τ slider starts at its maximum, the tree's τ {float(self.tree.tau):.2f}: without "
                "features= τ can only be lowered (pruning)"
            )
        parts = [what] if what else []
        parts += notes
        self.info.value = f"<span style='color:#555'>{' · '.join(parts)}</span>" if parts else ""

    def _set_tree(self, tree: Any, seconds: float, what: str) -> None:
        old_step = self.step
        self.tree = tree
        self._data = StepData(tree)
        n = max(len(tree.steps), 1)
        self.last_update_s = seconds
        self._sync_controls()
        self._write_info(
            f"{what} in {1000 * seconds:.0f} ms · {len(tree.steps)} steps · {tree.n_segments} segments"
        )
        max_depth = max(self._data.layout.depth) if self._data.layout.depth else 0
        with self.figure.batch_update():
            self.figure.get_subplot(2, 2).yaxis.range = [max_depth + 0.6, -0.6]
        # move the slider bounds without rendering twice
        self._busy = True
        try:
            self.play.max = n
            if self.slider.value > n:
                self.slider.value = n
            self.slider.max = n
        finally:
            self._busy = False
        self.show_step(min(old_step, n))

    def _on_slider(self, change: dict) -> None:
        if not self._busy:
            self._render()

    def _on_tree_click(self, trace: Any, points: Any, state: Any) -> None:
        inds = list(getattr(points, "point_inds", []) or [])
        if inds:
            self.show_step(int(inds[0]) + 1)

    def _render_status(self) -> None:
        i = self.step - 1
        s = self.tree.steps[i]
        color = ACCEPTED if is_accepted(s) else REJECTED
        head, verdict, tail = (
            html.escape(t) for t in summary_parts(self.tree, i)
        )  # the verdict once, in its colour
        self.status.value = (
            f"<b style='font-size:14px'>{head} → "
            f"<span style='background:{color};color:white;border-radius:3px;padding:1px 6px'>{verdict}</span>"
            f"{tail}</b>"
        )

    def _render(self) -> None:
        self._render_status()
        with self.figure.batch_update():
            apply_step(self.figure, self._data, self.step - 1)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return app_mimebundle(self.widget, [self.figure], **kwargs)


cut_stepper = CutStepper  # the function-style name the notebooks and docs use
