"""Figures of the entropy mechanism from run directories (``config.json`` + ``metrics.jsonl``).

Every method has one colour in every figure (``covgym.benchmark.palette``: keyed by the method's name, GRPO black).
Up to ``MAX_OVERLAY`` methods are overlaid; more are drawn as small multiples, one panel per method over the baseline
in grey, so ten bands never pile up. Legends sit outside the data, one per figure. Runs that are seeds of one method
(``covgym.benchmark.plot_data.group_runs``) are drawn as their mean with a 95 % band (t-interval; for correlations on
Fisher's z, clipped to a share's [0, 1]). Long curves are drawn as thin per-step values under a centred moving
average that does not lag. The law R = −a·exp(H) + b is fitted per method, drawn only over the entropy range that was
observed; its extrapolated ceiling is shown only for fits with R² ≥ 0.5. Each figure is drawn only when its metrics
are in the runs. Uses matplotlib's object API with the Agg canvas (imported only when drawing), so it never touches a
user's pyplot state or backend. How to read each figure is in ``docs/entropy.md``.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Protocol, Sequence

import numpy as np

from covgym.benchmark.palette import BASELINE, CONTEXT_GREY, canonical_method, method_color
from covgym.benchmark.plot_data import Method, Run, Series, centred_mean, group_runs, load_run, smoothing_half_width
from covgym.core.metrics import fit_entropy_law

__all__ = ["FIGURES", "FORMATS", "MAX_OVERLAY", "Run", "load_run", "plot_runs", "plot_reward_entropy"]

FORMATS = ("png", "pdf", "svg")
STYLE = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 9,
         "xtick.labelsize": 10, "ytick.labelsize": 10, "axes.grid": True, "grid.alpha": 0.3,
         "axes.formatter.useoffset": False,  # an offset ("1e−2") printed at the axis end collides with its title
         "pdf.fonttype": 42, "svg.fonttype": "none", "savefig.dpi": 200}
SMOOTH_ABOVE = 30  # curves with more points get thin per-step values and a centred moving average
#: Fits explaining less than this share of variance get no ceiling and no extrapolation.
MIN_R2_FOR_CEILING = 0.5
#: More methods than this are drawn as small multiples (one panel per method) instead of overlaid.
MAX_OVERLAY = 5
ENTROPY_LABEL = "Policy entropy H (nats/token)"
STEP_LABEL = "Training step"
UNIT_INTERVAL = (0.0, 1.0)  # accuracies and shares: their bands are clipped to the range they live in
#: The one-run figure's two quantities (not methods: they keep their own pair of colours).
ENTROPY_COLOR, PERFORMANCE_COLOR = "#1f77b4", "#d62728"
SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


class Labelled(Protocol):
    label: str


#: Draws one method into an axes in a colour; ``name`` is its legend label, or None in a small multiple (where the
#: panel's title names it and the legend keeps only generic entries). Returns the points of a smoothed curve, or 0.
Drawer = Callable[[object, Labelled, str, "str | None"], int]


# --------------------------------------------------------------------------------------------- drawing helpers
@contextmanager
def _style() -> Iterator[None]:
    import matplotlib

    with matplotlib.rc_context(STYLE):
        yield


def _new_figure(columns: int, width: float = 5.0, height: float = 3.8, rows: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width * columns, height * rows), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _axes_row(columns: int, width: float = 5.0, height: float = 3.8):
    figure = _new_figure(columns, width, height)
    return figure, list(figure.subplots(1, columns, squeeze=False)[0])


def _name(name: str | None, part: str | None = None) -> str | None:
    """A legend label: ``"method, part"`` when overlaid; just ``part`` (or nothing) inside a small multiple."""
    if name is None:
        return part
    return f"{name}, {part}" if part else name


def _gid(item: Labelled) -> str:
    """Tags every artist drawn in a method's colour, so a test can read the colours back from the figure."""
    return f"method:{item.label}"


def baseline_of(items: Sequence[Labelled]) -> Labelled:
    """The method drawn grey behind the others in small multiples: GRPO where present, else the first."""
    return next((item for item in items if canonical_method(item.label) == BASELINE), items[0])


def _grid_shape(count: int) -> tuple[int, int]:
    columns = min(count, MAX_OVERLAY)
    return math.ceil(count / columns), columns


def _method_panels(container, items: Sequence[Labelled], draw: Drawer, title: str, xlabel: str, ylabel: str,
                   ylim: tuple[float, float] | None = None) -> tuple[int, list]:
    """All methods overlaid in one axes, or, past ``MAX_OVERLAY``, one panel per method over the baseline in grey.

    ``container`` is a (sub)figure of its own. Returns the longest smoothed curve's length and the axes.
    """
    smoothed = 0
    if len(items) <= MAX_OVERLAY:
        ax = container.add_subplot(1, 1, 1)
        for item in items:
            smoothed = max(smoothed, draw(ax, item, method_color(item.label), item.label))
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if ylim is not None:
            ax.set_ylim(*ylim)
        return smoothed, [ax]
    baseline = baseline_of(items)
    rows, columns = _grid_shape(len(items))
    axes = list(container.subplots(rows, columns, sharex=True, sharey=True, squeeze=False).ravel())
    for ax, item in zip(axes, items):
        if item is not baseline:
            smoothed = max(smoothed, draw(ax, baseline, CONTEXT_GREY, f"{baseline.label} (baseline)"))
        smoothed = max(smoothed, draw(ax, item, method_color(item.label), None))
        ax.set_title(item.label, color=method_color(item.label), fontsize="small")
        ax.tick_params(labelsize="x-small")
        if ylim is not None:
            ax.set_ylim(*ylim)
    for ax in axes[len(items):]:
        ax.set_visible(False)
    container.suptitle(title)
    container.supxlabel(xlabel, fontsize="medium")
    container.supylabel(ylabel, fontsize="medium")
    return smoothed, axes[:len(items)]


def _figure_legend(figure, extra: Sequence = (), neutral: bool = False, generic: Sequence[str] = ()) -> None:
    """One legend for the whole figure, under its panels (outside every axes), entries deduplicated by label.

    ``neutral`` redraws every entry but the baseline's in dark grey, ``generic`` only those labels: an entry such
    as "held-out eval" stands for every method, so it must not wear the first method's colour.
    """
    entries: dict[str, object] = {}
    for ax in figure.get_axes():
        for handle, label in zip(*ax.get_legend_handles_labels()):
            grey = (neutral and "(baseline)" not in label) or label in generic
            entries.setdefault(label, _proxy(handle, "0.25") if grey else handle)
    for handle in extra:
        entries.setdefault(handle.get_label(), handle)
    if entries:
        figure.legend(list(entries.values()), list(entries), loc="upper center", bbox_to_anchor=(0.5, 0.0),
                      ncols=min(len(entries), 4), frameon=False)


def _proxy(handle, color: str):
    """A legend-only copy of a line, error bar, band or scatter handle, in ``color``."""
    from matplotlib.collections import PathCollection, PolyCollection
    from matplotlib.container import ErrorbarContainer
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    if isinstance(handle, ErrorbarContainer):
        handle = handle.lines[0]
    if isinstance(handle, Line2D):
        return Line2D([], [], color=color, linestyle=handle.get_linestyle(), linewidth=handle.get_linewidth(),
                      marker=handle.get_marker(), markersize=handle.get_markersize())
    if isinstance(handle, PathCollection):
        return Line2D([], [], color=color, linestyle="none", marker="o", markersize=4, alpha=0.7)
    if isinstance(handle, PolyCollection):
        return Patch(color=color, alpha=0.3)
    return handle


def _caption(figure, text: str, **text_kwargs) -> None:
    """Text under everything already below the figure's panels (its legend, earlier captions), never over it."""
    renderer = figure.canvas.get_renderer()
    height = figure.bbox.height
    bottom = 0.0
    for artist in [*figure.legends, *figure.texts]:
        bottom = min(bottom, artist.get_window_extent(renderer).y0 / height)
    style = {"fontsize": 8, "color": "0.3", "ha": "left", **text_kwargs}
    figure.text(0.0 if style["ha"] == "left" else 0.5, bottom - 0.01, text, va="top", wrap=True, **style)


def _multiples_figure(panels: int, items: int, width: float = 5.0, height: float = 3.8):
    """A figure of ``panels`` subfigures: side by side when overlaid, stacked grids of small multiples otherwise."""
    if items <= MAX_OVERLAY:
        figure = _new_figure(panels, width, height + 0.5)
        return figure, list(np.atleast_1d(figure.subfigures(1, panels)))
    rows, columns = _grid_shape(items)
    figure = _new_figure(1, 2.6 * columns, (2.1 * rows + 0.7) * panels + 0.5)
    return figure, list(np.atleast_1d(figure.subfigures(panels, 1)))


def _smoothing_note(figure, points: int, methods: Sequence[Method], correlations: bool = False) -> None:
    """Say under the figure how curves were drawn (thin: per step; thick: the centred average; bands)."""
    seeds = max((len(method.runs) for method in methods), default=1)
    parts = []
    if points:
        width = 2 * smoothing_half_width(points) + 1
        parts.append(f"Thin lines: per-step values{' (mean over seeds)' if seeds > 1 else ''}; thick: centred moving "
                     f"average over {width} steps, whose last points average the last window (no lag)")
    if seeds > 1:
        parts.append(f"lines: mean over up to {seeds} seeds; bands: 95% t-interval across seeds"
                     + (", averaged the same way" if points else "")
                     + (" (correlations: on Fisher's z, so within [−1, 1])" if correlations else ""))
    if parts:
        _caption(figure, "; ".join(parts) + ".")


def _draw_series(ax, series: Series, color: str, label: str | None, gid: str | None = None,
                 bounds: tuple[float, float] | None = None, **line_kwargs) -> int:
    """One method's curve: mean (smoothed when long), and its 95 % seed band where several seeds ran.

    ``bounds`` clips the band to the range the statistic lives in (a share's [0, 1]). Returns the number of points
    when the curve was smoothed (for the figure's note), else 0.
    """
    if series.size == 0:
        return 0
    smooth = series.size > SMOOTH_ABOVE
    behind = color == CONTEXT_GREY
    zorder = 1 if behind else 2
    if int(series.seeds.max()) > 1:  # the band is smoothed like the line it surrounds: that line's uncertainty
        low, high = series.low, series.high
        if smooth:
            half_width = smoothing_half_width(series.size)
            low, high = centred_mean(low, half_width), centred_mean(high, half_width)
        if bounds is not None:
            low, high = np.clip(low, *bounds), np.clip(high, *bounds)
        ax.fill_between(series.steps, low, high, where=series.seeds > 1, color=color, alpha=0.2, linewidth=0,
                        gid=gid, zorder=zorder)
    if smooth:
        if not behind:
            ax.plot(series.steps, series.mean, color=color, alpha=0.35, linewidth=0.8, gid=gid, zorder=zorder,
                    **line_kwargs)
        line = centred_mean(series.mean, smoothing_half_width(series.size))
        ax.plot(series.steps, line, color=color, linewidth=2.0, label=label, gid=gid, zorder=zorder, **line_kwargs)
        return series.size
    ax.plot(series.steps, series.mean, color=color, linewidth=1.8, label=label, gid=gid, zorder=zorder,
            marker="o" if series.size < 15 else None, markersize=4, **line_kwargs)
    return 0


def _series_drawer(key: str, bounds: tuple[float, float] | None = None, part: str | None = None,
                   **line_kwargs) -> Drawer:
    def draw(ax, method: Method, color: str, name: str | None) -> int:
        gid = None if color == CONTEXT_GREY else _gid(method)
        return _draw_series(ax, method.series(key), color, _name(name, part), gid, bounds, **line_kwargs)
    return draw


def _fit_law(entropy: np.ndarray, performance: np.ndarray) -> tuple[float, float, float] | None:
    if entropy.size < 3 or np.ptp(entropy) <= 0:
        return None
    return fit_entropy_law(entropy, performance)


def _law_text(fit: tuple[float, float, float] | None, short: bool = False) -> str:
    """The fit in words: R², and a, b and the ceiling b − a only for a fit with R² ≥ ``MIN_R2_FOR_CEILING``."""
    if fit is None:
        return "too few distinct entropies to fit"
    a, b, r2 = fit
    if math.isnan(r2) or r2 < MIN_R2_FOR_CEILING:
        return f"R² = {'n/a' if math.isnan(r2) else f'{r2:.2f}'} (weak fit: not extrapolated)"
    if short:
        return f"R² = {r2:.2f}, ceiling b − a = {b - a:.3g}"
    return f"R² = {r2:.2f}, a = {a:.3g}, b = {b:.3g}, ceiling b − a = {b - a:.3g}"


def _draw_law(ax, entropy: np.ndarray, fit: tuple[float, float, float] | None, color: str,
              gid: str | None = None) -> None:
    """The fitted law over the observed entropy range (solid), and, for fits with R² ≥ 0.5, its extrapolation to
    H = 0 (dashed) and ceiling b − a (a star)."""
    if fit is None:
        return
    a, b, r2 = fit
    grid = np.linspace(float(entropy.min()), float(entropy.max()), 200)
    ax.plot(grid, -a * np.exp(grid) + b, color=color, linewidth=2.0, gid=gid,
            label="fit R = −a·exp(H) + b (observed range)")
    if math.isnan(r2) or r2 < MIN_R2_FOR_CEILING:
        return
    outside = np.linspace(0.0, float(entropy.min()), 100)
    ax.plot(outside, -a * np.exp(outside) + b, color=color, linewidth=1.4, linestyle="--", gid=gid,
            label="extrapolated to H = 0")
    ax.plot([0.0], [b - a], marker="*", markersize=11, color=color, linestyle="none", gid=gid,
            label="ceiling b − a")


def _performance(methods: Sequence[Method]) -> tuple[str, str]:
    if all(method.has("accuracy") for method in methods):
        return "accuracy", "Accuracy"
    return "reward_mean", "Mean reward"


def _reward_is_accuracy(methods: Sequence[Method]) -> bool:
    """True when every run logs accuracy equal to its mean reward at every step (0/1 rewards)."""
    for method in methods:
        for run in method.runs:
            reward, accuracy, _ = run.paired("reward_mean", "accuracy")
            if reward.size == 0 or not np.allclose(reward, accuracy, rtol=0, atol=1e-9):
                return False
    return True


def _power_of_ten(values: np.ndarray) -> int:
    """The exponent that brings the largest |value| into [1, 10) when it lies outside [0.01, 1000), else 0."""
    largest = float(np.max(np.abs(values))) if values.size else 0.0
    if largest == 0.0 or not math.isfinite(largest):
        return 0
    exponent = math.floor(math.log10(largest))
    return exponent if exponent < -2 or exponent > 2 else 0


def _unit(exponent: int, unit: str) -> str:
    """``"nats/token"`` or ``"10⁻³ nats/token"``: the scale goes into the axis label, never into an offset text."""
    return unit if exponent == 0 else f"10{str(exponent).translate(SUPERSCRIPT)} {unit}"


# --------------------------------------------------------------------------------------------- figures
def figure_entropy_and_performance(methods: Sequence[Method]):
    """Entropy, reward and accuracy per step, one panel each; one panel for both when they coincide."""
    if not any(method.has("entropy_mean") for method in methods):
        return None
    has_accuracy = any(method.has("accuracy") or method.has("eval_accuracy") for method in methods)
    merged = has_accuracy and _reward_is_accuracy(methods)
    panels: list[tuple[Drawer, str, str]] = [(_series_drawer("entropy_mean"), "Entropy (nats/token)", "Policy entropy")]
    if merged:
        panels.append((_accuracy_drawer(methods), "Accuracy = mean reward", "Accuracy (reward is 0/1)"))
    else:
        panels.append((_series_drawer("reward_mean"), "Mean reward", "Reward"))
        if has_accuracy:
            panels.append((_accuracy_drawer(methods), "Accuracy", "Accuracy"))
    figure, containers = _multiples_figure(len(panels), len(methods))
    smoothed = 0
    for container, (draw, ylabel, title) in zip(containers, panels):
        smoothed = max(smoothed, _method_panels(container, methods, draw, title, STEP_LABEL, ylabel)[0])
    _figure_legend(figure, neutral=len(methods) > MAX_OVERLAY, generic=list(EVAL_LABELS.values()))
    _smoothing_note(figure, smoothed, methods)
    return figure


EVAL_LABELS = {False: "held-out eval", True: "held-out eval (95% CI)"}


def _accuracy_drawer(methods: Sequence[Method]) -> Drawer:
    """Training accuracy as a curve and held-out accuracy as sparse points with seed intervals as error bars."""
    with_eval = any(method.has("eval_accuracy") for method in methods)

    def draw(ax, method: Method, color: str, name: str | None) -> int:
        gid = None if color == CONTEXT_GREY else _gid(method)
        label = name if name is not None else ("train" if with_eval else None)
        smoothed = _draw_series(ax, method.series("accuracy"), color, label, gid, UNIT_INTERVAL)
        evaluation = method.series("eval_accuracy")
        if evaluation.size:
            several = int(evaluation.seeds.max()) > 1
            low, high = np.clip(evaluation.low, *UNIT_INTERVAL), np.clip(evaluation.high, *UNIT_INTERVAL)
            errors = [evaluation.mean - low, high - evaluation.mean] if several else None
            ax.errorbar(evaluation.steps, evaluation.mean, yerr=errors, color=color, linestyle="--", marker="s",
                        markersize=4, linewidth=1.2, capsize=3, gid=gid,
                        label=EVAL_LABELS[several] if name is None or "(baseline)" not in name
                        else _name(name, EVAL_LABELS[several]))
        return smoothed
    return draw


def figure_entropy_law(methods: Sequence[Method]):
    """Performance against entropy per step (seeds pooled), one panel per method with its own fitted
    ``R = −a·exp(H) + b`` and every other method's points in grey behind (ten fits through one cloud hide all)."""
    key, ylabel = _performance(methods)
    points = [(method, method.paired("entropy_mean", key)) for method in methods]
    points = [(method, (entropy, performance)) for method, (entropy, performance, _) in points if entropy.size]
    if not points:
        return None
    rows, columns = _grid_shape(len(points))
    figure = _new_figure(columns, 3.0 if columns > 1 else 6.0, (2.6 if columns > 1 else 4.6) * rows + 0.4)
    axes = list(figure.subplots(rows, columns, sharex=True, sharey=True, squeeze=False).ravel())
    for ax, (method, (entropy, performance)) in zip(axes, points):
        for other, (other_entropy, other_performance) in points:
            if other is not method:
                ax.scatter(other_entropy, other_performance, color=CONTEXT_GREY, s=6, alpha=0.3, edgecolors="none",
                           zorder=1, label="other methods")
        color = method_color(method.label)
        ax.scatter(entropy, performance, color=color, s=12, alpha=0.6, edgecolors="none", zorder=2,
                   gid=_gid(method), label="this method, one point per step and seed")
        fit = _fit_law(entropy, performance)
        _draw_law(ax, entropy, fit, color, _gid(method))
        ax.set_title(f"{method.label}\n{_law_text(fit, short=True)}", color=color, fontsize="small")
    for ax in axes[len(points):]:
        ax.set_visible(False)
    figure.suptitle("Performance vs. entropy, per method: fit R = −a·exp(H) + b")
    figure.supxlabel(ENTROPY_LABEL, fontsize="medium")
    figure.supylabel(ylabel, fontsize="medium")
    _figure_legend(figure, neutral=True)
    return figure


def figure_entropy_change(methods: Sequence[Method]):
    """Predicted (first-order) against actual entropy change of each update, and their per-step correlation."""
    usable = [m for m in methods if m.paired("dH_predicted_mean", "dH_actual_mean")[0].size]
    if not usable:
        return None
    show_corr = any(method.has("dH_corr") for method in usable)
    pairs = {method.label: method.paired("dH_predicted_mean", "dH_actual_mean")[:2] for method in usable}
    every = np.concatenate([np.concatenate(pair) for pair in pairs.values()])
    exponent = _power_of_ten(every)
    scale = 10.0 ** -exponent
    low, high = float(every.min()) * scale, float(every.max()) * scale
    pad = 0.05 * (high - low) if high > low else 1e-6
    limits = (low - pad, high + pad)

    def draw_scatter(ax, method: Method, color: str, name: str | None) -> int:
        predicted, actual = (values * scale for values in pairs[method.label])
        if name is not None and predicted.size > 1 and np.std(predicted) > 0 and np.std(actual) > 0:
            name += f" (r = {np.corrcoef(predicted, actual)[0, 1]:.3f})"
        ax.scatter(predicted, actual, color=color, s=14 if name is None else 20, alpha=0.7, edgecolors="none",
                   label=name, gid=None if color == CONTEXT_GREY else _gid(method))
        ax.plot(limits, limits, color="0.2", linestyle="--", linewidth=1.0, label="y = x")
        ax.set_xlim(*limits)
        ax.set_ylim(*limits)
        return 0

    figure, containers = _multiples_figure(2 if show_corr else 1, len(usable), width=5.4, height=4.6)
    unit = _unit(exponent, "nats/token")
    _method_panels(containers[0], usable, draw_scatter, "Entropy change per update (batch mean)",
                   f"Predicted ΔH = −Cov(log π, Δz) ({unit})", f"Actual ΔH ({unit})")
    smoothed = 0
    if show_corr:
        smoothed = _method_panels(containers[1], usable, _series_drawer("dH_corr"),
                                  "Per-position agreement, predicted vs. actual ΔH", STEP_LABEL,
                                  "Pearson r across positions", ylim=(-1.02, 1.02))[0]
    _figure_legend(figure, neutral=len(usable) > MAX_OVERLAY)
    _smoothing_note(figure, smoothed, usable, correlations=show_corr)
    return figure


def figure_covariance(methods: Sequence[Method]):
    """The token covariance over training.

    Top: one panel per method with the median and the 25–75 % and 5–95 % bands of the per-token term (means over
    seeds; shared y axis). Bottom: the batch covariance Cov(log π, A) of every method, and the share of tokens
    with a positive term.
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    with_quantiles = [m for m in methods if m.has("cov_p50")]
    with_mean = [m for m in methods if m.has("cov_mean")]
    if not with_quantiles and not with_mean:
        return None
    show_pos = any(method.has("cov_pos_frac") for method in methods)
    bottom_panels = 2 if show_pos else 1
    many = len(methods) > MAX_OVERLAY
    quantile_rows, quantile_columns = _grid_shape(len(with_quantiles)) if with_quantiles else (0, 1)
    bottom_height = (2.1 * _grid_shape(len(methods))[0] + 0.7) * bottom_panels if many else 4.0
    width = 2.6 * MAX_OVERLAY if many else max(5.0 * bottom_panels, 3.2 * quantile_columns)
    figure = _new_figure(1, width, 2.4 * quantile_rows + 0.6 * bool(with_quantiles) + bottom_height + 0.5)
    top, bottom = figure.subfigures(2, 1, height_ratios=[2.4 * quantile_rows + 0.6 + 1e-3, bottom_height])
    if with_quantiles:
        axes = list(top.subplots(quantile_rows, quantile_columns, sharex=True, sharey=True, squeeze=False).ravel())
        for ax, method in zip(axes, with_quantiles):
            _draw_quantiles(ax, method)
        for ax in axes[len(with_quantiles):]:
            ax.set_visible(False)
        top.suptitle("Per-token covariance term (A − Ā)·(log π − mean log π), mean over seeds")
        top.supxlabel(STEP_LABEL, fontsize="medium")
    containers = list(np.atleast_1d(bottom.subfigures(bottom_panels, 1) if many
                                    else bottom.subfigures(1, bottom_panels)))
    smoothed = _method_panels(containers[0], with_mean, _series_drawer("cov_mean"),
                              "Batch covariance (> 0 lowers entropy)", STEP_LABEL, "Cov(log π, A) over tokens")[0]
    if show_pos:
        smoothed = max(smoothed, _method_panels(containers[1], list(methods), _series_drawer(
            "cov_pos_frac", UNIT_INTERVAL), "Tokens with a positive covariance term", STEP_LABEL, "Share of tokens",
            ylim=UNIT_INTERVAL)[0])
    quantile_keys = [Line2D([], [], color="0.3", linewidth=2.0, label="median (per-token term)"),
                     Patch(color="0.3", alpha=0.35, label="25–75 %"), Patch(color="0.3", alpha=0.15, label="5–95 %")]
    _figure_legend(figure, quantile_keys if with_quantiles else (), neutral=many)
    _smoothing_note(figure, smoothed, methods)
    return figure


def _draw_quantiles(ax, method: Method) -> None:
    """One method's per-token covariance: the median and its 25–75 % and 5–95 % bands."""
    color = method_color(method.label)
    for low_key, high_key, alpha in (("cov_p05", "cov_p95", 0.15), ("cov_p25", "cov_p75", 0.35)):
        low, high = method.series(low_key), method.series(high_key)
        if low.size and np.array_equal(low.steps, high.steps):
            ax.fill_between(low.steps, low.mean, high.mean, color=color, alpha=alpha, linewidth=0, gid=_gid(method))
    median = method.series("cov_p50")
    ax.plot(median.steps, median.mean, color=color, linewidth=2.0, gid=_gid(method))
    ax.axhline(0.0, color="gray", linewidth=0.6)
    ax.set_title(method.label, color=color, fontsize="small")
    ax.tick_params(labelsize="x-small")


def figure_polarity(methods: Sequence[Method]):
    """Share of entropy-contracting tokens per step, for positive and negative advantages."""
    keys = (("polarity_contract_frac_pos_adv", "-", "A > 0"), ("polarity_contract_frac_neg_adv", ":", "A < 0"))
    if not any(method.has(key) for method in methods for key, _, _ in keys):
        return None
    drawers = [_series_drawer(key, UNIT_INTERVAL, part, linestyle=style) for key, style, part in keys]

    def draw(ax, method: Method, color: str, name: str | None) -> int:
        return max(drawer(ax, method, color, name) for drawer in drawers)

    figure, (container,) = _multiples_figure(1, len(methods), width=6.4, height=4.4)
    smoothed = _method_panels(container, methods, draw, "Entropy polarity by advantage sign", STEP_LABEL,
                              "Share of tokens contracting entropy", ylim=UNIT_INTERVAL)[0]
    _figure_legend(figure, neutral=len(methods) > MAX_OVERLAY)
    _smoothing_note(figure, smoothed, methods)
    return figure


#: Figure name (file stem) -> drawing function of the methods (None when the metrics do not allow it).
FIGURES: dict[str, Callable] = {
    "entropy_reward": figure_entropy_and_performance,
    "entropy_law": figure_entropy_law,
    "entropy_change": figure_entropy_change,
    "covariance": figure_covariance,
    "polarity": figure_polarity,
}


def _check_formats(formats: Sequence[str] | str) -> list[str]:
    chosen = [f.strip().lower().lstrip(".") for f in (formats.split(",") if isinstance(formats, str) else formats)]
    chosen = [f for f in chosen if f]
    bad = [f for f in chosen if f not in FORMATS]
    if bad or not chosen:
        raise ValueError(f"formats: {', '.join(bad) or 'none given'} not supported; choose from {', '.join(FORMATS)}")
    return list(dict.fromkeys(chosen))


def _save(figure, out: Path, stem: str, formats: Sequence[str]) -> list[Path]:
    paths = []
    for extension in formats:
        path = out / f"{stem}.{extension}"
        figure.savefig(path, bbox_inches="tight")
        paths.append(path)
    return paths


def default_out_dir(run_dirs: Sequence[str | Path]) -> Path:
    """Where figures go by default: the run directory for one run, ``<parent of the first run>/plots`` for more."""
    first = Path(run_dirs[0])
    return first if len(run_dirs) == 1 else first.parent / "plots"


def plot_runs(run_dirs: Sequence[str | Path], out_dir: str | Path | None = None, labels: Sequence[str] | None = None,
              formats: Sequence[str] | str = ("png",), note: str | None = None) -> list[Path]:
    """Write every figure the runs' metrics allow; returns the paths written.

    Args:
        run_dirs: run directories, each with ``metrics.jsonl`` (and ``config.json`` for the label).
        out_dir: where to write (created); default ``default_out_dir(run_dirs)``.
        labels: one legend label per run; runs sharing a label are seeds of one method, drawn as their mean
            with a 95 % band (default: grouped by ``config.json``, see ``covgym.benchmark.plot_data``).
        formats: any of ``png``, ``pdf``, ``svg`` (a sequence or a comma-separated string).
        note: a warning printed under every figure (e.g. that the runs' update budgets differ).
    """
    formats = _check_formats(formats)
    methods = group_runs(list(run_dirs), None if labels is None else list(labels))
    out = Path(out_dir) if out_dir is not None else default_out_dir(list(run_dirs))
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with _style():
        for stem, draw in FIGURES.items():
            figure = draw(methods)
            if figure is not None:
                if note:
                    _caption(figure, f"warning: {note}", ha="center", fontsize="small", color="darkred")
                written += _save(figure, out, stem, formats)
    return written


def plot_reward_entropy(run_dir: str | Path, formats: Sequence[str] | str = ("png",)) -> Path:
    """One run at a glance: entropy and performance per step, and performance against entropy with the law.

    Writes ``reward_entropy.<format>`` into the run directory and returns the first path written.
    """
    formats = _check_formats(formats)
    run = load_run(run_dir)
    if not run.has("entropy_mean"):
        raise ValueError(f"run_dir: {str(run.path)!r} has no entropy_mean in metrics.jsonl")
    method = Method(run.label, [run])
    key, ylabel = _performance([method])
    if key == "accuracy" and _reward_is_accuracy([method]):
        ylabel = "Accuracy = mean reward"
    with _style():
        figure, (left, right) = _axes_row(2, width=5.4, height=4.2)
        smoothed = _draw_series(left, method.series("entropy_mean"), ENTROPY_COLOR, "entropy (left axis)")
        left.set_xlabel(STEP_LABEL)
        left.set_ylabel("Entropy (nats/token)", color=ENTROPY_COLOR)
        twin = left.twinx()
        twin.grid(False)
        smoothed = max(smoothed, _draw_series(twin, method.series(key), PERFORMANCE_COLOR,
                                              f"{ylabel.split(' = ')[0].lower()} (right axis)"))
        twin.set_ylabel(ylabel, color=PERFORMANCE_COLOR)
        left.set_title(f"{run.label}: entropy and {ylabel.split(' = ')[0].lower()}")
        entropy, performance, steps = run.paired("entropy_mean", key)
        points = right.scatter(entropy, performance, c=steps, cmap="viridis", s=20, edgecolors="none")
        right.figure.colorbar(points, ax=right).set_label(STEP_LABEL)
        fit = _fit_law(entropy, performance)
        _draw_law(right, entropy, fit, "black")
        right.set_xlabel(ENTROPY_LABEL)
        right.set_ylabel(ylabel)
        right.set_title(f"Performance vs. entropy\n{_law_text(fit)}", fontsize="small")
        _figure_legend(figure)  # below both panels: a legend inside the axes covered the curves
        _smoothing_note(figure, smoothed, [method])
        return _save(figure, run.path, "reward_entropy", formats)[0]
