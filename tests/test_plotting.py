"""covgym.benchmark.plotting writes honest figures from run directories: no lag, seed bands, laws only where observed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.image import imread
from scipy import stats

from covgym.benchmark import plot_data, plotting
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
    assert any("mean over up to 3 seeds; bands: 95% t-interval" in text.get_text() for text in figure.texts)
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
    legend = " | ".join(text.get_text() for text in [ax.title, *figure.legends[0].get_texts()])
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


# ----------------------------------------------------------------- one colour per method, legends outside the data
def _method_colours(figure) -> dict[str, set[str]]:
    """Colour of every artist tagged ``method:<label>``, read back from the figure, by method."""
    from matplotlib.colors import to_hex

    colours: dict[str, set[str]] = {}
    for artist in figure.findobj(lambda a: str(a.get_gid() or "").startswith("method:")):
        if hasattr(artist, "get_xdata"):  # a line
            colour = artist.get_color()
        else:  # a band or scatter (face), or error bars (edge)
            colour = (artist.get_facecolor() if len(artist.get_facecolor()) else artist.get_edgecolor())[0]
        colours.setdefault(artist.get_gid()[len("method:"):], set()).add(to_hex(colour, keep_alpha=False))
    return colours


def _sweep_figures(tmp_path, methods: list[str], seeds: int = 2) -> list:
    from covgym.benchmark.sweep_figures import figure_pass_at_k

    runs, labels = [], []
    for index, method in enumerate(methods):
        for seed in range(seeds):
            runs.append(write_run(tmp_path / method / f"s{seed}", method, steps=12, seed=seed,
                                  reward_offset=0.01 * index))
            labels.append(method)
    grouped = plot_data.group_runs(runs, labels)
    figures = [draw(grouped) for draw in plotting.FIGURES.values()]
    curve = {str(k): {"mean": 0.5, "ci_low": 0.3, "ci_high": 1.2, "n": seeds} for k in (1, 2, 4)}
    figures.append(figure_pass_at_k({method: {"pass_at_k_curve": curve} for method in methods}, "env"))
    assert all(figure is not None for figure in figures)
    return figures


def test_a_method_has_one_colour_in_every_figure_of_a_sweep_and_across_sweeps(tmp_path):
    many = ["grpo", "clip_cov", "kl_cov", "entropy_bonus", "entropy_target", "polarity_aware", "my_method"]
    few = ["kl_cov", "my_method", "grpo"]  # another sweep: fewer methods, another order (overlaid, not multiples)
    seen: dict[str, set[str]] = {}
    for name, methods in (("many", many), ("few", few)):
        for figure in _sweep_figures(tmp_path / name, methods):
            for method, colours in _method_colours(figure).items():
                seen.setdefault(method, set()).update(colours)
    assert set(seen) == set(many)  # every method was drawn in its colour somewhere
    assert all(len(colours) == 1 for colours in seen.values()), seen
    assert len({next(iter(c)) for c in seen.values()}) == len(seen)  # and no two methods share one
    assert seen["grpo"] == {"#000000"}


def test_palette_is_fixed_for_built_in_methods_and_stable_for_others():
    import subprocess
    import sys

    from covgym.benchmark.palette import METHOD_COLORS, method_color

    assert len(set(METHOD_COLORS.values())) == len(METHOD_COLORS)
    assert method_color("GRPO") == method_color("grpo+ppo_clip") == METHOD_COLORS["grpo"]
    assert method_color("grpo+entropy_target") == METHOD_COLORS["entropy_target"]
    code = "from covgym.benchmark.palette import method_color; print(method_color('my_method'), method_color('other'))"
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={"PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert len(outputs) == 1  # the same colour in every process (Python's own hash is salted)
    assert outputs.pop().split() == [method_color("my_method"), method_color("other")] != ["#b0b0b0"] * 2


def _rgb_distance(a: str, b: str) -> float:
    """Reference: Euclidean distance of two ``#rrggbb`` colours in 0–255 RGB, from matplotlib's parser."""
    from matplotlib.colors import to_rgb

    return float(np.linalg.norm((np.array(to_rgb(a)) - np.array(to_rgb(b))) * 255))


def test_every_built_in_method_in_a_sweep_is_told_apart_from_every_other():
    import covgym.algorithms as algorithms
    from covgym.benchmark.mechanism import MECHANISM_METHODS
    from covgym.benchmark.palette import CONTEXT_GREY, METHOD_COLORS, MIN_DISTANCE

    assert set(MECHANISM_METHODS) | set(algorithms.names()) <= set(METHOD_COLORS)
    colours = [*METHOD_COLORS.values(), CONTEXT_GREY]
    closest = min(_rgb_distance(a, b) for i, a in enumerate(colours) for b in colours[i + 1:])
    assert closest >= MIN_DISTANCE


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz_+.0123456789", min_size=1, max_size=24))
def test_a_users_method_never_takes_a_colour_like_a_built_in_one(name):
    from covgym.benchmark.palette import CONTEXT_GREY, METHOD_COLORS, MIN_DISTANCE, canonical_method, method_color

    if canonical_method(name) in METHOD_COLORS:
        return
    colour = method_color(name)
    assert min(_rgb_distance(colour, other) for other in [*METHOD_COLORS.values(), CONTEXT_GREY]) >= MIN_DISTANCE - 1


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.mark.parametrize("count", [3, 7])
def test_legends_sit_outside_every_axes_and_are_smaller_than_the_plots(tmp_path, count):
    methods = ["grpo", "clip_cov", "kl_cov", "entropy_bonus", "entropy_target", "polarity_aware", "ppo"][:count]
    for figure in _sweep_figures(tmp_path, methods):
        figure.canvas.draw()
        renderer = figure.canvas.get_renderer()
        axes = [ax for ax in figure.get_axes() if ax.get_visible()]
        assert all(ax.get_legend() is None for ax in axes)
        assert len(figure.legends) == 1
        legend = figure.legends[0].get_window_extent(renderer)
        assert not any(_overlaps(legend, ax.get_window_extent(renderer)) for ax in axes)
        panels_height = max(ax.get_window_extent(renderer).y1 for ax in axes) - min(
            ax.get_window_extent(renderer).y0 for ax in axes)
        assert legend.height < panels_height
        for ax in axes:  # no offset text ("1e−2") for an axis title to collide with
            assert ax.xaxis.get_offset_text().get_text() == "" and ax.yaxis.get_offset_text().get_text() == ""


def test_more_than_five_methods_become_small_multiples_over_the_grey_baseline(tmp_path):
    from covgym.benchmark.palette import CONTEXT_GREY

    methods = ["grpo", "clip_cov", "kl_cov", "entropy_bonus", "entropy_target", "polarity_aware"]
    figure = _sweep_figures(tmp_path, methods)[0]  # entropy_reward: three panels, each a grid of six
    axes = [ax for ax in figure.get_axes() if ax.get_visible()]
    assert len(axes) == 3 * len(methods)
    assert [ax.get_title() for ax in axes[:len(methods)]] == methods
    for ax in axes[1:len(methods)]:  # every panel but the baseline's own draws the baseline in grey behind
        assert CONTEXT_GREY in {line.get_color() for line in ax.get_lines()}
    law = _sweep_figures(tmp_path / "law", methods[:2])[1]
    assert [ax.get_title().split("\n")[0] for ax in law.get_axes() if ax.get_visible()] == methods[:2]


# ----------------------------------------------------------------- a correlation's band stays in [−1, 1]
def test_fisher_interval_matches_the_textbook_example():
    low, high = plot_data.fisher_interval(0.5, 1 / math.sqrt(28 - 3), 1.96)  # r = 0.5 from n = 28 pairs
    assert (low, high) == (pytest.approx(0.156, abs=1e-3), pytest.approx(0.736, abs=1e-3))
    assert plot_data.fisher_interval(1.0, 0.5, 1.96)[1] <= 1.0


@given(st.lists(st.floats(-1.0, 1.0), min_size=2, max_size=6))
@settings(max_examples=60, deadline=None)
def test_correlation_band_is_the_t_interval_on_fishers_z_mapped_back(values):
    series = plot_data.correlation_statistics([(np.zeros(1), np.array([v])) for v in values])
    assert -1.0 <= series.low[0] <= series.mean[0] <= series.high[0] <= 1.0
    z = np.arctanh(np.clip(values, -plot_data.MAX_ABS_CORRELATION, plot_data.MAX_ABS_CORRELATION))
    if np.std(z) > 0:
        half = stats.t.ppf(0.975, len(values) - 1) * stats.sem(z)
        low, high = plot_data.fisher_interval(math.tanh(z.mean()), half, 1.0)
        assert (series.low[0], series.high[0]) == (pytest.approx(low, abs=1e-9), pytest.approx(high, abs=1e-9))


def test_the_drawn_correlation_band_never_leaves_minus_one_to_one(tmp_path):
    runs = []
    for seed, corr in enumerate((0.9, -0.5, 0.2)):  # a t-interval on r reaches about −1.5 here
        run = write_run(tmp_path / f"s{seed}", "grpo", steps=10, seed=seed)
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()[:-1]]
        (run / "metrics.jsonl").write_text("\n".join(json.dumps({**r, "dH_corr": corr}) for r in records))
        runs.append(run)
    old_band = plot_data.seed_statistics([(np.zeros(1), np.array([r])) for r in (0.9, -0.5, 0.2)])
    assert old_band.low[0] < -1  # a t-interval on r itself
    figure = plotting.figure_entropy_change(plot_data.group_runs(runs, ["grpo"] * 3))
    bands = [c for ax in figure.get_axes() for c in ax.collections if "Pearson" in ax.get_ylabel()
             and c.get_paths()]
    assert bands and all(-1.0 <= y <= 1.0 for band in bands for path in band.get_paths() for y in path.vertices[:, 1])
