"""``covgym bench``: aggregation against hand-computed numbers, spec parsing, resume, and the quick sweep."""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from covgym.benchmark import command
from covgym.benchmark import sweep as bench
from covgym.benchmark.summary import SummaryOptions, aggregate, spread, summarize_run
from covgym.benchmark.sweep import BenchEnv, BenchSpec, run_dir_for
from covgym.train.config import ConfigError


def _records(entropy: list[float], reward: list[float], eval_at_end: tuple[float, float] | None = None,
             step_time: float = 0.5) -> list[dict]:
    records = [{"step": i + 1, "entropy_mean": h, "reward_mean": r, "time_step_s": step_time}
               for i, (h, r) in enumerate(zip(entropy, reward))]
    if eval_at_end:
        records[-1].update({"eval_accuracy": eval_at_end[0], "eval_pass@4": eval_at_end[1]})
    return records


def _hand_law(entropy: list[float], reward: list[float]) -> tuple[float, float]:
    """Least squares of R = −a·exp(H) + b, solved as a linear system in (a, b)."""
    design = np.stack([-np.exp(entropy), np.ones(len(entropy))], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, np.asarray(reward), rcond=None)
    return float(a), float(b)


ENTROPY = [1.0, 0.8, 0.4, 0.3]
REWARD = [0.1, 0.2, 0.5, 0.6]


def test_summarize_run_matches_hand_computation():
    summary = summarize_run(_records(ENTROPY, REWARD, (0.5, 0.75)), SummaryOptions(0.5, True, final_window=2))
    assert summary["final_reward"] == pytest.approx((0.5 + 0.6) / 2)
    assert summary["final_entropy"] == pytest.approx((0.4 + 0.3) / 2)
    assert summary["entropy_auc"] == pytest.approx((1.0 + 0.8) / 2 + (0.8 + 0.4) / 2 + (0.4 + 0.3) / 2)
    assert summary["entropy_below_step"] == 3  # 0.4 < 0.5 × 1.0; 0.8 is not
    assert summary["accuracy"] == 0.5 and summary["pass_at_k"] == {"4": 0.75} and summary["k"] == 4
    assert summary["pass_at_max"] == 0.75
    assert summary["initial_entropy"] == pytest.approx((1.0 + 0.8 + 0.4) / 3)
    a, b = _hand_law(ENTROPY, REWARD)
    assert summary["law_a"] == pytest.approx(a, rel=1e-4) and summary["law_b"] == pytest.approx(b, rel=1e-4)
    assert summary["wall_time_s"] == pytest.approx(4 * 0.5)  # no measured wall time: the steps' own times


def test_threshold_absolute_and_never_reached():
    records = _records(ENTROPY, REWARD)
    assert summarize_run(records, SummaryOptions(0.35, relative_threshold=False))["entropy_below_step"] == 4
    assert summarize_run(records, SummaryOptions(0.2, relative_threshold=False))["entropy_below_step"] is None
    assert summarize_run(records, wall_time_s=12.5)["wall_time_s"] == 12.5


def test_summary_skips_missing_and_non_finite_values():
    records = _records(ENTROPY, REWARD)
    records[1]["entropy_mean"] = None  # the trainer writes non-finite numbers as null
    summary = summarize_run(records, SummaryOptions(final_window=10))
    assert summary["final_entropy"] == pytest.approx(np.mean([1.0, 0.4, 0.3]))
    assert summary["entropy_auc"] == pytest.approx((1.0 + 0.4) / 2 * 2 + (0.4 + 0.3) / 2)
    assert summary["accuracy"] is None and summary["pass_at_k"] == {} and summary["pass_at_max"] is None


@settings(deadline=None, max_examples=60)
@given(st.lists(st.one_of(st.none(), st.floats(-1e3, 1e3)), min_size=0, max_size=8))
def test_spread_is_mean_and_sample_std_of_present_values(values):
    present = [v for v in values if v is not None]
    result = spread(values)
    assert result["n"] == len(present)
    if present:
        assert result["mean"] == pytest.approx(statistics.fmean(present), abs=1e-9)
    else:
        assert result["mean"] is None
    if len(present) >= 2:
        assert result["std"] == pytest.approx(statistics.stdev(present), rel=1e-6, abs=1e-9)
    else:
        assert result["std"] is None


def test_aggregate_groups_by_env_and_method_and_counts_failures():
    runs = [{"env": "E", "method": "m", "seed": 0, "final_reward": 0.2, "k": 4},
            {"env": "E", "method": "m", "seed": 1, "final_reward": 0.6, "k": 4},
            {"env": "E", "method": "m", "seed": 2, "final_reward": 9.9, "status": "failed"},
            {"env": "E", "method": "n", "seed": 0, "final_reward": 0.1}]
    table = aggregate(runs)
    row = table["E"]["m"]
    assert row["final_reward"]["mean"] == pytest.approx(0.4)
    assert row["final_reward"]["std"] == pytest.approx(math.sqrt(((0.2 - 0.4) ** 2 + (0.6 - 0.4) ** 2) / 1))
    assert row["seeds"] == [0, 1] and row["failed"] == [2] and row["k"] == 4
    assert list(table["E"]) == ["m", "n"]


def _write_run(directory: Path, records: list[dict], wall_time: float | None = None) -> None:
    directory.mkdir(parents=True)
    (directory / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n{\"step\": 9, \"cut")
    if wall_time is not None:
        (directory / bench.RUN_RECORD).write_text(json.dumps({"wall_time_s": wall_time, "status": "complete",
                                                              "eval_before": {"accuracy": 0.25}}))


def test_aggregate_sweep_writes_table_json_and_plots_from_synthetic_runs(tmp_path):
    env = BenchEnv("covgym/Arithmetic-v0", steps=4)
    spec = BenchSpec(methods=("grpo", "kl_cov"), seeds=(0, 1), envs=(env,), final_window=2)
    rewards = {("grpo", 0): REWARD, ("grpo", 1): [0.0, 0.1, 0.3, 0.4],
               ("kl_cov", 0): [0.2, 0.2, 0.3, 0.3], ("kl_cov", 1): [0.1, 0.3, 0.3, 0.5]}
    for (method, seed), reward in rewards.items():
        _write_run(run_dir_for(tmp_path, env, method, seed), _records(ENTROPY, reward, (0.5 + seed / 10, 0.9)),
                   wall_time=10.0 + seed)
    result = bench.aggregate_sweep(spec, tmp_path, plots=True)
    data = json.loads((tmp_path / "summary.json").read_text())
    row = data["aggregate"]["covgym/Arithmetic-v0"]["grpo"]
    finals = [np.mean(REWARD[-2:]), np.mean([0.3, 0.4])]
    assert row["final_reward"]["mean"] == pytest.approx(np.mean(finals))
    assert row["final_reward"]["std"] == pytest.approx(np.std(finals, ddof=1))
    assert row["accuracy"]["mean"] == pytest.approx(0.55) and row["accuracy_before"]["mean"] == 0.25
    assert row["wall_time_s"]["mean"] == pytest.approx(10.5)
    a_values = [_hand_law(ENTROPY, REWARD)[0], _hand_law(ENTROPY, [0.0, 0.1, 0.3, 0.4])[0]]
    assert row["law_a"]["mean"] == pytest.approx(np.mean(a_values), rel=1e-4)
    markdown = (tmp_path / "summary.md").read_text()
    assert markdown == result.markdown
    half_width = scipy_stats.t.ppf(0.975, 1) * np.std([0.5, 0.6], ddof=1) / np.sqrt(2)
    assert f"| grpo | 2 | 0.250 ± 0.000 | 0.550 ± {half_width:.3f} |" in markdown  # before, then after with its 95 % CI
    assert "Seed-paired difference from grpo" in markdown and "| kl_cov | " in markdown.split("Seed-paired")[1]
    paired = data["paired_vs_baseline"]["covgym/Arithmetic-v0"]["kl_cov"]["accuracy"]
    assert paired["mean"] == pytest.approx(0.0) and paired["seeds"] == [0, 1]
    assert paired["verdict"] == "identical on every seed" and paired["mde"] == 0.0
    assert set(row["law_wins"]) == {"aic", "forecast"} and "law_delta_aic_linear" in row
    assert "AIC wins exp/line/power" in markdown and "Holm p" in markdown
    assert "| kl_cov | 2 |" in markdown and "### covgym/Arithmetic-v0" in markdown
    assert (tmp_path / "plots" / "Arithmetic-v0" / "entropy_reward.png").stat().st_size > 0


# ------------------------------------------------------------------------------------------------ spec and flags
def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_bench_arguments(parser)
    return parser.parse_args(argv)


def test_default_suite_covers_the_issue():
    spec = BenchSpec()
    assert set(spec.methods) == {"grpo", "clip_higher", "entropy_bonus", "clip_cov", "kl_cov", "ppo"}
    assert len(spec.seeds) >= 3 and {e.env for e in spec.envs} == {"covgym/Arithmetic-v0", "covgym/Calculator-v0"}
    bench.validate_spec(spec)


def test_config_file_then_flags_override(tmp_path):
    path = tmp_path / "bench.yaml"
    path.write_text("methods: [grpo, ppo]\nseeds: [3]\nlr: 0.001\nenvs:\n  - {env: covgym/Arithmetic-v0, steps: 7}\n"
                    "method_params: {ppo: {lam: 0.9}}\n")
    spec = command.spec_from_args(_parse(["--config", str(path), "--seeds", "4,5", "--steps", "3"]))
    assert spec.methods == ("grpo", "ppo") and spec.seeds == (4, 5) and spec.lr == 0.001
    assert spec.envs == (BenchEnv("covgym/Arithmetic-v0", steps=3),)
    config = spec.run_config(spec.envs[0], "ppo", 4, tmp_path / "r")
    assert config.algo_params == {"lam": 0.9} and config.seed == 4 and config.steps == 3


@pytest.mark.parametrize("text, field", [("colour: red\n", "colour"), ("methods: []\n", "methods"),
                                         ("envs: [{env: covgym/Arithmetic-v0}]\n", "envs")])
def test_bad_config_file_names_the_field(tmp_path, text, field):
    path = tmp_path / "bench.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=field):
        command.spec_from_args(_parse(["--config", str(path)]))


def test_bad_flags_name_the_problem():
    with pytest.raises(ConfigError, match="algo"):
        bench.validate_spec(command.spec_from_args(_parse(["--methods", "grpo,nope"])))
    with pytest.raises(ConfigError, match="--envs"):
        command.spec_from_args(_parse(["--envs", "covgym/Maze-v0"]))
    assert [e.name for e in command.spec_from_args(_parse(["--quick", "--envs", "Calculator-v0"])).envs] == [
        "Calculator-v0"]


# ------------------------------------------------------------------------------------------------ real sweeps
@pytest.mark.slow
def test_quick_sweep_writes_table_json_plots_and_reuses_finished_runs(tmp_path, tiny_model_path, monkeypatch,
                                                                      capsys):
    out = tmp_path / "sweep"
    assert command.run_bench_command(_parse(["--quick", "--out", str(out), "--no-progress"])) == 0
    spec = bench.quick_spec()
    data = json.loads((out / "summary.json").read_text())
    assert len(data["runs"]) == len(spec.envs) * len(spec.methods) * len(spec.seeds)
    assert all(run["status"] == "complete" and run["accuracy"] is not None for run in data["runs"])
    markdown = (out / "summary.md").read_text()
    for env in spec.envs:
        assert f"### {env.env}" in markdown
        assert (out / "plots" / env.name / "entropy_reward.png").is_file()
        for method in spec.methods:
            run_dir = run_dir_for(out, env, method, spec.seeds[0])
            assert (run_dir / "config.json").is_file() and (run_dir / "final_model").is_dir()
            assert f"| {method} | {len(spec.seeds)} |" in markdown
    assert "summary:" in capsys.readouterr().out

    # A second invocation trains nothing: every run is complete.
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("metrics.jsonl") if "plots" not in p.parts}

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("covgym.train.trainer.Trainer.__init__", no_training)
    result = bench.run_sweep(spec, out, progress=False, plots=False)
    assert set(result.statuses.values()) == {"done"}
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}


@pytest.mark.slow
def test_interrupted_run_resumes_from_checkpoint_and_unstarted_run_restarts(tmp_path, tiny_model_path):
    env = BenchEnv("covgym/Arithmetic-v0", steps=4, max_new_tokens=8)
    spec = BenchSpec(methods=("grpo",), seeds=(0, 1), envs=(env,), prompts_per_step=2, group_size=4,
                     mini_batches=2, eval_problems=4, eval_samples=2, save_every=2)
    out = tmp_path / "sweep"
    bench.run_sweep(spec, out, progress=False, plots=False)
    interrupted, unstarted = run_dir_for(out, env, "grpo", 0), run_dir_for(out, env, "grpo", 1)
    finished = (interrupted / "metrics.jsonl").read_text().splitlines()
    # A kill after step 3: checkpoint of step 2 on disk, steps 1-3 logged, no final model.
    (interrupted / "metrics.jsonl").write_text("\n".join(finished[:3]) + "\n")
    for path in (interrupted / "checkpoints").glob("step-00000004.pt"):
        path.unlink()
    import shutil

    shutil.rmtree(interrupted / "final_model")
    # A kill before the first checkpoint: only partial metrics.
    shutil.rmtree(unstarted)
    unstarted.mkdir(parents=True)
    (unstarted / "metrics.jsonl").write_text(finished[0] + "\n")
    result = bench.run_sweep(spec, out, progress=False, plots=False)
    assert result.statuses == {"Arithmetic-v0/grpo/seed0": "resumed", "Arithmetic-v0/grpo/seed1": "ran"}
    for run_dir in (interrupted, unstarted):
        steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert steps == [1, 2, 3, 4]
    resumed = [json.loads(line) for line in (interrupted / "metrics.jsonl").read_text().splitlines()]
    assert [r["reward_mean"] for r in resumed] == [json.loads(line)["reward_mean"] for line in finished]
    assert json.loads((interrupted / bench.RUN_RECORD).read_text())["attempts"] == 2


def test_directory_of_a_different_run_is_refused(tmp_path):
    env = BenchEnv("covgym/Arithmetic-v0", steps=4)
    spec = BenchSpec(methods=("grpo",), seeds=(0,), envs=(env,))
    run_dir = run_dir_for(tmp_path, env, "grpo", 0)
    run_dir.mkdir(parents=True)
    other = spec.run_config(env, "grpo", 0, run_dir).to_dict()
    other["optim"]["lr"] = 0.5
    (run_dir / "config.json").write_text(json.dumps(other))
    with pytest.raises(ConfigError, match="optim.lr"):
        bench.run_one(spec.run_config(env, "grpo", 0, run_dir))


def test_target_gap_compares_each_target_with_the_next_rollouts_entropy():
    from covgym.benchmark.summary import target_gap

    records = [{"step": 1, "entropy_mean": 1.0, "entropy_target_target": 0.9},
               {"step": 2, "entropy_mean": 0.8, "entropy_target_target": 0.8},
               {"step": 3, "entropy_mean": 0.7, "entropy_target_target": 0.7}]
    assert target_gap(records) == pytest.approx((0.1 + 0.1) / 2)
    assert target_gap([{"step": 1, "entropy_mean": 1.0}]) is None


def test_unfinished_runs_are_listed_but_not_averaged():
    runs = [{"env": "E", "method": "m", "seed": 0, "final_reward": 0.2, "status": "complete"},
            {"env": "E", "method": "m", "seed": 1, "final_reward": 0.9, "status": "partial"}]
    row = aggregate(runs)["E"]["m"]
    assert row["final_reward"]["mean"] == pytest.approx(0.2) and row["partial"] == [1] and row["seeds"] == [0]


def test_a_longer_run_is_cut_to_the_sweeps_steps(tmp_path):
    env = BenchEnv("covgym/Arithmetic-v0", steps=2)
    spec = BenchSpec(methods=("grpo",), seeds=(0,), envs=(env,), final_window=1)
    _write_run(run_dir_for(tmp_path, env, "grpo", 0), _records(ENTROPY, REWARD, (0.5, 0.9)), wall_time=1.0)
    run = bench.collect_runs(spec, tmp_path)[0]
    assert run["steps_done"] == 2 and run["final_entropy"] == pytest.approx(0.8)
    assert run["accuracy"] is None  # the evaluation after step 4 is not this sweep's


# ------------------------------------------------------------------------------------------------ power in the summary
def _comparison_runs(seeds: int = 8) -> list[dict]:
    """GRPO plus a method that helps on every seed, one that does nothing, one with a single seed."""
    rng = np.random.default_rng(0)
    base = rng.uniform(0.3, 0.7, seeds)
    runs = []
    for method, shift, noise in (("grpo", 0.0, 0.0), ("helps", 0.1, 0.02), ("noise", 0.0, 0.05)):
        values = base + shift + rng.normal(0.0, noise, seeds) * (noise > 0)
        runs += [{"env": "E", "method": method, "seed": s, "accuracy": float(v), "pass_at_max": float(v),
                  "final_entropy": 0.3, "distinct_correct": None, "k": 16} for s, v in enumerate(values)]
    runs.append({"env": "E", "method": "lonely", "seed": 0, "accuracy": 0.9, "final_entropy": 0.3})
    return runs


def test_paired_comparisons_test_correct_over_methods_and_report_power():
    from covgym.benchmark.summary import paired_comparisons
    from covgym.measure.power import holm, minimum_detectable_effect, seeds_needed

    runs = _comparison_runs()
    result = paired_comparisons(runs, "grpo", target_effects={"accuracy": 0.02})["E"]
    grpo = {r["seed"]: r["accuracy"] for r in runs if r["method"] == "grpo"}
    raw = {}
    for method in ("helps", "noise"):
        other = {r["seed"]: r["accuracy"] for r in runs if r["method"] == method}
        seeds = sorted(grpo)
        raw[method] = scipy_stats.ttest_rel([other[s] for s in seeds], [grpo[s] for s in seeds]).pvalue
        d = np.array([other[s] - grpo[s] for s in seeds])
        comparison = result[method]["accuracy"]
        assert comparison["p_value"] == pytest.approx(raw[method], rel=1e-9)
        assert comparison["mde"] == pytest.approx(minimum_detectable_effect(np.std(d, ddof=1), 8))
        assert comparison["seeds_needed_target"] == seeds_needed(0.02, np.std(d, ddof=1))
        assert comparison["target_effect"] == 0.02 and result[method]["pass_at_max"]["target_effect"] == 0.05
    adjusted = dict(zip(raw, holm([raw["helps"], raw["noise"]])))  # "lonely" has no p-value: not in the family
    for method in raw:
        assert result[method]["accuracy"]["p_holm"] == pytest.approx(adjusted[method], rel=1e-9)
        assert result[method]["accuracy"]["family_size"] == 2
    helps, noise, lonely = (result[m]["accuracy"] for m in ("helps", "noise", "lonely"))
    assert helps["significant"] and helps["verdict"] == "helps > grpo (Holm p < 0.001)"
    assert not noise["significant"]
    assert noise["verdict"] == f"no detectable difference at this power (MDE ±{noise['mde']:.3g})"
    assert lonely["verdict"] == "too few shared seeds to test (n = 1)" and lonely["mde"] is None
    assert result["helps"]["distinct_correct"]["n"] == 0  # nothing to compare: no crash


def test_markdown_has_a_power_table_per_metric_and_law_tables():
    from covgym.benchmark.summary import markdown_table, paired_comparisons

    runs = _comparison_runs()
    markdown = markdown_table(aggregate(runs), SummaryOptions(), paired_comparisons(runs, "grpo"), "grpo")
    for label in ("final H", "pass@1", "pass@16", "distinct correct"):
        assert f"Δ {label} vs grpo: paired t-test, Holm over" in markdown
    assert markdown.count("| method | n | Δ [95 % CI] | p | Holm p | MDE | seeds for Δ | seeds for ±0.05 |") == 3
    assert "| helps | 8 | +0.1" in markdown and "helps > grpo (Holm p < 0.001)" in markdown
    assert "]* |" in markdown.split("Seed-paired")[1].split("| noise |")[0]  # the surviving difference is marked
    assert "no detectable difference at this power (MDE ±" in markdown
    assert "AIC wins exp/line/power" in markdown and "forecast wins exp/line/power" in markdown


def test_law_wins_are_counted_per_method():
    entropy = list(np.linspace(1.6, 0.05, 40))
    runs = []
    for seed, law in enumerate([lambda h: 0.95 - 0.12 * np.exp(h)] * 2 + [lambda h: 0.9 - 0.25 * h**2.5]):
        summary = summarize_run(_records(entropy, [float(law(h)) for h in entropy]))
        runs.append({**summary, "env": "E", "method": "m", "seed": seed})
    assert runs[0]["law_best_aic"] == "exp" and runs[2]["law_best_forecast"] == "power"
    row = aggregate(runs)["E"]["m"]
    assert row["law_wins"] == {"aic": {"exp": 2, "linear": 0, "power": 1},
                               "forecast": {"exp": 2, "linear": 0, "power": 1}}
    assert row["law_delta_aic_linear"]["n"] == 3 and row["law_forecast_rmse"]["n"] == 3
    json.dumps(runs)  # model names are strings, every number finite or None


def test_a_difference_significant_alone_but_not_after_holm_gets_no_verdict():
    from covgym.benchmark.summary import paired_comparisons

    gains = {"a": [0.10, 0.03, 0.08, 0.0, 0.06], "b": [0.09, 0.03, 0.07, 0.0, 0.10]}
    runs = [{"env": "E", "method": "grpo", "seed": s, "accuracy": 0.5} for s in range(5)]
    runs += [{"env": "E", "method": m, "seed": s, "accuracy": 0.5 + g} for m, gain in gains.items()
             for s, g in enumerate(gain)]
    result = paired_comparisons(runs, "grpo")["E"]
    for method in gains:
        comparison = result[method]["accuracy"]
        assert comparison["p_value"] < 0.05 < comparison["p_holm"]  # each alone would pass; two tests together not
        assert not comparison["significant"] and comparison["verdict"].startswith("no detectable difference")
