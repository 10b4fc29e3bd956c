"""Figures of the entropy mechanism from run directories (``config.json`` + ``metrics.jsonl``).

Methods are overlaid; runs that are seeds of one method (``covgym.plot_data.group_runs``) are drawn as their
mean with a 95 % t-interval band. Long curves are drawn as thin per-step values under a centred moving average
that does not lag (its last value is the mean of the last window). The law R = −a·exp(H) + b is drawn only
over the entropy range that was observed; its extrapolated ceiling is shown only for fits with R² ≥ 0.5,
dashed and labelled. Each figure is drawn only when its metrics are in the runs. Uses matplotlib's object API
with the Agg canvas (imported only when drawing), so it never touches a user's pyplot state or backend. How to
read each figure is in ``docs/entropy.md``.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from covgym.metrics import fit_entropy_law
from covgym.plot_data import Method, Run, Series, centred_mean, group_runs, load_run, smoothing_half_width

__all__ = ["FIGURES", "FORMATS", "Run", "load_run", "plot_runs", "plot_reward_entropy"]

FORMATS = ("png", "pdf", "svg")
STYLE = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 9,
         "xtick.labelsize": 10, "ytick.labelsize": 10, "axes.grid": True, "grid.alpha": 0.3,
         "pdf.fonttype": 42, "svg.fonttype": "none", "savefig.dpi": 200}
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf",
          "#bcbd22", "#000000", "#aec7e8")  # 12 distinct: a mechanism suite has 10 methods
SMOOTH_ABOVE = 30  # curves with more points get thin per-step values and a centred moving average
#: Fits explaining less than this share of variance get no ceiling and no extrapolation.
MIN_R2_FOR_CEILING = 0.5
ENTROPY_LABEL = "Policy entropy H (nats/token)"
STEP_LABEL = "Training step"


# --------------------------------------------------------------------------------------------- drawing helpers
def _color(index: int) -> str:
    return COLORS[index % len(COLORS)]


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


MAX_LEGEND_INSIDE = 6  # entries; a longer legend goes beside the axes, where it cannot hide the curves


def _legend(ax, **kwargs) -> None:
    handles = ax.get_legend_handles_labels()[0]
    if not handles:
        return
    if len(handles) > MAX_LEGEND_INSIDE:
        kwargs = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "fontsize": "x-small"}
    ax.legend(framealpha=0.85, **kwargs)


def _smoothing_note(figure, points: int, methods: Sequence[Method]) -> None:
    """Say under the figure how long curves were drawn (thin: per step; thick: the centred average; bands)."""
    width = 2 * smoothing_half_width(points) + 1
    seeds = any(len(method.runs) > 1 for method in methods)
    text = (f"Thin lines: per-step values{' (mean over seeds)' if seeds else ''}; thick: centred moving average over "
            f"{width} steps, whose last points average the last window (no lag)")
    if seeds:
        text += "; bands: 95% t-interval across seeds, averaged the same way"
    figure.text(0.0, -0.01, text + ".", fontsize=8, color="0.3", va="top", ha="left", wrap=True)


def _draw_series(ax, series: Series, color: str, label: str, **line_kwargs) -> int:
    """One method's curve: mean (smoothed when long), and its 95 % seed band where several seeds ran.

    Returns the number of points when the curve was smoothed (for the figure's note), else 0.
    """
    if series.size == 0:
        return 0
    seeds = int(series.seeds.max())
    smooth = series.size > SMOOTH_ABOVE
    if seeds > 1:  # the band is smoothed like the line it surrounds, so it reads as that line's uncertainty
        low, high = series.low, series.high
        if smooth:
            half_width = smoothing_half_width(series.size)
            low, high = centred_mean(low, half_width), centred_mean(high, half_width)
        ax.fill_between(series.steps, low, high, where=series.seeds > 1, color=color, alpha=0.2, linewidth=0)
        label = f"{label} ({seeds} seeds: mean ± 95% CI)"
    if smooth:
        ax.plot(series.steps, series.mean, color=color, alpha=0.35, linewidth=0.8, **line_kwargs)
        line = centred_mean(series.mean, smoothing_half_width(series.size))
        ax.plot(series.steps, line, color=color, linewidth=2.0, label=label, **line_kwargs)
        return series.size
    ax.plot(series.steps, series.mean, color=color, linewidth=1.8, label=label,
            marker="o" if series.size < 15 else None, markersize=4, **line_kwargs)
    return 0


def _draw_law(ax, entropy: np.ndarray, performance: np.ndarray, color: str, name: str) -> str:
    """The fitted law over the observed entropy range (solid), and, for fits with R² ≥ 0.5, its extrapolation to
    H = 0 (dashed) and ceiling b − a. Returns the legend text for the method's points."""
    if entropy.size < 3 or np.ptp(entropy) <= 0:
        return f"{name} (too few distinct entropies to fit)"
    a, b, r2 = fit_entropy_law(entropy, performance)
    low, high = float(entropy.min()), float(entropy.max())
    grid = np.linspace(low, high, 200)
    ax.plot(grid, -a * np.exp(grid) + b, color=color, linewidth=2.0)
    r2_text = "n/a" if math.isnan(r2) else f"{r2:.2f}"
    if math.isnan(r2) or r2 < MIN_R2_FOR_CEILING:
        return f"{name}: R² = {r2_text} (weak fit: not extrapolated)"
    outside = np.linspace(0.0, low, 100)
    ax.plot(outside, -a * np.exp(outside) + b, color=color, linewidth=1.4, linestyle="--",
            label=f"{name}: extrapolated to H = 0")
    ax.plot([0.0], [b - a], marker="*", markersize=11, color=color, linestyle="none")
    return f"{name}: R² = {r2_text}, a = {a:.3g}, b = {b:.3g}, ceiling b − a = {b - a:.3g}"


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


# --------------------------------------------------------------------------------------------- figures
def figure_entropy_and_performance(methods: Sequence[Method]):
    """Entropy, reward and accuracy per step, one panel each; one panel for both when they coincide."""
    if not any(method.has("entropy_mean") for method in methods):
        return None
    has_accuracy = any(method.has("accuracy") or method.has("eval_accuracy") for method in methods)
    merged = has_accuracy and _reward_is_accuracy(methods)
    panels = [("entropy_mean", "Entropy (nats/token)", "Policy entropy")]
    if merged:
        panels.append(("accuracy", "Accuracy = mean reward", "Accuracy (reward is 0/1)"))
    else:
        panels.append(("reward_mean", "Mean reward", "Reward"))
        if has_accuracy:
            panels.append(("accuracy", "Accuracy", "Accuracy"))
    figure, axes = _axes_row(len(panels))
    smoothed = 0
    for ax, (key, ylabel, title) in zip(axes, panels):
        for index, method in enumerate(methods):
            color = _color(index)
            train = f"{method.label}, train" if key == "accuracy" and method.has("eval_accuracy") else method.label
            smoothed = max(smoothed, _draw_series(ax, method.series(key), color, train))
            if key == "accuracy":
                evaluation = method.series("eval_accuracy")
                if evaluation.size:  # sparse points: the seed interval as error bars, not a band
                    several = int(evaluation.seeds.max()) > 1
                    errors = [evaluation.mean - evaluation.low, evaluation.high - evaluation.mean] if several else None
                    ax.errorbar(evaluation.steps, evaluation.mean, yerr=errors, color=color, linestyle="--",
                                marker="s", markersize=5, linewidth=1.4, capsize=3,
                                label=f"{method.label}, held-out eval" + (" (95% CI)" if several else ""))
        ax.set_xlabel(STEP_LABEL)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        _legend(ax)
    if smoothed:
        _smoothing_note(figure, smoothed, methods)
    return figure


def figure_entropy_law(methods: Sequence[Method]):
    """Performance against entropy per step (seeds pooled), with each method's fitted ``R = −a·exp(H) + b``."""
    key, ylabel = _performance(methods)
    figure, (ax,) = _axes_row(1, width=6.6, height=4.6)
    drawn = False
    for index, method in enumerate(methods):
        entropy, performance, _ = method.paired("entropy_mean", key)
        if entropy.size == 0:
            continue
        drawn = True
        color = _color(index)
        label = _draw_law(ax, entropy, performance, color, method.label)
        ax.scatter(entropy, performance, color=color, s=16, alpha=0.55, edgecolors="none", label=label)
    if not drawn:
        return None
    ax.set_xlabel(ENTROPY_LABEL)
    ax.set_ylabel(ylabel)
    ax.set_title("Performance vs. entropy: fit R = −a·exp(H) + b (solid: observed range)")
    _legend(ax, loc="best")
    return figure


def figure_entropy_change(methods: Sequence[Method]):
    """Predicted (first-order) against actual entropy change of each update, and their per-step correlation."""
    usable = [(i, m) for i, m in enumerate(methods) if m.paired("dH_predicted_mean", "dH_actual_mean")[0].size]
    if not usable:
        return None
    show_corr = any(method.has("dH_corr") for _, method in usable)
    figure, axes = _axes_row(2 if show_corr else 1, width=5.4, height=4.6)
    from matplotlib.ticker import MaxNLocator

    ax = axes[0]
    lows, highs = [], []
    for index, method in usable:
        predicted, actual, _ = method.paired("dH_predicted_mean", "dH_actual_mean")
        label = method.label
        if predicted.size > 1 and np.std(predicted) > 0 and np.std(actual) > 0:
            label += f" (r = {np.corrcoef(predicted, actual)[0, 1]:.3f})"
        ax.scatter(predicted, actual, color=_color(index), s=20, alpha=0.7, edgecolors="none", label=label)
        lows.append(min(predicted.min(), actual.min()))
        highs.append(max(predicted.max(), actual.max()))
    low, high = min(lows), max(highs)
    pad = 0.05 * (high - low) if high > low else 1e-6
    ax.plot([low - pad, high + pad], [low - pad, high + pad], color="black", linestyle="--", linewidth=1.1,
            label="y = x")
    ax.axhline(0.0, color="gray", linewidth=0.6)
    ax.axvline(0.0, color="gray", linewidth=0.6)
    ax.set_xlabel("Predicted ΔH = −Cov(log π, Δz) (nats/token)")
    ax.set_ylabel("Actual ΔH (nats/token)")
    ax.set_title("Entropy change per update (batch mean)")
    ax.ticklabel_format(style="sci", scilimits=(-2, 2))
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.yaxis.set_major_locator(MaxNLocator(6))
    ax.set_aspect("equal", adjustable="datalim")
    _legend(ax)
    smoothed = 0
    if show_corr:
        ax = axes[1]
        for index, method in usable:
            smoothed = max(smoothed, _draw_series(ax, method.series("dH_corr"), _color(index), method.label))
        ax.set_xlabel(STEP_LABEL)
        ax.set_ylabel("Pearson r across positions")
        ax.set_title("Per-position agreement, predicted vs. actual ΔH")
        ax.set_ylim(top=1.02)
        _legend(ax)
    if smoothed:
        _smoothing_note(figure, smoothed, methods)
    return figure


def figure_covariance(methods: Sequence[Method]):
    """The token covariance over training.

    Top row: one panel per method with the median and the 25–75 % and 5–95 % bands of the per-token term
    (means over seeds; shared y axis). Bottom row: the batch covariance Cov(log π, A) of every method, and the
    share of tokens with a positive term.
    """
    with_quantiles = [(i, m) for i, m in enumerate(methods) if m.has("cov_p50")]
    with_mean = [(i, m) for i, m in enumerate(methods) if m.has("cov_mean")]
    if not with_quantiles and not with_mean:
        return None
    show_pos = any(method.has("cov_pos_frac") for method in methods)
    columns = max(len(with_quantiles), 2 if show_pos else 1)
    rows = (1 if with_quantiles else 0) + 1
    figure = _new_figure(columns, 5.0, 3.8, rows=rows)
    grid = figure.add_gridspec(rows, columns)
    first_band_ax = None
    for column, (index, method) in enumerate(with_quantiles):
        ax = figure.add_subplot(grid[0, column], sharey=first_band_ax)
        first_band_ax = first_band_ax or ax
        color = _color(index)
        for low_key, high_key, alpha, name in (("cov_p05", "cov_p95", 0.15, "5–95 %"),
                                               ("cov_p25", "cov_p75", 0.35, "25–75 %")):
            low, high = method.series(low_key), method.series(high_key)
            if low.size and np.array_equal(low.steps, high.steps):
                ax.fill_between(low.steps, low.mean, high.mean, color=color, alpha=alpha, linewidth=0, label=name)
        median = method.series("cov_p50")
        ax.plot(median.steps, median.mean, color=color, linewidth=2.0, label="median")
        ax.axhline(0.0, color="gray", linewidth=0.6)
        seeds = int(median.seeds.max()) if median.size else 1
        ax.set_title(f"{method.label}: per-token covariance" + (f" (mean of {seeds} seeds)" if seeds > 1 else ""))
        ax.set_xlabel(STEP_LABEL)
        if column == 0:
            ax.set_ylabel("(A − Ā)·(log π − mean log π)")
        _legend(ax, loc="upper right")
    bottom = rows - 1
    span = columns // 2 if show_pos else columns
    ax = figure.add_subplot(grid[bottom, :span])
    smoothed = 0
    for index, method in with_mean:
        smoothed = max(smoothed, _draw_series(ax, method.series("cov_mean"), _color(index), method.label))
    ax.axhline(0.0, color="gray", linewidth=0.6)
    ax.set_xlabel(STEP_LABEL)
    ax.set_ylabel("Cov(log π, A) over tokens")
    ax.set_title("Batch covariance (> 0 lowers entropy)")
    _legend(ax)
    if show_pos:
        ax = figure.add_subplot(grid[bottom, span:])
        for index, method in enumerate(methods):
            smoothed = max(smoothed, _draw_series(ax, method.series("cov_pos_frac"), _color(index), method.label))
        ax.set_xlabel(STEP_LABEL)
        ax.set_ylabel("Share of tokens")
        ax.set_title("Tokens with a positive covariance term")
        ax.set_ylim(0.0, 1.0)
        _legend(ax)
    if smoothed:
        _smoothing_note(figure, smoothed, methods)
    return figure


def figure_polarity(methods: Sequence[Method]):
    """Share of entropy-contracting tokens per step, for positive and negative advantages."""
    keys = (("polarity_contract_frac_pos_adv", "-", "A > 0"), ("polarity_contract_frac_neg_adv", ":", "A < 0"))
    if not any(method.has(key) for method in methods for key, _, _ in keys):
        return None
    figure, (ax,) = _axes_row(1, width=6.4, height=4.4)
    smoothed = 0
    for index, method in enumerate(methods):
        for key, style, name in keys:
            smoothed = max(smoothed, _draw_series(ax, method.series(key), _color(index), f"{method.label}, {name}",
                                                  linestyle=style))
    ax.set_xlabel(STEP_LABEL)
    ax.set_ylabel("Share of tokens contracting entropy")
    ax.set_title("Entropy polarity by advantage sign")
    ax.set_ylim(0.0, 1.0)
    _legend(ax)
    if smoothed:
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
            with a 95 % band (default: grouped by ``config.json``, see ``covgym.plot_data``).
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
                    figure.text(0.5, -0.01, f"warning: {note}", ha="center", va="top", fontsize="small",
                                color="darkred", wrap=True)
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
        smoothed = _draw_series(left, method.series("entropy_mean"), _color(0), "entropy")
        left.set_xlabel(STEP_LABEL)
        left.set_ylabel("Entropy (nats/token)", color=_color(0))
        twin = left.twinx()
        twin.grid(False)
        smoothed = max(smoothed, _draw_series(twin, method.series(key), _color(1), ylabel.lower()))
        twin.set_ylabel(ylabel, color=_color(1))
        left.set_title(f"{run.label}: entropy and {ylabel.split(' = ')[0].lower()}")
        handles = left.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        left.legend(handles, [h.get_label() for h in handles], loc="center right", framealpha=0.85)
        entropy, performance, steps = run.paired("entropy_mean", key)
        points = right.scatter(entropy, performance, c=steps, cmap="viridis", s=20, edgecolors="none")
        right.figure.colorbar(points, ax=right).set_label(STEP_LABEL)
        law = _draw_law(right, entropy, performance, "black", "fit")
        right.plot([], [], color="black", linewidth=2.0, label=law)
        right.set_xlabel(ENTROPY_LABEL)
        right.set_ylabel(ylabel)
        right.set_title("Performance vs. entropy")
        _legend(right)
        if smoothed:
            _smoothing_note(figure, smoothed, [method])
        return _save(figure, run.path, "reward_entropy", formats)[0]
