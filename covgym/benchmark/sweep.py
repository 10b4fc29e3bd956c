"""``covgym bench``: methods × seeds × environments on one model, then one table comparing the methods.

Each run is an ordinary run directory, ``<out>/<env>/<method>/seed<k>``, so ``covgym plot`` and ``covgym train
--resume`` work on it. The sweep can be stopped at any time: a finished run (its last step logged and its final
model written) is not redone, an interrupted one resumes from its last checkpoint (or restarts when it has none).
The aggregate (``summary.json``, ``summary.md``, ``plots/<env>/``) is rebuilt from the run directories at the end,
or alone with ``--aggregate-only``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from covgym.benchmark.summary import (SummaryOptions, add_evaluation_before, aggregate, markdown_table,
                                      paired_comparisons, read_records, summarize_run)
from covgym.train.config import ConfigError, EnvConfig, ModelConfig, OptimConfig, RolloutConfig, TrainConfig

RUN_RECORD = "bench_run.json"  # per run: status, accumulated wall time, held-out accuracy before training
CALCULATOR_KWARGS = {"digits": 1, "num_terms": 2, "operations": "+", "max_turns": 2}


@dataclass(frozen=True)
class BenchEnv:
    """One environment of the suite and the run length and response budget it gets."""

    env: str
    steps: int
    max_new_tokens: int = 8
    env_kwargs: dict = field(default_factory=dict)
    prompts_per_step: int | None = None  # None: the spec's (the same for every method of this env either way)
    eval_problems: int | None = None  # None: the spec's
    methods: tuple[str, ...] | None = None  # a subset of the spec's methods to run here (None: all)
    lr: float | None = None  # None: the spec's (the same for every method of this env either way)

    @property
    def name(self) -> str:
        return self.env.split("/")[-1]

    def methods_of(self, spec: "BenchSpec") -> tuple[str, ...]:
        """The spec's methods that run on this environment, in the spec's order."""
        return tuple(m for m in spec.methods if self.methods is None or m in self.methods)


@dataclass(frozen=True)
class BenchSpec:
    """The sweep. Hyperparameters default to the demo's, sized for the tiny model on a CPU."""

    methods: tuple[str, ...] = ("grpo", "clip_higher", "entropy_bonus", "clip_cov", "kl_cov", "ppo")
    seeds: tuple[int, ...] = (0, 1, 2)
    envs: tuple[BenchEnv, ...] = (BenchEnv("covgym/Arithmetic-v0", steps=200, max_new_tokens=8),
                                  BenchEnv("covgym/Calculator-v0", steps=100, max_new_tokens=16,
                                           env_kwargs=CALCULATOR_KWARGS))
    method_params: dict = field(default_factory=dict)  # method -> {hyperparameter: value}
    model: str = "tiny"
    device: str = "auto"
    lr: float = 1e-4
    prompts_per_step: int = 16
    group_size: int = 8
    mini_batches: int = 4
    eval_problems: int = 64
    eval_samples: int = 4
    save_every: int = 25
    entropy_threshold: float = 0.5
    relative_threshold: bool = True
    final_window: int = 10
    suite: str = "default"
    baseline: str = "grpo"  # methods are compared with it seed by seed (when it is in the sweep)
    law_window: int = 1  # training steps averaged into one point of the entropy-law fit
    entropy_dynamics_every: int = 1  # the predicted-vs-actual ΔH probe on every N-th step
    plugins: tuple[str, ...] = ()  # --plugin modules/files: recorded in every run's config (workers import them)

    def algorithm_of(self, method: str) -> tuple[str, dict]:
        """A method label's algorithm and hyperparameters: ``method_params[label]`` may name the algorithm
        (``algo``) so that one algorithm can appear under several settings; otherwise the label is the name."""
        params = dict(self.method_params.get(method, {}))
        return str(params.pop("algo", method)), params

    def run_config(self, env: BenchEnv, method: str, seed: int, run_dir: Path) -> TrainConfig:
        """The full training config of one run of the sweep."""
        algo, params = self.algorithm_of(method)
        return TrainConfig(
            algo=algo, algo_params=params, steps=env.steps, seed=seed,
            run_dir=str(run_dir), save_every=self.save_every,
            eval_problems=self.eval_problems if env.eval_problems is None else env.eval_problems,
            eval_samples=self.eval_samples, tensorboard=False, progress=False,
            entropy_dynamics_every=self.entropy_dynamics_every,
            model=ModelConfig(model=self.model, device=self.device),
            env=EnvConfig(env.env, dict(env.env_kwargs)),
            rollout=RolloutConfig(prompts_per_step=self.prompts_per_step if env.prompts_per_step is None
                                  else env.prompts_per_step, group_size=self.group_size,
                                  max_new_tokens=env.max_new_tokens),
            optim=OptimConfig(lr=self.lr if env.lr is None else env.lr, mini_batches=self.mini_batches),
            plugins=list(self.plugins))

    def summary_options(self) -> SummaryOptions:
        return SummaryOptions(self.entropy_threshold, self.relative_threshold, self.final_window)


def quick_spec() -> BenchSpec:
    """Two methods, two seeds, a few small steps on both environments: minutes, for smoke tests and CI."""
    return BenchSpec(methods=("grpo", "clip_cov"), seeds=(0, 1),
                     envs=(BenchEnv("covgym/Arithmetic-v0", steps=6, max_new_tokens=8),
                           BenchEnv("covgym/Calculator-v0", steps=4, max_new_tokens=16, env_kwargs=CALCULATOR_KWARGS)),
                     prompts_per_step=4, group_size=4, mini_batches=2, eval_problems=16, eval_samples=4,
                     save_every=2, final_window=3)


def spec_from_dict(data: dict[str, Any], base: BenchSpec | None = None) -> BenchSpec:
    """A spec from a (partial) mapping such as a YAML file; unknown keys are rejected by name."""
    base = base or BenchSpec()
    names = {f.name for f in dataclasses.fields(BenchSpec)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"unknown bench config key(s): {', '.join(sorted(unknown))}; "
                          f"known: {', '.join(sorted(names))}")
    changes = dict(data)
    for key in ("methods", "seeds"):
        if key in changes:
            if not isinstance(changes[key], (list, tuple)) or not changes[key]:
                raise ConfigError(f"{key}: must be a non-empty list")
            changes[key] = tuple(changes[key])
    if "envs" in changes:
        envs = []
        for entry in changes["envs"] if isinstance(changes["envs"], (list, tuple)) else [None]:
            if not isinstance(entry, dict) or "env" not in entry or "steps" not in entry:
                raise ConfigError("envs: each entry must be a mapping with at least 'env' and 'steps'")
            try:
                envs.append(BenchEnv(**entry))
            except TypeError as error:
                raise ConfigError(f"envs: {error}") from None
        changes["envs"] = tuple(envs)
    return dataclasses.replace(base, **changes)


def validate_spec(spec: BenchSpec) -> None:
    """Reject a bad sweep before any run starts (each run's config is checked by ``config.validate``)."""
    from covgym.train.config import validate

    if len(set(spec.methods)) != len(spec.methods) or len(set(spec.seeds)) != len(spec.seeds):
        raise ConfigError("methods/seeds: must not repeat")
    unknown = set(spec.method_params) - set(spec.methods)
    if unknown:
        raise ConfigError(f"method_params: {', '.join(sorted(unknown))} not among the methods")
    if len({env.name for env in spec.envs}) != len(spec.envs):
        raise ConfigError("envs: each environment may appear once")
    spec.summary_options()  # checks threshold and window
    if spec.law_window < 1:
        raise ConfigError(f"law_window: must be >= 1, got {spec.law_window}")
    for env in spec.envs:
        stray = set(env.methods or ()) - set(spec.methods)
        if stray:
            raise ConfigError(f"envs: {env.name} lists methods that are not in the sweep: {', '.join(sorted(stray))}")
        for method in spec.methods:
            validate(spec.run_config(env, method, spec.seeds[0], Path("unused")))
        check_equal_budgets(spec, env)


def comparison_budget(config: TrainConfig) -> dict[str, Any]:
    """What every method of one comparison must share (``covgym.benchmark.fairness.shared_settings`` of the resolved
    config)."""
    from covgym.benchmark.fairness import shared_settings
    from covgym.train.trainer import resolve_config

    return shared_settings(resolve_config(config).to_dict())


def check_equal_budgets(spec: BenchSpec, env: BenchEnv) -> None:
    """Refuse a sweep in which methods would get different update budgets, data or evaluation."""
    budgets = {method: comparison_budget(spec.run_config(env, method, spec.seeds[0], Path("unused")))
               for method in spec.methods}
    reference_method, reference = next(iter(budgets.items()))
    for method, budget in budgets.items():
        differing = sorted(k for k in set(reference) | set(budget) if reference.get(k) != budget.get(k))
        if differing:
            raise ConfigError(f"{env.name}: {method} and {reference_method} would differ in {', '.join(differing)};"
                              f" methods of one comparison must share everything but their own hyperparameters")


# ------------------------------------------------------------------------------------------------- one run
def run_dir_for(out: Path, env: BenchEnv, method: str, seed: int) -> Path:
    return out / env.name / method / f"seed{seed}"


def _read_run_record(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / RUN_RECORD).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _write_run_record(run_dir: Path, record: dict[str, Any]) -> None:
    from covgym.train.checkpoint import atomic_write

    payload = json.dumps(record, indent=2, sort_keys=True).encode()
    atomic_write(run_dir / RUN_RECORD, lambda handle: handle.write(payload))


def is_complete(run_dir: Path, steps: int) -> bool:
    """The run logged its last step and wrote its final model (the trainer's last act)."""
    records = read_records(run_dir)
    return bool(records) and records[-1]["step"] >= steps and (run_dir / "final_model").is_dir()


def _check_same_config(run_dir: Path, config: TrainConfig) -> None:
    """Refuse to resume or reuse a directory that holds a run of a different configuration."""
    from covgym.train.run_dir import check_same_config
    from covgym.train.trainer import resolve_config

    check_same_config(run_dir, resolve_config(config).to_dict(), ignored={"steps", "progress", "run_dir"},
                      hint="use another --out or delete that directory")


def initial_evaluation(config: TrainConfig, path: Path) -> dict[str, Any]:
    """The held-out evaluation of the untrained model for a run's env, computed once and stored at ``path``: it
    depends on the model, env and evaluation settings but not on the method or the run's seed (the evaluation's
    problems and sampling seed are fixed), so every run of an env shares it exactly."""
    from covgym.train.trainer import Trainer

    if path.is_file():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            pass  # cut short by a crash: compute it again
    result = Trainer(config.replace(run_dir=str(path.parent / "unused"))).evaluate()
    from covgym.train.checkpoint import atomic_write

    payload = json.dumps(result, indent=2, sort_keys=True).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda handle: handle.write(payload))
    return result


def run_one(config: TrainConfig, on_step: Any = None, eval_before: dict[str, Any] | None = None) -> str:
    """Train one run of the sweep unless it is complete; returns ``"done"``, ``"ran"``, ``"resumed"`` or
    ``"failed"``. Wall time accumulates over attempts in ``bench_run.json``. ``eval_before``, when given, is used
    as the run's evaluation before training instead of evaluating again (see ``initial_evaluation``)."""
    from covgym.train.checkpoint import list_checkpoints
    from covgym.train.trainer import Trainer, TrainingError

    run_dir = Path(config.run_dir)
    if is_complete(run_dir, config.steps):
        return "done"
    _check_same_config(run_dir, config)
    resume = bool(list_checkpoints(run_dir))
    if resume:
        eval_before = None  # the checkpoint holds it, and the first evaluation of a resumed run is a later one
    record = _read_run_record(run_dir) if resume else {}
    if not resume and run_dir.exists():
        shutil.rmtree(run_dir)  # started but never checkpointed: nothing worth keeping

    class SweepTrainer(Trainer):
        def evaluate(self) -> dict[str, float]:
            nonlocal eval_before
            if eval_before is not None:
                shared, eval_before = eval_before, None
                return dict(shared)
            return super().evaluate()

        def train_step(self, step: int) -> dict[str, Any]:
            result = super().train_step(step)
            if on_step is not None:
                on_step(result)
            return result

    import torch

    started = time.perf_counter()
    status = "resumed" if resume else "ran"
    record.setdefault("conditions", []).append({"torch_threads": torch.get_num_threads(),
                                                "load_average": list(os.getloadavg()),
                                                "started": time.strftime("%Y-%m-%d %H:%M:%S")})
    try:
        result = SweepTrainer(config, resume=resume).train()
        if result.eval_before:
            record["eval_before"] = result.eval_before
        record.update(status="complete", error=None)
    except (TrainingError, ValueError, RuntimeError, KeyError, OSError) as error:  # recorded; the sweep goes on
        record.update(status="failed", error=f"{type(error).__name__}: {error}")
        status = "failed"
    record["wall_time_s"] = record.get("wall_time_s", 0.0) + time.perf_counter() - started
    record["attempts"] = record.get("attempts", 0) + 1
    _write_run_record(run_dir, record)
    return status


# ------------------------------------------------------------------------------------------------- the sweep
@dataclass
class BenchResult:
    out: Path
    runs: list[dict[str, Any]]
    table: dict[str, dict[str, dict[str, Any]]]
    markdown: str
    plots: list[Path]
    statuses: dict[str, str]


def _steps_done(run_dir: Path) -> int:
    records = read_records(run_dir)
    return records[-1]["step"] if records else 0


def _initial_evaluation_path(out: Path, env: BenchEnv) -> Path:
    """One evaluation before training per environment: every run evaluates on the same problems with the same
    sampling seed (``covgym.train.trainer.EVAL_SEED``) and starts from the same weights, so it is the same for every
    method and seed."""
    return out / env.name / "initial_evaluation.json"


def _evaluate_cell(config: TrainConfig, path: str, threads: int) -> str:
    """Worker: one initial evaluation (a separate process, ``threads`` torch threads)."""
    import torch

    torch.set_num_threads(threads)
    from covgym.train.plugins import load_plugins

    load_plugins(config.plugins)  # a spawned worker has imported no user code yet
    initial_evaluation(config, Path(path))
    return path


def _run_cell(config: TrainConfig, eval_before: dict[str, Any] | None, threads: int) -> str:
    """Worker: one run of the sweep (a separate process, ``threads`` torch threads)."""
    import torch

    torch.set_num_threads(threads)
    return run_one(config, eval_before=eval_before)


def _run_parallel(spec: BenchSpec, out: Path, cells: list[tuple[BenchEnv, str, int]], jobs: int,
                  progress: bool) -> dict[str, str]:
    """Initial evaluations, then every run, ``jobs`` processes at a time with one torch thread each."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm.auto import tqdm

    statuses: dict[str, str] = {}
    from covgym.models.sources import resolve_model

    resolve_model(spec.model, show_progress=progress)  # a built-in model is built once here, not in every worker
    context = multiprocessing.get_context("spawn")  # no forked torch thread pools
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        firsts = {env.env: spec.run_config(env, spec.methods[0], spec.seeds[0],
                                           run_dir_for(out, env, spec.methods[0], spec.seeds[0]))
                  for env, _, _ in cells}
        paths = {key: _initial_evaluation_path(out, next(e for e in spec.envs if e.env == key)) for key in firsts}
        futures = [pool.submit(_evaluate_cell, firsts[key], str(paths[key]), 1) for key in firsts]
        for future in tqdm(as_completed(futures), total=len(futures), desc="bench: initial evaluations",
                           disable=not progress, dynamic_ncols=True):
            future.result()
        submitted = {}
        for env, method, seed in cells:
            run_dir = run_dir_for(out, env, method, seed)
            before = json.loads(paths[env.env].read_text())
            submitted[pool.submit(_run_cell, spec.run_config(env, method, seed, run_dir), before, 1)] = run_dir
        with tqdm(total=len(submitted), desc=f"bench: runs ({jobs} at a time)", unit="run", disable=not progress,
                  dynamic_ncols=True) as bar:
            for future in as_completed(submitted):
                run_dir = submitted[future]
                try:
                    statuses[str(run_dir.relative_to(out))] = future.result()
                except Exception as error:  # noqa: BLE001 - a crashed worker fails its run, not the sweep
                    statuses[str(run_dir.relative_to(out))] = "failed"
                    _write_run_record(run_dir, {**_read_run_record(run_dir), "status": "failed",
                                                "error": f"worker: {type(error).__name__}: {error}"})
                bar.set_postfix_str(f"{run_dir.relative_to(out)}: {statuses[str(run_dir.relative_to(out))]}")
                bar.update(1)
    return statuses


def run_sweep(spec: BenchSpec, out: str | Path, progress: bool = True, plots: bool = True, jobs: int = 1
              ) -> BenchResult:
    """Train every (env, method, seed) not yet complete under ``out``, then aggregate. Returns the aggregate.

    With ``jobs`` > 1 the runs go in that many processes, one torch thread each (each run is small: a process a
    core is faster than threads inside one run). Either way, the evaluation before training is computed once per
    env and seed and shared by every method of that seed.
    """
    validate_spec(spec)
    if jobs < 1:
        raise ConfigError(f"jobs: must be >= 1, got {jobs}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_spec.json").write_text(json.dumps(dataclasses.asdict(spec), indent=2, sort_keys=True))
    cells = [(env, method, seed) for env in spec.envs for method in env.methods_of(spec) for seed in spec.seeds]
    started, load = time.perf_counter(), list(os.getloadavg())
    record = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "load_average_at_start": load, "jobs": jobs,
              "cpu_count": os.cpu_count()}
    if jobs > 1:
        statuses = _run_parallel(spec, out, cells, jobs, progress)
    else:
        statuses = _run_sequential(spec, out, cells, progress)
    record.update(wall_s=time.perf_counter() - started, load_average_at_end=list(os.getloadavg()),
                  runs_done_before=sum(status == "done" for status in statuses.values()))
    (out / "sweep_record.json").write_text(json.dumps(record, indent=2, sort_keys=True))
    result = aggregate_sweep(spec, out, plots=plots)
    result.statuses = statuses
    return result


def _run_sequential(spec: BenchSpec, out: Path, cells: list[tuple[BenchEnv, str, int]], progress: bool
                    ) -> dict[str, str]:
    """Every run in this process, one after the other, with a progress bar over training steps."""
    from tqdm.auto import tqdm

    done = [min(_steps_done(run_dir_for(out, *cell)), cell[0].steps) for cell in cells]
    statuses: dict[str, str] = {}
    with tqdm(total=sum(env.steps for env, _, _ in cells), initial=sum(done), desc="bench", unit="step",
              disable=not progress, dynamic_ncols=True) as bar:
        for index, (env, method, seed) in enumerate(cells):
            run_dir = run_dir_for(out, env, method, seed)
            bar.set_description(f"bench [{index + 1}/{len(cells)}] {env.name} {method} seed{seed}")

            def tick(record: dict[str, Any]) -> None:
                bar.update(1)
                bar.set_postfix(reward=f"{record['reward_mean']:.2f}", entropy=f"{record['entropy_mean']:.3f}")

            config = spec.run_config(env, method, seed, run_dir)
            before = None if is_complete(run_dir, env.steps) else initial_evaluation(
                spec.run_config(env, spec.methods[0], seed, run_dir), _initial_evaluation_path(out, env))
            statuses[str(run_dir.relative_to(out))] = run_one(config, tick, eval_before=before)
            done[index] = min(_steps_done(run_dir), env.steps)  # a resume may redo steps past its checkpoint
            bar.n = sum(done)
            bar.refresh()
    return statuses


def collect_runs(spec: BenchSpec, out: Path) -> list[dict[str, Any]]:
    """Per-run summaries of every run directory of the sweep that has metrics."""
    options = spec.summary_options()
    runs = []
    for env in spec.envs:
        for method in spec.methods:
            for seed in spec.seeds:
                run_dir = run_dir_for(out, env, method, seed)
                records = [r for r in read_records(run_dir) if r["step"] <= env.steps]  # a longer run: cut
                if not records:
                    continue
                record = _read_run_record(run_dir)
                summary = summarize_run(records, options, record.get("wall_time_s"), law_window=spec.law_window)
                add_evaluation_before(summary, record.get("eval_before", {}))
                status = record.get("status") or "complete"
                if status == "complete" and records[-1]["step"] != env.steps:
                    status = "partial"  # unfinished, or run for another number of steps: not averaged
                conditions = record.get("conditions") or [{}]
                algo, params = spec.algorithm_of(method)
                summary.update(env=env.env, method=method, algo=algo, algo_params=params, seed=seed,
                               run_dir=str(run_dir.relative_to(out)), status=status, error=record.get("error"),
                               torch_threads=conditions[-1].get("torch_threads"),
                               load_average=conditions[-1].get("load_average"))
                runs.append(summary)
    return runs


def aggregate_sweep(spec: BenchSpec, out: str | Path, plots: bool = True) -> BenchResult:
    """Summaries, ``summary.json``, ``summary.md`` and overlay plots from the run directories under ``out``."""
    from covgym.benchmark.plotting import plot_runs

    out = Path(out)
    runs = collect_runs(spec, out)
    table = aggregate(runs)
    comparisons = paired_comparisons(runs, spec.baseline)
    options = spec.summary_options()
    markdown = (markdown_table(table, options, comparisons, spec.baseline) if table
                else "no runs with metrics yet\n")
    written: list[Path] = []
    if plots:
        from covgym.benchmark.sweep_figures import plot_pass_at_k

        for env in spec.envs:
            run_dirs, labels = [], []
            for method in spec.methods:
                for seed in spec.seeds:
                    if read_records(run_dir_for(out, env, method, seed)):
                        run_dirs.append(run_dir_for(out, env, method, seed))
                        labels.append(method)
            if run_dirs:  # every seed of a method under one label: its mean with a 95 % band over seeds
                written += plot_runs(run_dirs, out / "plots" / env.name, labels=labels)
            written += plot_pass_at_k(table.get(env.env, {}), out / "plots" / env.name, env.env)
    budgets = {env.env: comparison_budget(spec.run_config(env, spec.methods[0], spec.seeds[0], Path("unused")))
               for env in spec.envs}
    try:
        sweep = json.loads((out / "sweep_record.json").read_text())  # the last sweep's wall time, load, jobs
    except (OSError, json.JSONDecodeError):
        sweep = None
    payload = {"created": time.strftime("%Y-%m-%d %H:%M:%S"), "suite": spec.suite, "sweep": sweep,
               "spec": dataclasses.asdict(spec),
               "shared_budget": budgets, "baseline": spec.baseline, "runs": runs, "aggregate": table,
               "paired_vs_baseline": comparisons, "plots": [str(p.relative_to(out)) for p in written]}
    (out / "summary.json").write_text(json.dumps(payload, indent=2, sort_keys=True))
    (out / "summary.md").write_text(markdown)
    return BenchResult(out, runs, table, markdown, written, {})
