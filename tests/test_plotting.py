"""covgym.plotting writes the figures from run directories and skips what the metrics do not allow."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from covgym import plotting

ALL_FIGURES = {"entropy_reward.png", "entropy_law.png", "entropy_change.png", "covariance.png", "polarity.png"}


def write_run(directory: Path, algo: str | None, steps: int = 40, full: bool = True, seed: int = 0) -> Path:
    directory.mkdir(parents=True)
    if algo is not None:
        (directory / "config.json").write_text(json.dumps({"algo": algo, "seed": seed}))
    rng = np.random.default_rng(seed)
    lines = []
    for step in range(steps):
        entropy = 0.05 + np.exp(-0.05 * step)
        accuracy = -0.3 * np.exp(entropy) + 1.0 + rng.normal(0, 0.01)
        record = {"step": step, "reward_mean": accuracy, "accuracy": accuracy, "entropy_mean": entropy}
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


def test_labels_and_fallbacks(tmp_path):
    runs = [write_run(tmp_path / "first", "grpo"), write_run(tmp_path / "second", "grpo", seed=2),
            write_run(tmp_path / "third", None)]
    loaded = plotting._load_runs(runs, None)
    assert [run.label for run in loaded] == ["grpo (first)", "grpo (second)", "third"]
    assert [r.label for r in plotting._load_runs(runs, ["x", "y", "z"])] == ["x", "y", "z"]
    with pytest.raises(ValueError, match="labels"):
        plotting.plot_runs(runs, tmp_path / "out", labels=["only one"])


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
