"""Summaries of benchmark runs: one row of numbers per run, then mean ± spread per method over seeds.

Pure functions of ``metrics.jsonl`` records, so the aggregation can be checked by hand on synthetic files and
re-run over a finished sweep (``covgym bench --aggregate-only``) with a different threshold or window.

Per run:
- ``final_reward`` / ``final_entropy``: mean ``reward_mean`` / ``entropy_mean`` over the last ``final_window``
  training steps (one step is too noisy to compare methods by).
- ``entropy_auc``: trapezoidal area under ``entropy_mean`` against the step (nats·steps).
- ``entropy_below_step``: the first step whose ``entropy_mean`` is below the threshold (``None``: never). With
  ``relative=True`` the threshold is a fraction of the run's first-step entropy.
- ``law_a``, ``law_b``, ``law_r2``: the fit of ``R = −a·exp(H) + b`` to the run's (entropy, reward) points; with
  the line and the saturating power law, their AIC and their forecasts (``covgym.measure.statistics.law_comparison``).
- ``accuracy`` (mean@k, the expected pass@1) and ``pass_at_k`` from the final held-out evaluation (the last
  record holding ``eval_accuracy``).
- ``accuracy_before``: held-out accuracy before training, when the caller adds it to the summary.
- ``wall_time_s``: as measured by the sweep (passed in), else the sum of ``time_step_s``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

METRICS = ("final_reward", "accuracy_before", "accuracy", "pass_at_max_before", "pass_at_max", "initial_entropy",
           "final_entropy", "entropy_ratio", "entropy_auc", "entropy_below_step", "distinct_correct_before",
           "distinct_correct", "law_a", "law_b", "law_r2", "law_r2_linear", "law_forecast_r2",
           "law_forecast_r2_linear", "target_gap", "accuracy_gain", "pass_at_max_gain", "wall_time_s",
           # the law against its rivals (covgym.measure.law_models): in-sample AIC and the forecast of the run's end
           "law_r2_power", "law_power_c", "law_delta_aic_linear", "law_delta_aic_power", "law_forecast_r2_power",
           "law_forecast_rmse", "law_forecast_rmse_linear", "law_forecast_rmse_power",
           "law_delta_forecast_rmse_linear", "law_delta_forecast_rmse_power")
#: The law models compared, in table order; ``law_best_aic`` / ``law_best_forecast`` of a run name one of them.
LAW_MODELS = ("exp", "linear", "power")
INITIAL_WINDOW = 3  # steps averaged into ``initial_entropy``
#: Per-step targets logged by the entropy-following controls: the entropy the step's update aims to leave.
ENTROPY_TARGET_KEYS = ("entropy_target_target", "entropy_schedule_target")


def target_gap(records: list[dict[str, Any]]) -> float | None:
    """Mean |target of step k − entropy of the rollout at step k+1| for a run of an entropy-following control
    (the update of step k aims at the entropy the next rollout is sampled with); None for other runs."""
    entropy = {r["step"]: float(r["entropy_mean"]) for r in records if _finite(r.get("entropy_mean"))}
    for key in ENTROPY_TARGET_KEYS:
        gaps = [abs(float(r[key]) - entropy[r["step"] + 1]) for r in records
                if _finite(r.get(key)) and r["step"] + 1 in entropy]
        if gaps:
            return float(np.mean(gaps))
    return None


@dataclass(frozen=True)
class SummaryOptions:
    """How per-run numbers are read off the records."""

    entropy_threshold: float = 0.5
    relative_threshold: bool = True
    final_window: int = 10

    def __post_init__(self) -> None:
        if self.entropy_threshold <= 0:
            raise ValueError(f"entropy_threshold must be > 0, got {self.entropy_threshold}")
        if self.final_window < 1:
            raise ValueError(f"final_window must be >= 1, got {self.final_window}")


def read_records(run_dir: str | Path) -> list[dict[str, Any]]:
    """The JSON objects of ``metrics.jsonl`` in step order; lines cut short by a crash are skipped."""
    path = Path(run_dir) / "metrics.jsonl"
    records = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int):
                records.append(record)
    return sorted(records, key=lambda r: r["step"])


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _series(records: list[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    points = [(r["step"], float(r[key])) for r in records if _finite(r.get(key))]
    if not points:
        return np.zeros(0), np.zeros(0)
    steps, values = zip(*points)
    return np.asarray(steps, dtype=float), np.asarray(values)


def pass_at_k_of(evaluation: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """``{"1": …, "2": …, "16": …}`` from an evaluation's ``pass@k`` entries, in increasing k."""
    items = [(int(key[len(prefix) + 5:]), float(value)) for key, value in evaluation.items()
             if key.startswith(prefix + "pass@") and _finite(value)]
    return {str(k): value for k, value in sorted(items)}


def add_evaluation_before(summary: dict[str, Any], before: dict[str, Any]) -> None:
    """Held-out numbers before training (the trainer's first evaluation) into a run's summary."""
    summary["accuracy_before"] = before.get("accuracy")
    summary["pass_at_k_before"] = pass_at_k_of(before)
    if summary["pass_at_k_before"]:
        summary["pass_at_max_before"] = list(summary["pass_at_k_before"].values())[-1]
    summary["distinct_correct_before"] = before.get("distinct_correct_mean")
    for after, before_key, gain in (("accuracy", "accuracy_before", "accuracy_gain"),
                                    ("pass_at_max", "pass_at_max_before", "pass_at_max_gain")):
        if summary.get(after) is not None and summary.get(before_key) is not None:  # after − before, same seed
            summary[gain] = summary[after] - summary[before_key]


def summarize_run(records: list[dict[str, Any]], options: SummaryOptions = SummaryOptions(),
                  wall_time_s: float | None = None, law_window: int = 1) -> dict[str, Any]:
    """Per-run numbers (see the module docstring); a number that cannot be computed is ``None``."""
    from covgym.measure.statistics import law_comparison

    summary: dict[str, Any] = dict.fromkeys(METRICS)
    summary["steps_done"] = records[-1]["step"] if records else 0
    _, rewards = _series(records, "reward_mean")
    entropy_steps, entropies = _series(records, "entropy_mean")
    window = options.final_window
    if rewards.size:
        summary["final_reward"] = float(rewards[-window:].mean())
    if entropies.size:
        summary["initial_entropy"] = float(entropies[:INITIAL_WINDOW].mean())
        summary["final_entropy"] = float(entropies[-window:].mean())
        if summary["initial_entropy"] > 0:
            summary["entropy_ratio"] = summary["final_entropy"] / summary["initial_entropy"]
        summary["entropy_auc"] = float(np.trapezoid(entropies, entropy_steps)) if entropies.size > 1 else 0.0
        threshold = options.entropy_threshold * (entropies[0] if options.relative_threshold else 1.0)
        below = np.nonzero(entropies < threshold)[0]
        summary["entropy_below_step"] = int(entropy_steps[below[0]]) if below.size else None
        summary["entropy_threshold"] = float(threshold)
    paired = [(float(r["entropy_mean"]), float(r["reward_mean"])) for r in records
              if _finite(r.get("entropy_mean")) and _finite(r.get("reward_mean"))]
    if len(paired) >= 3 and np.ptp([h for h, _ in paired]) > 0:
        law = law_comparison([h for h, _ in paired], [r for _, r in paired], window=law_window)
        summary.update({key: value if isinstance(value, str) else float(value) if _finite(value) else None
                        for key, value in law.items()})
    evaluated = [r for r in records if _finite(r.get("eval_accuracy"))]
    summary["pass_at_k"] = {}
    if evaluated:
        last = evaluated[-1]
        summary["accuracy"] = float(last["eval_accuracy"])
        summary["accuracy_ci95"] = last.get("eval_accuracy_ci95")
        summary["distinct_correct"] = last.get("eval_distinct_correct_mean")
        summary["pass_at_k"] = pass_at_k_of(last, prefix="eval_")
        if summary["pass_at_k"]:
            k, value = list(summary["pass_at_k"].items())[-1]
            summary["pass_at_max"], summary["k"] = value, int(k)
    summary["target_gap"] = target_gap(records)
    if wall_time_s is None:
        _, times = _series(records, "time_step_s")
        wall_time_s = float(times.sum()) if times.size else None
    summary["wall_time_s"] = wall_time_s
    return summary


def spread(values: list[float | None]) -> dict[str, Any]:
    """Mean, sample standard deviation (ddof = 1) and Student-t 95 % interval over the non-missing values
    (``None`` where fewer than two values allow none)."""
    from covgym.measure.statistics import mean_ci

    present = [float(v) for v in values if v is not None and math.isfinite(v)]
    interval = mean_ci(present)
    std = float(np.std(present, ddof=1)) if len(present) >= 2 else None
    return {"mean": interval["mean"], "std": std, "ci_low": interval["ci_low"], "ci_high": interval["ci_high"],
            "half_width": interval["half_width"], "n": len(present), "values": list(values)}


def aggregate(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{env: {method: {metric: spread}}}`` over seeds, from per-run summaries holding ``env`` and ``method``.

    Methods and envs keep the order in which they first appear in ``runs``; failed runs count in ``failed``.
    ``pass_at_k_curve`` holds the spread of pass@k per k (over the seeds that have it); ``law_wins`` counts the
    seeds on which each law model has the lowest AIC (``aic``) and the lowest forecast RMSE (``forecast``).
    """
    table: dict[str, dict[str, dict[str, Any]]] = {}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["env"], run["method"]), []).append(run)
    for (env, method), members in groups.items():
        done = [m for m in members if m.get("status", "complete") == "complete"]
        row: dict[str, Any] = {metric: spread([m.get(metric) for m in done]) for metric in METRICS}
        row["seeds"] = [m.get("seed") for m in done]
        row["failed"] = [m.get("seed") for m in members if m.get("status") == "failed"]
        row["partial"] = [m.get("seed") for m in members if m.get("status") == "partial"]
        row["law_wins"] = {criterion: {model: sum(m.get(f"law_best_{criterion}") == model for m in done)
                                       for model in LAW_MODELS} for criterion in ("aic", "forecast")}
        ks = {m.get("k") for m in done if m.get("k") is not None}
        row["k"] = ks.pop() if len(ks) == 1 else None
        for key in ("pass_at_k", "pass_at_k_before"):
            curve_ks = sorted({int(k) for m in done for k in (m.get(key) or {})})
            row[key + "_curve"] = {str(k): spread([(m.get(key) or {}).get(str(k)) for m in done]) for k in curve_ks}
        table.setdefault(env, {})[method] = row
    return table


#: Per-run metrics compared seed by seed against the baseline method.
PAIRED_METRICS = ("final_entropy", "accuracy", "pass_at_max", "distinct_correct")
#: The effect each comparison is planned for ("seeds for ±target" in the tables): 0.05 in pass@1 and pass@k, 0.05
#: nats of final entropy, a quarter of a distinct correct answer per problem. Callers may pass others.
TARGET_EFFECTS = {"final_entropy": 0.05, "accuracy": 0.05, "pass_at_max": 0.05, "distinct_correct": 0.25}


def paired_comparisons(runs: list[dict[str, Any]], baseline: str, target_effects: dict[str, float] | None = None,
                       alpha: float = 0.05, power: float = 0.8) -> dict[str, dict[str, dict[str, Any]]]:
    """``{env: {method: {metric: comparison}}}``: each method minus ``baseline`` on the same seeds.

    A comparison is ``statistics.paired_difference`` (mean, 95 % t-interval, seeds, differences) plus
    ``power.power_summary`` (p-value, sd, MDE, seeds needed for the observed and the target effect) and, over the
    family of all methods compared with the baseline on that metric and env, ``p_holm``, ``significant``
    (Holm p ≤ ``alpha``) and a one-line ``verdict``.
    """
    from covgym.measure.power import holm, power_summary
    from covgym.measure.statistics import paired_difference

    targets = {**TARGET_EFFECTS, **(target_effects or {})}
    by_cell: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for run in runs:
        if run.get("status", "complete") == "complete":
            by_cell.setdefault((run["env"], run["method"]), {})[run["seed"]] = run
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for (env, method), seeds in by_cell.items():
        base = by_cell.get((env, baseline))
        if method == baseline or base is None:
            continue
        row = {}
        for metric in PAIRED_METRICS:
            diff = paired_difference({s: r.get(metric) for s, r in seeds.items()},
                                     {s: r.get(metric) for s, r in base.items()})
            row[metric] = {**diff, **power_summary(diff["differences"], targets.get(metric), power, alpha)}
        result.setdefault(env, {})[method] = row
    for methods in result.values():
        for metric in PAIRED_METRICS:
            names = list(methods)
            adjusted = holm([methods[name][metric]["p_value"] for name in names])
            for name, p_holm in zip(names, adjusted):
                comparison = methods[name][metric]
                comparison["p_holm"] = p_holm
                comparison["family_size"] = sum(p is not None for p in adjusted)
                comparison["significant"] = p_holm is not None and p_holm <= alpha
                comparison["verdict"] = verdict(comparison, name, baseline)
    return result


def _p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def verdict(comparison: dict[str, Any], method: str, baseline: str) -> str:
    """What a comparison supports, in words: a Holm-significant direction, or no detectable difference next to
    the effect these seeds could have detected (an absent effect and an underpowered design read alike
    otherwise)."""
    n = comparison["n"]
    if n < 2:
        return f"too few shared seeds to test (n = {n})"
    if comparison["significant"]:
        sign = ">" if comparison["mean"] > 0 else "<"
        return f"{method} {sign} {baseline} (Holm {_p_text(comparison['p_holm'])})"
    if comparison["sd"] == 0 and comparison["mean"] == 0:
        return "identical on every seed"
    return f"no detectable difference at this power (MDE ±{comparison['mde']:.3g})"


def _cell(stat: dict[str, Any], digits: int) -> str:
    """``mean ± half-width of the 95 % CI`` (just the mean for one value, — for none)."""
    if stat["mean"] is None:
        return "—"
    text = f"{stat['mean']:.{digits}f}"
    if stat.get("half_width") is not None:
        text += f" ± {stat['half_width']:.{digits}f}"
    return text


def _threshold_cell(stat: dict[str, Any], seeds: int) -> str:
    if stat["n"] == 0:
        return "never"
    text = _cell(stat, 0)
    return text if stat["n"] == seeds else f"{text} ({stat['n']}/{seeds})"


def _wins(row: dict[str, Any], criterion: str) -> str:
    counts = row.get("law_wins", {}).get(criterion, {})
    return "/".join(str(counts.get(model, 0)) for model in LAW_MODELS)


def law_tables(methods: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown lines: the three law models fitted on all points (R², ΔAIC, AIC wins), then their forecasts."""
    lines = ["| method | R² exp | R² line | R² power | power c | ΔAIC line − exp | ΔAIC power − exp | "
             "AIC wins exp/line/power | a | b |", "|---|---|---|---|---|---|---|---|---|---|"]
    for method, row in methods.items():
        lines.append(" | ".join([f"| {method}"] + [_cell(row[m], 2) for m in (
            "law_r2", "law_r2_linear", "law_r2_power", "law_power_c", "law_delta_aic_linear", "law_delta_aic_power")]
            + [_wins(row, "aic"), _cell(row["law_a"], 3), _cell(row["law_b"], 3)]) + " |")
    lines += ["", "| method | forecast RMSE exp | RMSE line | RMSE power | forecast R² exp | R² line | R² power | "
              "forecast wins exp/line/power |", "|---|---|---|---|---|---|---|---|"]
    for method, row in methods.items():
        lines.append(" | ".join([f"| {method}"] + [_cell(row[m], 3) for m in (
            "law_forecast_rmse", "law_forecast_rmse_linear", "law_forecast_rmse_power")]
            + [_cell(row[m], 2) for m in ("law_forecast_r2", "law_forecast_r2_linear", "law_forecast_r2_power")]
            + [_wins(row, "forecast")]) + " |")
    return lines


def _number(value: float | int | None, text: str = "{:.3f}") -> str:
    return "—" if value is None else text.format(value)


def power_tables(paired: dict[str, dict[str, dict[str, Any]]], baseline: str, k: Any) -> list[str]:
    """Markdown lines: per metric, each method's difference from ``baseline`` with its test, Holm-adjusted p,
    minimum detectable effect, seeds needed, and verdict."""
    labels = {"final_entropy": "final H", "accuracy": "pass@1", "pass_at_max": f"pass@{k}",
              "distinct_correct": "distinct correct"}
    lines = []
    for metric in PAIRED_METRICS:
        first = next(iter(paired.values()))[metric]
        target = first.get("target_effect")
        target_text = f"±{target:g}" if target is not None else "target"
        lines += [f"Δ {labels[metric]} vs {baseline}: paired t-test, Holm over {first.get('family_size', 0)} "
                  f"methods, MDE at {first['power'] * 100:.0f} % power", "",
                  f"| method | n | Δ [95 % CI] | p | Holm p | MDE | seeds for Δ | seeds for {target_text} "
                  f"| verdict |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for method, diffs in paired.items():
            d = diffs[metric]
            interval = ("—" if d["mean"] is None else f"{d['mean']:+.3f}" if d["half_width"] is None
                        else f"{d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]")
            p_cells = [_number(d["p_value"], "{:.3g}"), _number(d["p_holm"], "{:.3g}")]
            lines.append(" | ".join([f"| {method}", str(d["n"]), interval, *p_cells,
                                     _number(d["mde"], "±{:.3f}"), _number(d["seeds_needed_observed"], "{}"),
                                     _number(d["seeds_needed_target"], "{}"), d["verdict"]]) + " |")
        lines.append("")
    return lines[:-1]


def markdown_table(table: dict[str, dict[str, dict[str, Any]]], options: SummaryOptions,
                   comparisons: dict[str, dict[str, dict[str, Any]]] | None = None, baseline: str = "grpo") -> str:
    """Per environment: a row per method (mean ± 95 % CI over seeds), the law fits, and the seed-paired
    differences against ``baseline``."""
    blocks = []
    for env, methods in table.items():
        ks = {row["k"] for row in methods.values() if row["k"] is not None}
        k = ks.pop() if len(ks) == 1 else "k"
        header = (f"| method | seeds | pass@1 before | pass@1 after | pass@{k} before | pass@{k} after | "
                  f"pass@{k} after − before | "
                  f"H first 3 steps | H last {options.final_window} | H ratio | distinct correct / problem | "
                  f"final reward | target gap | wall (s) |")
        lines = [f"### {env}", "", header, "|" + "---|" * header.count(" | ") + "---|"]
        for method, row in methods.items():
            seeds = len(row["seeds"])
            failed = f" ({len(row['failed'])} failed)" if row["failed"] else ""
            failed += f" ({len(row['partial'])} unfinished, left out)" if row.get("partial") else ""
            cells = [f"| {method}", f"{seeds}{failed}"]
            cells += [_cell(row[m], 3) for m in ("accuracy_before", "accuracy", "pass_at_max_before", "pass_at_max",
                                                 "pass_at_max_gain", "initial_entropy", "final_entropy",
                                                 "entropy_ratio")]
            cells += [_cell(row["distinct_correct"], 2), _cell(row["final_reward"], 3),
                      _cell(row["target_gap"], 3), _cell(row["wall_time_s"], 0)]
            lines.append(" | ".join(cells) + " |")
        lines += ["", *law_tables(methods)]
        paired = (comparisons or {}).get(env, {})
        if paired:
            lines += ["", f"Seed-paired difference from {baseline} (mean [95 % CI]; * survives Holm at "
                          f"α = 0.05):", "",
                      f"| method | Δ final H | Δ pass@1 | Δ pass@{k} | Δ distinct correct |", "|---|---|---|---|---|"]
            for method, diffs in paired.items():
                cells = [f"| {method}"]
                for metric in PAIRED_METRICS:
                    d = diffs[metric]
                    if d["mean"] is None:
                        cells.append("—")
                    elif d["half_width"] is None:
                        cells.append(f"{d['mean']:+.3f}")
                    else:
                        mark = "*" if d.get("significant") else ""
                        cells.append(f"{d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]{mark}")
                lines.append(" | ".join(cells) + " |")
            lines += ["", *power_tables(paired, baseline, k)]
        blocks.append("\n".join(lines))
    notes = (f"mean ± half-width of the Student-t 95 % confidence interval over seeds. pass@1 (= mean@n) and "
             f"pass@k: held-out evaluation before and after training, unbiased estimator from n samples per problem; after − before is paired by seed. Only complete runs are averaged. "
             f"H: training token entropy, mean of the first 3 and the last {options.final_window} steps; H ratio = "
             f"last / first. target gap: for the entropy-following controls, mean |target − achieved entropy| per step. distinct correct: distinct correct answers per held-out problem among its n samples. "
             f"Law: R = −a·exp(H) + b, the best line R = c·H + d and the saturating power law R = b − a·H^c "
             f"fitted on the same (windowed) training points; ΔAIC = AIC(rival) − AIC(exp), > 0 favours exp; "
             f"wins: seeds on "
             f"which each model has the lowest AIC / forecast RMSE (exp/line/power). Forecast: fitted on the first "
             f"half of the run, RMSE and R² on the rest. Power: paired t-test on the seed-paired differences, Holm "
             f"over the methods compared with {baseline} per metric; MDE: the difference the test detects with 80 % "
             f"power at α = 0.05 with these seeds and the measured s.d. of the differences (noncentral t); seeds "
             f"for Δ: seeds needed to detect the observed (or target) difference with 80 % power.")
    return "\n\n".join(blocks) + "\n\n" + notes + "\n"
