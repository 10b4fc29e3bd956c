"""What the figures draw, computed without matplotlib: runs read from disk, seeds grouped into methods, a moving
average that does not lag, and mean ± 95 % t-intervals across seeds (for correlations, taken on Fisher's z so that
they stay inside [−1, 1]).

Runs that share a label are seeds of one method. Without labels, runs whose ``config.json`` agree on everything
but the seed (and bookkeeping such as the run directory or step count) are seeds of one method labelled by its
``algo``; runs of one algorithm that differ in anything else are told apart by their directory names.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: Config keys that do not make two runs different methods.
NOT_METHOD_KEYS = frozenset({"seed", "run_dir", "steps", "progress", "tensorboard", "save_every", "keep_checkpoints",
                             "eval_every", "resume", "overwrite", "seeds"})


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class Run:
    """One run directory's config and per-step records."""

    path: Path
    label: str
    config: dict = field(default_factory=dict)
    records: list[dict] = field(default_factory=list)

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """``(steps, values)`` of the records holding a finite number under ``key``, in step order."""
        points = sorted((float(record.get("step", index)), float(record[key]))
                        for index, record in enumerate(self.records) if _number(record.get(key)))
        if not points:
            return np.zeros(0), np.zeros(0)
        steps, values = zip(*points)
        return np.asarray(steps), np.asarray(values)

    def paired(self, x_key: str, y_key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(x, y, steps)`` from the records that hold both keys (e.g. entropy and accuracy of one step)."""
        rows = [(float(r[x_key]), float(r[y_key]), float(r.get("step", i))) for i, r in enumerate(self.records)
                if _number(r.get(x_key)) and _number(r.get(y_key))]
        if not rows:
            return np.zeros(0), np.zeros(0), np.zeros(0)
        return tuple(np.asarray(column) for column in zip(*rows))  # type: ignore[return-value]

    def has(self, key: str) -> bool:
        return any(_number(record.get(key)) for record in self.records)


@dataclass
class Series:
    """A method's per-step curve: the mean over its seeds, and the 95 % t-interval where two or more seeds ran."""

    steps: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    seeds: np.ndarray  # seeds contributing at each step

    @property
    def size(self) -> int:
        return int(self.steps.size)


@dataclass
class Method:
    """Runs that are seeds of one method, under one legend label."""

    label: str
    runs: list[Run]

    def has(self, key: str) -> bool:
        return any(run.has(key) for run in self.runs)

    def series(self, key: str) -> Series:
        """The mean over seeds with its 95 % interval; correlations (``*_corr``) through Fisher's z."""
        curves = [run.series(key) for run in self.runs]
        return correlation_statistics(curves) if key.endswith("_corr") else seed_statistics(curves)

    def paired(self, x_key: str, y_key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every seed's ``(x, y, steps)`` points pooled (a law fit over a method uses all of them)."""
        parts = [run.paired(x_key, y_key) for run in self.runs]
        return tuple(np.concatenate([part[i] for part in parts]) for i in range(3))  # type: ignore[return-value]


def load_run(run_dir: str | Path, label: str | None = None) -> Run:
    """Read a run directory. Malformed JSON lines (a run killed mid-write) are skipped."""
    path = Path(run_dir)
    metrics_path = path / "metrics.jsonl"
    if not metrics_path.is_file():
        raise ValueError(f"run_dirs: {str(path)!r} has no metrics.jsonl")
    config: dict = {}
    if (path / "config.json").is_file():
        try:
            loaded = json.loads((path / "config.json").read_text())
            config = loaded if isinstance(loaded, dict) else {}
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


def _method_key(run: Run) -> str:
    return json.dumps({k: v for k, v in run.config.items() if k not in NOT_METHOD_KEYS}, sort_keys=True, default=str)


def group_runs(run_dirs: list[str | Path], labels: list[str] | None = None) -> list[Method]:
    """Read the runs and group seeds into methods, in order of first appearance (see the module docstring)."""
    if not run_dirs:
        raise ValueError("run_dirs must name at least one run directory")
    if labels is not None and len(labels) != len(run_dirs):
        raise ValueError(f"labels has {len(labels)} entries, expected {len(run_dirs)} (one per run dir)")
    runs = [load_run(d, None if labels is None else str(labels[i])) for i, d in enumerate(run_dirs)]
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        key = (run.label, "" if labels is not None else _method_key(run))
        groups.setdefault(key, []).append(run)
    label_count: dict[str, int] = {}
    for label, _ in groups:
        label_count[label] = label_count.get(label, 0) + 1
    methods = []
    for (label, _), members in groups.items():
        if label_count[label] > 1:  # one algorithm run with different settings: tell them apart by directory
            label = f"{label} ({members[0].path.name}{', …' if len(members) > 1 else ''})"
        methods.append(Method(label, members))
    return methods


def seed_statistics(curves: list[tuple[np.ndarray, np.ndarray]]) -> Series:
    """Per-step mean over the curves that have the step, with the two-sided 95 % Student-t interval
    ``mean ± t(0.975, n−1)·s/√n`` (s the sample standard deviation); where ``n < 2`` the interval is the mean."""
    from scipy.stats import t as student_t

    by_step: dict[float, list[float]] = {}
    for steps, values in curves:
        for step, value in zip(steps.tolist(), values.tolist()):
            by_step.setdefault(step, []).append(value)
    steps = np.asarray(sorted(by_step), dtype=float)
    mean, low, high, seeds = (np.zeros(steps.size) for _ in range(4))
    for i, step in enumerate(steps.tolist()):
        values = np.asarray(by_step[step])
        n = values.size
        mean[i], seeds[i] = values.mean(), n
        half = student_t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n) if n > 1 else 0.0
        low[i], high[i] = mean[i] - half, mean[i] + half
    return Series(steps, mean, low, high, seeds)


def fisher_interval(r: float, standard_error: float, quantile: float) -> tuple[float, float]:
    """``tanh(atanh(r) ± quantile·standard_error)``: an interval for a correlation on Fisher's z scale, mapped
    back, so it stays inside (−1, 1) (a t-interval on r itself does not). For one sample correlation of n
    pairs the textbook choice is ``standard_error = 1/√(n − 3)``, ``quantile = 1.96``."""
    z = math.atanh(float(np.clip(r, -MAX_ABS_CORRELATION, MAX_ABS_CORRELATION)))
    return math.tanh(z - quantile * standard_error), math.tanh(z + quantile * standard_error)


#: |r| is clipped below 1 before atanh, so a perfect correlation gives a finite z.
MAX_ABS_CORRELATION = 1 - 1e-9


def correlation_statistics(curves: list[tuple[np.ndarray, np.ndarray]]) -> Series:
    """Per-step correlations of several seeds: the mean and 95 % Student-t interval of ``z = atanh(r)`` across
    seeds, mapped back with ``tanh`` (the mean is ``tanh`` of the mean z); where ``n < 2`` the interval is r."""
    clipped = [(steps, np.arctanh(np.clip(values, -MAX_ABS_CORRELATION, MAX_ABS_CORRELATION)))
               for steps, values in curves]
    on_z = seed_statistics(clipped)
    return Series(on_z.steps, np.tanh(on_z.mean), np.tanh(on_z.low), np.tanh(on_z.high), on_z.seeds)


def smoothing_half_width(points: int) -> int:
    """Half-width h of the centred window (2h + 1 points): about a tenth of the run, at least 1."""
    return max(1, round(points / 20))


def centred_mean(values: np.ndarray, half_width: int) -> np.ndarray:
    """Centred moving average that shrinks at the ends: point i averages ``values[i−h : i+h+1]``.

    It does not lag: a straight line is returned unchanged wherever the whole window fits, and the last value is
    the mean of the last window (the last h + 1 points), never a value carried over from earlier steps as an
    exponential average's is.
    """
    values = np.asarray(values, dtype=float)
    if values.size == 0 or half_width < 1:
        return values.copy()
    cumulative = np.concatenate([[0.0], np.cumsum(values)])
    index = np.arange(values.size)
    start = np.maximum(index - half_width, 0)
    stop = np.minimum(index + half_width + 1, values.size)
    return (cumulative[stop] - cumulative[start]) / (stop - start)
