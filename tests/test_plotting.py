"""covgym.plotting writes honest figures from run directories: no lag, seed bands, laws only where observed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from covgym import plot_data, plotting
from covgym.cli import main

ALL_FIGURES = {"entropy_reward.png", "entropy_law.png", "entropy_change.png", "covariance.png", "polarity.png"}


def write_run(directory: Path, algo: str | None, steps: int = 40, full: bool = True, seed: int = 0,
              config: dict | None = None, noise: float = 0.01, reward_offset: float = 0.0) -> Path:
    directory.mkdir(parents=True)
    if algo is not None:
        (directory / "config.json").write_text(json.dumps({"algo": algo, "seed": seed, **(config or {})}))
    rng = np.random.default_rng(seed)
    lines = []
    for step in range(steps):
        entropy = 0.05 + np.exp(-0.05 * step)
        accuracy = -0.3 * np.exp(entropy) + 1.0 + rng.normal(0, noise)
        record = {"step": step, "reward_mean": accuracy + reward_offset, "accuracy": accuracy,
                  "entropy_mean": entropy}
        if full:
            predicted = -0.01 * entropy * (1 + rng.normal(0, 0.2))
            record.update(dH_predicted_mean=predicted, dH_actual_mean=predicted + rng.normal(0, 1e-4),
                          dH_corr=0.95, cov_mean=0.02 * entropy, cov_pos_frac=0.5,
                          polarity_contract_frac_pos_adv=0.7, polarity_contract_frac_neg_adv=0.3)
            record.update({f"cov_p{q:02d}": (q - 50) / 50 * entropy for q in (1, 5, 10, 25, 50, 75, 90, 95, 99)})
            if step % 10 == 0:
                record["eval_accuracy"] = accuracy
        lines.append(json.dumps(record))
    lines.append('{"step": 99, "truncated')  # a run killed mid-write leaves a broken last line
    (directory / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return directory


def test_plot_runs_writes_every_figure_for_two_methods(tmp_path):
    runs = [write_run(tmp_path / "a", "grpo"), write_run(tmp_path / "b", "kl_cov", seed=1)]
    written = plotting.plot_runs(runs, tmp_path / "figures")
    assert {p.name for p in written} == ALL_FIGURES
    for path in written:
        assert path.parent == tmp_path / "figures"
        image = imread(path)
        assert image.shape[0] > 300 and image.shape[1] > 300
        assert image[..., :3].std() > 0.01  # not a blank canvas


def test_every_requested_format_is_written_and_unknown_ones_are_refused(tmp_path):
    run = write_run(tmp_path / "a", "grpo", full=False)
    written = plotting.plot_runs([run], tmp_path / "out", formats="png,pdf,svg")
    assert sorted(p.name for p in written) == sorted(f"{stem}.{ext}" for stem in ("entropy_reward", "entropy_law")
                                                     for ext in ("png", "pdf", "svg"))
    assert (tmp_path / "out" / "entropy_law.pdf").read_bytes().startswith(b"%PDF")
    assert "<svg" in (tmp_path / "out" / "entropy_law.svg").read_text()
    with pytest.raises(ValueError, match="formats: jpeg"):
        plotting.plot_runs([run], tmp_path / "out", formats=("png", "jpeg"))


def test_labels_grouping_and_fallbacks(tmp_path):
    seeds = [write_run(tmp_path / "first", "grpo"), write_run(tmp_path / "second", "grpo", seed=2)]
    other_lr = write_run(tmp_path / "lr", "grpo", config={"optim": {"lr": 0.1}})
    unnamed = write_run(tmp_path / "third", None)
    methods = plot_data.group_runs(seeds + [other_lr, unnamed])
    assert [(m.label, len(m.runs)) for m in methods] == [("grpo (first, …)", 2), ("grpo (lr)", 1), ("third", 1)]
    assert [(m.label, len(m.runs)) for m in plot_data.group_runs(seeds)] == [("grpo", 2)]  # seeds of one method
    labelled = plot_data.group_runs(seeds + [other_lr, unnamed], ["x", "y", "x", "z"])
    assert [(m.label, [r.path.name for r in m.runs]) for m in labelled] == [
        ("x", ["first", "lr"]), ("y", ["second"]), ("z", ["third"])]
    with pytest.raises(ValueError, match="labels"):
        plotting.plot_runs(seeds, tmp_path / "out", labels=["only one"])


def test_missing_keys_skip_figures_without_failing(tmp_path):
    run = write_run(tmp_path / "minimal", "grpo", full=False)
    written = plotting.plot_runs([run])
    assert {p.name for p in written} == {"entropy_reward.png", "entropy_law.png"}
    assert all(p.parent == run for p in written)  # one run: figures go into its directory


def test_series_skips_non_finite_and_missing_values(tmp_path):
    directory = tmp_path / "r"
    directory.mkdir()
    (directory / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"step": 2, "entropy_mean": 0.5}, {"step": 0, "entropy_mean": float("nan")}, {"step": 1},
        {"step": 1, "entropy_mean": 0.7}]))
    steps, values = plotting.load_run(directory).series("entropy_mean")
    assert steps.tolist() == [1.0, 2.0] and values.tolist() == [0.7, 0.5]
    assert not math.isnan(values.sum())


def test_plot_reward_entropy_for_one_run(tmp_path):
    run = write_run(tmp_path / "one", "clip_cov")
    path = plotting.plot_reward_entropy(run)
    assert path == run / "reward_entropy.png" and path.is_file()
    with pytest.raises(ValueError, match="metrics.jsonl"):
        plotting.plot_reward_entropy(tmp_path)


# ----------------------------------------------------------------- smoothing does not lag
def _reference_centred_mean(values: np.ndarray, half_width: int) -> np.ndarray:
    return np.array([values[max(0, i - half_width):i + half_width + 1].mean() for i in range(values.size)])


@given(st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=80), st.integers(1, 10))
@settings(max_examples=80, deadline=None)
def test_centred_mean_matches_the_obvious_loop(values, half_width):
    values = np.asarray(values)
    np.testing.assert_allclose(plot_data.centred_mean(values, half_width),
                               _reference_centred_mean(values, half_width), atol=1e-6)


def test_smoothed_final_value_is_the_last_windows_mean_not_a_lagged_one():
    """Entropy that falls linearly for 30 steps, then stays flat for 20 (the shape the issue reported)."""
    values = np.concatenate([np.linspace(1.0, 0.3, 30), np.full(20, 0.3)])
    half_width = plot_data.smoothing_half_width(values.size)
    smoothed = plot_data.centred_mean(values, half_width)
    assert smoothed[-1] == pytest.approx(values[-(half_width + 1):].mean()) == pytest.approx(0.3)
    interior = slice(half_width, 30 - half_width)  # a straight line comes back unchanged where the window fits
    np.testing.assert_allclose(smoothed[interior], values[interior], atol=1e-12)
    lagging = 0.0  # the exponential average this replaced sat above the data for the whole flat tail
    for i, value in enumerate(values):
        lagging = 0.9 * lagging + 0.1 * value
    assert lagging / (1 - 0.9 ** values.size) > 0.3 + 0.01


def test_the_drawn_smooth_line_ends_at_the_last_windows_mean(tmp_path):
    run = write_run(tmp_path / "a", "grpo", steps=60, noise=0.05)
    method = plot_data.group_runs([run])[0]
    figure = plotting.figure_entropy_and_performance([method])
    accuracy = method.series("accuracy").mean
    thick = [line for line in figure.axes[1].get_lines() if line.get_linewidth() == 2.0]
    half_width = plot_data.smoothing_half_width(accuracy.size)
    assert thick[0].get_ydata()[-1] == pytest.approx(accuracy[-(half_width + 1):].mean())


# ----------------------------------------------------------------- seed bands
def test_seed_statistics_match_scipys_t_interval():
    rng = np.random.default_rng(0)
    curves = [(np.arange(5.0), rng.normal(size=5)) for _ in range(4)] + [(np.arange(6.0), rng.normal(size=6))]
    series = plot_data.seed_statistics(curves)
    for i, step in enumerate(series.steps):
        values = np.array([v[int(step)] for s, v in curves if step < s.size])
        assert series.seeds[i] == values.size and series.mean[i] == pytest.approx(values.mean())
        if values.size > 1:
            low, high = stats.t.interval(0.95, values.size - 1, loc=values.mean(), scale=stats.sem(values))
            assert (series.low[i], series.high[i]) == (pytest.approx(low), pytest.approx(high))
        else:
            assert series.low[i] == series.high[i] == series.mean[i]  # one seed: no band


def test_runs_sharing_a_label_are_drawn_as_a_band(tmp_path):
    runs = [write_run(tmp_path / f"s{seed}", "grpo", seed=seed, noise=0.05) for seed in range(3)]
    methods = plot_data.group_runs(runs, labels=["GRPO"] * 3)
    figure = plotting.figure_entropy_and_performance(methods)
    accuracy_ax = figure.axes[-1]
    assert accuracy_ax.collections, "no band drawn"
    assert any("3 seeds: mean ± 95% CI" in text.get_text() for text in accuracy_ax.get_legend().get_texts())
    written = plotting.plot_runs(runs, tmp_path / "out", labels=["GRPO"] * 3)  # the benchmark's call
    assert {p.name for p in written} == ALL_FIGURES


# ----------------------------------------------------------------- no duplicate panels
def test_reward_and_accuracy_share_one_panel_when_they_coincide(tmp_path):
    same = plot_data.group_runs([write_run(tmp_path / "same", "grpo")])
    assert len(plotting.figure_entropy_and_performance(same).axes) == 2
    differ = plot_data.group_runs([write_run(tmp_path / "differ", "grpo", reward_offset=0.1)])
    assert len(plotting.figure_entropy_and_performance(differ).axes) == 3


# ----------------------------------------------------------------- the law: observed range, R², no weak ceiling
def _law_figure(tmp_path, noise):
    method = plot_data.group_runs([write_run(tmp_path / f"n{noise}", "grpo", steps=40, noise=noise)])[0]
    entropy, _, _ = method.paired("entropy_mean", "accuracy")
    figure = plotting.figure_entropy_law([method])
    ax = figure.axes[0]
    legend = " | ".join(text.get_text() for text in ax.get_legend().get_texts())
    return ax, legend, entropy


def test_a_weak_law_fit_is_drawn_only_over_the_observed_range_without_a_ceiling(tmp_path):
    ax, legend, entropy = _law_figure(tmp_path, noise=0.3)  # noise swamps the trend: R² far below 0.5
    assert "R² = " in legend and "ceiling" not in legend and "weak fit: not extrapolated" in legend
    assert all(line.get_linestyle() == "-" for line in ax.get_lines())
    for line in ax.get_lines():
        assert line.get_xdata().min() >= entropy.min() - 1e-12 and line.get_xdata().max() <= entropy.max() + 1e-12


def test_a_strong_law_fit_marks_its_extrapolation_dashed_and_labelled(tmp_path):
    ax, legend, entropy = _law_figure(tmp_path, noise=0.001)
    assert "ceiling b − a" in legend and "extrapolated to H = 0" in legend
    solid = [line for line in ax.get_lines() if line.get_linestyle() == "-"]
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert solid and all(line.get_xdata().min() >= entropy.min() - 1e-12 for line in solid)
    assert dashed and dashed[0].get_xdata().max() <= entropy.min() + 1e-12


# ----------------------------------------------------------------- the command line tells the truth
def test_plot_help_and_default_output_directory_agree(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["plot", "--help"])
    assert "<parent of the first run>/plots" in " ".join(capsys.readouterr().out.split())
    runs = [write_run(tmp_path / "runs" / "a", "grpo", full=False), write_run(tmp_path / "runs" / "b", "kl_cov",
                                                                          full=False)]
    assert main(["plot", *map(str, runs), "--format", "png,svg"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed and all(Path(p).parent == tmp_path / "runs" / "plots" for p in printed)
    assert plotting.default_out_dir(runs) == tmp_path / "runs" / "plots"
    assert main(["plot", str(runs[0]), "--format", "gif"]) == 2
    assert "gif" in capsys.readouterr().err
    assert main(["plot", *map(str, runs), "--labels", "A,A", "--out", str(tmp_path / "banded")]) == 0
    assert main(["plot", *map(str, runs), "--labels", "A"]) == 2
    assert "--labels has 1 entries for 2 run directories" in capsys.readouterr().err
