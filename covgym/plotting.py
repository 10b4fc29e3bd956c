"""Figures of the entropy mechanism from run directories (``config.json`` + ``metrics.jsonl``).

Several runs are overlaid and labelled by method (``config.json``'s ``algo``). Each figure is drawn only when
its metrics are in the runs; a missing key skips that figure (or that run) instead of failing. Uses
matplotlib's object API with the Agg canvas, so it never touches a user's pyplot state or backend. How to
read each figure is in ``docs/entropy.md``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from covgym.metrics import fit_entropy_law

FONT = {"font.size": 12, "axes.titlesize": 13, "axes.labelsize": 12, "legend.fontsize": 10}
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf")
SMOOTH_ABOVE = 30  # runs with more points get a light raw line and a smoothed one


@dataclass
class Run:
    """One run directory's label, config and per-step records."""

    path: Path
    label: str
    config: dict = field(default_factory=dict)
    records: list[dict] = field(default_factory=list)

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """``(steps, values)`` of the records holding a finite number under ``key``, in step order."""
        points = []
        for index, record in enumerate(self.records):
            value = record.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                points.append((float(record.get("step", index)), float(value)))
        points.sort(key=lambda p: p[0])
        if not points:
            return np.zeros(0), np.zeros(0)
        steps, values = zip(*points)
        return np.asarray(steps), np.asarray(values)

    def paired(self, x_key: str, y_key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(x, y, steps)`` from the records that hold both keys (e.g. entropy and accuracy of one step)."""
        xs, ys, steps = [], [], []
        for index, record in enumerate(self.records):
            x, y = record.get(x_key), record.get(y_key)
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (x, y)):
                xs.append(float(x))
                ys.append(float(y))
                steps.append(float(record.get("step", index)))
        return np.asarray(xs), np.asarray(ys), np.asarray(steps)

    def has(self, key: str) -> bool:
        return self.series(key)[0].size > 0


def load_run(run_dir: str | Path, label: str | None = None) -> Run:
    """Read a run directory. Malformed JSON lines (a run killed mid-write) are skipped."""
    path = Path(run_dir)
    metrics_path = path / "metrics.jsonl"
    if not metrics_path.is_file():
        raise ValueError(f"run_dirs: {str(path)!r} has no metrics.jsonl")
    config: dict = {}
    if (path / "config.json").is_file():
        try:
            config = json.loads((path / "config.json").read_text())
        except json.JSONDecodeError:
            config = {}
    records = []
    for line in metrics_path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    if label is None:
        algo = config.get("algo")
        if isinstance(algo, dict):
            algo = algo.get("name")
        label = str(algo) if algo else path.name
    return Run(path=path, label=label, config=config, records=records)


def _load_runs(run_dirs: list[str | Path], labels: list[str] | None) -> list[Run]:
    if not run_dirs:
        raise ValueError("run_dirs must name at least one run directory")
    if labels is not None and len(labels) != len(run_dirs):
        raise ValueError(f"labels has {len(labels)} entries, expected {len(run_dirs)} (one per run dir)")
    runs = [load_run(d, None if labels is None else labels[i]) for i, d in enumerate(run_dirs)]
    if labels is None:  # two runs of one method: tell them apart by directory
        counts: dict[str, int] = {}
        for run in runs:
            counts[run.label] = counts.get(run.label, 0) + 1
        for run in runs:
            if counts[run.label] > 1:
                run.label = f"{run.label} ({run.path.name})"
    return runs


def _smooth(values: np.ndarray, weight: float = 0.9) -> np.ndarray:
    """Debiased exponential moving average (as TensorBoard's smoothing)."""
    smoothed, running = np.empty_like(values), 0.0
    for i, value in enumerate(values):
        running = weight * running + (1 - weight) * value
        smoothed[i] = running / (1 - weight ** (i + 1))
    return smoothed


def _line(ax, steps: np.ndarray, values: np.ndarray, color: str, label: str | None, **kwargs) -> None:
    if values.size > SMOOTH_ABOVE:
        ax.plot(steps, values, color=color, alpha=0.25, linewidth=1.0)
        ax.plot(steps, _smooth(values), color=color, label=label, linewidth=2.0, **kwargs)
    else:
        ax.plot(steps, values, color=color, label=label, linewidth=2.0, marker="o" if values.size < 15 else None,
                markersize=4, **kwargs)


def _new_figure(columns: int, width: float = 5.2, height: float = 4.2) -> tuple[Figure, list]:
    figure = Figure(figsize=(width * columns, height), dpi=150, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, columns, squeeze=False)[0]
    for ax in axes:
        ax.grid(True, alpha=0.3)
        for item in [ax.title, ax.xaxis.label, ax.yaxis.label]:
            item.set_fontsize(FONT["axes.labelsize"])
        ax.tick_params(labelsize=FONT["font.size"] - 1)
    return figure, list(axes)


def _save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, bbox_inches="tight")
    return path


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=FONT["legend.fontsize"], framealpha=0.85)


def _color(index: int) -> str:
    return COLORS[index % len(COLORS)]


# --------------------------------------------------------------------------------------------- figures
def plot_entropy_and_performance(runs: list[Run], path: Path) -> Path | None:
    """Entropy, reward and accuracy per step, one panel each (accuracy panel only when logged)."""
    panels = [("entropy_mean", "Policy entropy (nats/token)", "Entropy"),
              ("reward_mean", "Mean reward", "Reward")]
    if any(run.has("accuracy") or run.has("eval_accuracy") for run in runs):
        panels.append(("accuracy", "Accuracy", "Accuracy"))
    if not any(run.has("entropy_mean") for run in runs):
        return None
    figure, axes = _new_figure(len(panels))
    for ax, (key, ylabel, title) in zip(axes, panels):
        for index, run in enumerate(runs):
            steps, values = run.series(key)
            if values.size:
                _line(ax, steps, values, _color(index), f"{run.label} (train)" if key == "accuracy" else run.label)
            if key == "accuracy":
                eval_steps, eval_values = run.series("eval_accuracy")
                if eval_values.size:
                    ax.plot(eval_steps, eval_values, color=_color(index), linestyle="--", marker="s", markersize=5,
                            linewidth=1.5, label=f"{run.label} (eval)")
        ax.set_xlabel("Training step")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        _legend(ax)
    return _save(figure, path)


def _performance_key(runs: list[Run]) -> tuple[str, str]:
    if all(run.has("accuracy") for run in runs):
        return "accuracy", "Accuracy"
    return "reward_mean", "Mean reward"


def plot_entropy_law(runs: list[Run], path: Path) -> Path | None:
    """Performance against entropy per step, with the fitted ``R = −a·exp(H) + b`` of each run."""
    key, ylabel = _performance_key(runs)
    figure, (ax,) = _new_figure(1, width=6.4, height=4.8)
    drawn = False
    for index, run in enumerate(runs):
        entropy, performance, _ = run.paired("entropy_mean", key)
        if entropy.size == 0:
            continue
        drawn = True
        color = _color(index)
        label = run.label
        if entropy.size >= 3 and np.ptp(entropy) > 0:
            a, b, r2 = fit_entropy_law(entropy, performance)
            grid = np.linspace(0.0, entropy.max() * 1.05, 200)
            ax.plot(grid, -a * np.exp(grid) + b, color=color, linewidth=2.0)
            label = f"{run.label}: a={a:.3g}, b={b:.3g}, R²={r2:.2f}, ceiling b−a={b - a:.3g}"
        ax.scatter(entropy, performance, color=color, s=18, alpha=0.55, edgecolors="none", label=label)
    if not drawn:
        return None
    ax.set_xlabel("Policy entropy H (nats/token)")
    ax.set_ylabel(ylabel)
    ax.set_title("Performance vs. entropy, fit R = −a·exp(H) + b")
    ax.set_xlim(left=0.0)
    _legend(ax)
    return _save(figure, path)


def plot_entropy_change(runs: list[Run], path: Path) -> Path | None:
    """Predicted (first-order) against actual entropy change of each update, and their per-step correlation."""
    usable = [(i, run) for i, run in enumerate(runs) if run.paired("dH_predicted_mean", "dH_actual_mean")[0].size]
    if not usable:
        return None
    show_corr = any(run.has("dH_corr") for _, run in usable)
    figure, axes = _new_figure(2 if show_corr else 1, width=5.6, height=4.8)
    ax = axes[0]
    lows, highs = [], []
    for index, run in usable:
        predicted, actual, _ = run.paired("dH_predicted_mean", "dH_actual_mean")
        label = run.label
        if predicted.size > 1 and np.std(predicted) > 0 and np.std(actual) > 0:
            label += f" (r = {np.corrcoef(predicted, actual)[0, 1]:.3f})"
        ax.scatter(predicted, actual, color=_color(index), s=22, alpha=0.7, edgecolors="none", label=label)
        lows.append(min(predicted.min(), actual.min()))
        highs.append(max(predicted.max(), actual.max()))
    low, high = min(lows), max(highs)
    pad = 0.05 * (high - low) if high > low else 1e-6
    ax.plot([low - pad, high + pad], [low - pad, high + pad], color="black", linestyle="--", linewidth=1.2,
            label="y = x")
    ax.axhline(0.0, color="gray", linewidth=0.6)
    ax.axvline(0.0, color="gray", linewidth=0.6)
    ax.set_xlabel("Predicted ΔH = −Cov(log π, Δz), batch mean")
    ax.set_ylabel("Actual ΔH, batch mean")
    ax.set_title("Entropy change per update")
    ax.ticklabel_format(style="sci", scilimits=(-2, 2))
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.yaxis.set_major_locator(MaxNLocator(6))
    ax.set_aspect("equal", adjustable="datalim")
    _legend(ax)
    if show_corr:
        ax = axes[1]
        for index, run in usable:
            steps, corr = run.series("dH_corr")
            if corr.size:
                _line(ax, steps, corr, _color(index), run.label)
        ax.set_xlabel("Training step")
        ax.set_ylabel("Pearson r across positions")
        ax.set_title("Per-position agreement of predicted and actual ΔH")
        ax.set_ylim(top=1.02)
        _legend(ax)
    return _save(figure, path)


def plot_covariance(runs: list[Run], path: Path) -> Path | None:
    """The token covariance over training.

    Top row: one panel per run with the median and the 25–75 % and 5–95 % bands of the per-token term
    (shared y axis). Bottom row: the batch covariance Cov(log π, A) (the mean of the term) of every run, and the
    share of tokens with a positive term.
    """
    with_quantiles = [(i, run) for i, run in enumerate(runs) if run.has("cov_p50")]
    with_mean = [(i, run) for i, run in enumerate(runs) if run.has("cov_mean")]
    if not with_quantiles and not with_mean:
        return None
    show_pos = any(run.has("cov_pos_frac") for run in runs)
    columns = max(len(with_quantiles), 2 if show_pos else 1)
    rows = (1 if with_quantiles else 0) + 1
    figure = Figure(figsize=(5.2 * columns, 4.0 * rows), dpi=150, layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(rows, columns)
    first_band_ax = None
    for column, (index, run) in enumerate(with_quantiles):
        ax = figure.add_subplot(grid[0, column], sharey=first_band_ax)
        first_band_ax = first_band_ax or ax
        color = _color(index)
        steps, median = run.series("cov_p50")
        for low_key, high_key, alpha, name in (("cov_p05", "cov_p95", 0.15, "5–95 %"),
                                               ("cov_p25", "cov_p75", 0.35, "25–75 %")):
            low_steps, low = run.series(low_key)
            _, high = run.series(high_key)
            if low.size == high.size and low.size:
                ax.fill_between(low_steps, low, high, color=color, alpha=alpha, linewidth=0, label=name)
        ax.plot(steps, median, color=color, linewidth=2.0, label="median")
        ax.axhline(0.0, color="gray", linewidth=0.6)
        ax.set_title(f"{run.label}: token covariance distribution")
        ax.set_xlabel("Training step")
        if column == 0:
            ax.set_ylabel("(A − Ā)·(log π − mean log π)")
        ax.grid(True, alpha=0.3)
        _legend(ax)
    bottom = rows - 1
    span = columns // 2 if show_pos else columns
    ax = figure.add_subplot(grid[bottom, :span])
    for index, run in with_mean:
        steps, mean = run.series("cov_mean")
        _line(ax, steps, mean, _color(index), run.label)
    ax.axhline(0.0, color="gray", linewidth=0.6)
    ax.set_xlabel("Training step")
    ax.set_ylabel("Cov(log π, A) over tokens")
    ax.set_title("Batch covariance (> 0 lowers entropy)")
    ax.grid(True, alpha=0.3)
    _legend(ax)
    if show_pos:
        ax = figure.add_subplot(grid[bottom, span:])
        for index, run in enumerate(runs):
            steps, values = run.series("cov_pos_frac")
            if values.size:
                _line(ax, steps, values, _color(index), run.label)
        ax.set_xlabel("Training step")
        ax.set_ylabel("Share of tokens")
        ax.set_title("Tokens with positive covariance term")
        ax.set_ylim(0.0, 1.0)
        ax.grid(True, alpha=0.3)
        _legend(ax)
    return _save(figure, path)


def plot_polarity(runs: list[Run], path: Path) -> Path | None:
    """Share of entropy-contracting tokens per step, for positive and negative advantages."""
    keys = (("polarity_contract_frac_pos_adv", "-", "A > 0"), ("polarity_contract_frac_neg_adv", ":", "A < 0"))
    if not any(run.has(key) for run in runs for key, _, _ in keys):
        return None
    figure, (ax,) = _new_figure(1, width=6.4, height=4.6)
    for index, run in enumerate(runs):
        for key, style, name in keys:
            steps, values = run.series(key)
            if values.size:
                _line(ax, steps, values, _color(index), f"{run.label}, {name}", linestyle=style)
    ax.set_xlabel("Training step")
    ax.set_ylabel("Share of tokens whose update contracts entropy")
    ax.set_title("Entropy polarity by advantage sign")
    ax.set_ylim(0.0, 1.0)
    _legend(ax)
    return _save(figure, path)


FIGURES = {
    "entropy_reward.png": plot_entropy_and_performance,
    "entropy_law.png": plot_entropy_law,
    "entropy_change.png": plot_entropy_change,
    "covariance.png": plot_covariance,
    "polarity.png": plot_polarity,
}


def plot_runs(run_dirs: list[str | Path], out_dir: str | Path | None = None,
              labels: list[str] | None = None) -> list[Path]:
    """Write every figure the runs' metrics allow; returns the paths written.

    Args:
        run_dirs: run directories, each with ``metrics.jsonl`` (and ``config.json`` for the label).
        out_dir: where to write; default the run directory for one run, ``<parent of the first>/plots`` for
            several.
        labels: one legend label per run (default: ``config.json``'s ``algo``, else the directory name).
    """
    runs = _load_runs(list(run_dirs), labels)
    if out_dir is None:
        out_dir = runs[0].path if len(runs) == 1 else runs[0].path.parent / "plots"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in FIGURES.items():
        path = draw(runs, out / name)
        if path is not None:
            written.append(path)
    return written


def plot_reward_entropy(run_dir: str | Path) -> Path:
    """One run at a glance: entropy and reward per step, and reward against entropy with the fitted law.

    Writes ``reward_entropy.png`` into the run directory and returns its path.
    """
    run = load_run(run_dir)
    if not run.has("entropy_mean"):
        raise ValueError(f"run_dir: {str(run.path)!r} has no entropy_mean in metrics.jsonl")
    key, ylabel = _performance_key([run])
    figure, (left, right) = _new_figure(2, width=5.6, height=4.4)
    steps, entropy = run.series("entropy_mean")
    _line(left, steps, entropy, _color(0), "entropy")
    left.set_xlabel("Training step")
    left.set_ylabel("Policy entropy (nats/token)", color=_color(0))
    twin = left.twinx()
    perf_steps, performance = run.series(key)
    if performance.size:
        _line(twin, perf_steps, performance, _color(1), ylabel.lower())
    twin.set_ylabel(ylabel, color=_color(1))
    left.set_title(f"{run.label}: entropy and {ylabel.lower()}")
    handles = left.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    left.legend(handles, [h.get_label() for h in handles], fontsize=FONT["legend.fontsize"], loc="center right")
    plot_entropy_law_on(right, run, key, ylabel)
    return _save(figure, run.path / "reward_entropy.png")


def plot_entropy_law_on(ax, run: Run, key: str, ylabel: str) -> None:
    """Draw one run's performance-vs-entropy points, coloured by step, and its fitted law onto ``ax``."""
    entropy, performance, steps = run.paired("entropy_mean", key)
    if entropy.size:
        points = ax.scatter(entropy, performance, c=steps, cmap="viridis", s=22, edgecolors="none")
        colorbar = ax.figure.colorbar(points, ax=ax)
        colorbar.set_label("Training step")
    if entropy.size >= 3 and np.ptp(entropy) > 0:
        a, b, r2 = fit_entropy_law(entropy, performance)
        grid = np.linspace(0.0, entropy.max() * 1.05, 200)
        ax.plot(grid, -a * np.exp(grid) + b, color="black", linewidth=2.0,
                label=f"R = −{a:.3g}·exp(H) + {b:.3g}\nR² = {r2:.2f}, ceiling b−a = {b - a:.3g}")
        ax.legend(fontsize=FONT["legend.fontsize"])
    ax.set_xlabel("Policy entropy H (nats/token)")
    ax.set_ylabel(ylabel)
    ax.set_title("Performance vs. entropy")
    ax.grid(True, alpha=0.3)
