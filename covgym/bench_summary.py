"""Summaries of benchmark runs: one row of numbers per run, then mean ± spread per method over seeds.

Pure functions of ``metrics.jsonl`` records, so the aggregation can be checked by hand on synthetic files and
re-run over a finished sweep (``covgym bench --aggregate-only``) with a different threshold or window.

Per run:
- ``final_reward`` / ``final_entropy``: mean ``reward_mean`` / ``entropy_mean`` over the last ``final_window``
  training steps (one step is too noisy to compare methods by).
- ``entropy_auc``: trapezoidal area under ``entropy_mean`` against the step (nats·steps).
- ``entropy_below_step``: the first step whose ``entropy_mean`` is below the threshold (``None``: never). With
  ``relative=True`` the threshold is a fraction of the run's first-step entropy.
- ``law_a``, ``law_b``, ``law_r2``: the fit of ``R = −a·exp(H) + b`` to the run's (entropy, reward) points.
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

from covgym.metrics import entropy_law_summary

METRICS = ("final_reward", "accuracy_before", "accuracy", "pass_at_k", "final_entropy", "entropy_auc",
           "entropy_below_step", "law_a", "law_b", "law_r2", "wall_time_s")


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


def summarize_run(records: list[dict[str, Any]], options: SummaryOptions = SummaryOptions(),
                  wall_time_s: float | None = None) -> dict[str, Any]:
    """Per-run numbers (see the module docstring); a number that cannot be computed is ``None``."""
    summary: dict[str, Any] = dict.fromkeys(METRICS)
    summary["steps_done"] = records[-1]["step"] if records else 0
    _, rewards = _series(records, "reward_mean")
    entropy_steps, entropies = _series(records, "entropy_mean")
    window = options.final_window
    if rewards.size:
        summary["final_reward"] = float(rewards[-window:].mean())
    if entropies.size:
        summary["final_entropy"] = float(entropies[-window:].mean())
        summary["entropy_auc"] = float(np.trapezoid(entropies, entropy_steps)) if entropies.size > 1 else 0.0
        threshold = options.entropy_threshold * (entropies[0] if options.relative_threshold else 1.0)
        below = np.nonzero(entropies < threshold)[0]
        summary["entropy_below_step"] = int(entropy_steps[below[0]]) if below.size else None
        summary["entropy_threshold"] = float(threshold)
    paired = [(float(r["entropy_mean"]), float(r["reward_mean"])) for r in records
              if _finite(r.get("entropy_mean")) and _finite(r.get("reward_mean"))]
    if len(paired) >= 3 and np.ptp([h for h, _ in paired]) > 0:
        law = entropy_law_summary([h for h, _ in paired], [r for _, r in paired])
        summary.update({key: law[key] if _finite(law[key]) else None for key in ("law_a", "law_b", "law_r2")})
    evaluated = [r for r in records if _finite(r.get("eval_accuracy"))]
    if evaluated:
        last = evaluated[-1]
        summary["accuracy"] = float(last["eval_accuracy"])
        pass_keys = sorted(k for k in last if k.startswith("eval_pass@") and _finite(last[k]))
        if pass_keys:
            summary["pass_at_k"] = float(last[pass_keys[-1]])
            summary["k"] = int(pass_keys[-1].split("@")[1])
    if wall_time_s is None:
        _, times = _series(records, "time_step_s")
        wall_time_s = float(times.sum()) if times.size else None
    summary["wall_time_s"] = wall_time_s
    return summary


def spread(values: list[float | None]) -> dict[str, Any]:
    """Mean and sample standard deviation (ddof = 1; ``None`` below two values) over the non-missing values."""
    present = [float(v) for v in values if v is not None and math.isfinite(v)]
    mean = float(np.mean(present)) if present else None
    std = float(np.std(present, ddof=1)) if len(present) >= 2 else None
    return {"mean": mean, "std": std, "n": len(present), "values": list(values)}


def aggregate(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{env: {method: {metric: spread}}}`` over seeds, from per-run summaries holding ``env`` and ``method``.

    Methods and envs keep the order in which they first appear in ``runs``; failed runs count in ``failed``.
    """
    table: dict[str, dict[str, dict[str, Any]]] = {}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["env"], run["method"]), []).append(run)
    for (env, method), members in groups.items():
        done = [m for m in members if m.get("status") != "failed"]
        row: dict[str, Any] = {metric: spread([m.get(metric) for m in done]) for metric in METRICS}
        row["seeds"] = [m.get("seed") for m in done]
        row["failed"] = [m.get("seed") for m in members if m.get("status") == "failed"]
        ks = {m.get("k") for m in done if m.get("k") is not None}
        row["k"] = ks.pop() if len(ks) == 1 else None
        table.setdefault(env, {})[method] = row
    return table


def _cell(stat: dict[str, Any], digits: int) -> str:
    if stat["mean"] is None:
        return "—"
    text = f"{stat['mean']:.{digits}f}"
    if stat["std"] is not None:
        text += f" ± {stat['std']:.{digits}f}"
    return text


def _threshold_cell(stat: dict[str, Any], seeds: int) -> str:
    if stat["n"] == 0:
        return "never"
    text = _cell(stat, 0)
    return text if stat["n"] == seeds else f"{text} ({stat['n']}/{seeds})"


def markdown_table(table: dict[str, dict[str, dict[str, Any]]], options: SummaryOptions) -> str:
    """One Markdown table per environment: a row per method, ``mean ± s.d.`` over seeds."""
    threshold = (f"{options.entropy_threshold:g}×H₀" if options.relative_threshold
                 else f"{options.entropy_threshold:g}")
    blocks = []
    for env, methods in table.items():
        ks = {row["k"] for row in methods.values() if row["k"] is not None}
        k = ks.pop() if len(ks) == 1 else "k"
        header = (f"| method | seeds | final reward | accuracy before | accuracy (mean@{k}) | pass@{k} | "
                  f"final entropy | entropy AUC | step H < {threshold} | a | b | fit R² | wall time (s) |")
        lines = [f"### {env}", "", header, "|" + "---|" * header.count(" | ") + "---|"]
        for method, row in methods.items():
            seeds = len(row["seeds"])
            failed = f" ({len(row['failed'])} failed)" if row["failed"] else ""
            cells = [f"| {method}", f"{seeds}{failed}"]
            cells += [_cell(row[m], 3) for m in ("final_reward", "accuracy_before", "accuracy", "pass_at_k",
                                                 "final_entropy")]
            cells += [_cell(row["entropy_auc"], 1), _threshold_cell(row["entropy_below_step"], seeds),
                      _cell(row["law_a"], 3), _cell(row["law_b"], 3), _cell(row["law_r2"], 2),
                      _cell(row["wall_time_s"], 0)]
            lines.append(" | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    notes = (f"mean ± sample s.d. over seeds. final reward / entropy: mean over the last {options.final_window} "
             f"training steps. accuracy (mean@k, the expected pass@1) and pass@k: held-out evaluation before and "
             f"after training. entropy AUC: area under the training entropy curve (nats·steps). step H < "
             f"{threshold}: first step below the threshold (H₀ = first-step entropy; (n/N) = only n of N seeds got "
             f"there). a, b, R²: fit of R = −a·exp(H) + b to each run's (entropy, reward) steps.")
    return "\n\n".join(blocks) + "\n\n" + notes + "\n"


def mean_curves(records_per_seed: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per step, the mean over seeds of every numeric metric (seeds lacking a metric at that step are left out)."""
    sums: dict[int, dict[str, list[float]]] = {}
    for records in records_per_seed:
        for record in records:
            bucket = sums.setdefault(record["step"], {})
            for key, value in record.items():
                if key != "step" and _finite(value):
                    bucket.setdefault(key, []).append(float(value))
    return [{"step": step, **{k: float(np.mean(v)) for k, v in sums[step].items()}} for step in sorted(sums)]
