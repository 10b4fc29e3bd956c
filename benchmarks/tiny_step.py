"""One step of the mechanism testbed (tiny-digits on DigitSum) against its arithmetic floor, quiet and under load.

For each variant, in a fresh process: the step's FLOPs (``torch.utils.flop_counter.FlopCounterMode`` over one
whole training step: sampling, scoring, the update's forwards and backwards, the entropy probe), the median
seconds of a step and of its phases over ``--steps`` steps after ``--warmup``, and the floor: FLOPs divided by
the best float32 matmul rate of one core here (a 1024² product on one thread). The ratio time / floor says how
far a step is from what its arithmetic alone costs; the FLOPs say how much arithmetic a unit of evidence costs.

Variants:
- ``before``: the previous suite's step: 4 mini-batches of random rows (each recomputes most of its rows'
  prompts), torch's default threads (2 here).
- ``before-1thread``: the same with one thread.
- ``after``: the current suite's step: 2 mini-batches cut by prompt group (prefix sharing computes each prompt
  once per mini-batch) and covgym's automatic threads (one, for a model this small).

The tiny models' build (supervised warm start) is timed the same way: ``build-2threads`` (torch's default here)
and ``build-1thread`` (covgym's choice for a model this small) over ``--build-steps`` optimizer steps of the
``tiny-digits`` recipe, reported as seconds per SFT step and the full build (1,500 steps) extrapolated.

``demo`` and ``demo-2threads`` time ``covgym demo --steps 30`` (the demo's GRPO on the ``tiny`` model, a quarter of
its 120 steps, with its two evaluations; the model already built) at covgym's automatic threads and with ``OMP_NUM_THREADS=2`` (torch's default here).

Each runs quiet and ``--busy``: beside a second process that keeps both cores busy with float32 matmuls (what
another run, a test suite or a browser does to a laptop). The per-run FLOPs of the quick suite's configuration
(steps × step FLOPs + two evaluations) are reported too.

Usage::

    python benchmarks/tiny_step.py [--steps 12] [--warmup 3] [--out benchmarks/results/tiny_step.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: before: the previous suite's step (4 mini-batches of random rows, torch's default threads); after: the current
VARIANTS = {"before": {"minibatch_by_group": False, "threads": 2, "mini_batches": 4},
            "before-1thread": {"minibatch_by_group": False, "threads": 1, "mini_batches": 4},
            "after": {"minibatch_by_group": True, "threads": 0, "mini_batches": None}}
#: The previous suite's runs: 150 steps and two evaluations of 256 problems × 16 samples, each with a second
#: scoring pass (measured this way: 203.7 GFLOP for 512 × 16, so 101.9 GFLOP for 256 × 16).
BEFORE_STEPS, BEFORE_EVAL_FLOPS = 150, 101.9e9
DEMO_STEPS = 30


def one_core_matmul_rate(size: int = 1024, repeats: int = 10) -> float:
    import torch

    with_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    torch.set_num_threads(with_threads)
    return 2.0 * size**3 / best


def testbed_config(run_dir: str, minibatch_by_group: bool, threads: int, mini_batches: int | None = None) -> Any:
    import dataclasses

    from covgym.benchmark.mechanism import mechanism_spec
    from covgym.benchmark.sweep import run_dir_for

    spec = mechanism_spec()
    env = spec.envs[0]
    config = spec.run_config(env, "grpo", 0, Path(run_dir))
    return config.replace(
        eval_problems=0, save_every=0,
        model=dataclasses.replace(config.model, threads=threads),
        optim=dataclasses.replace(config.optim, minibatch_by_group=minibatch_by_group,
                                  mini_batches=mini_batches or config.optim.mini_batches)), spec


def build_worker(variant: str, build_steps: int, out: str) -> None:
    """A shortened warm start of the tiny-digits recipe at the variant's thread count."""
    import dataclasses

    import torch

    from covgym.models.tiny_model import DIGITS_MODEL_SPEC, build_tokenizer, build_untrained, supervised_warm_start

    torch.set_num_threads(2 if variant == "build-2threads" else 1)
    spec = dataclasses.replace(DIGITS_MODEL_SPEC, sft_steps=build_steps)
    tokenizer = build_tokenizer()
    model = build_untrained(spec, len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id)
    started = time.perf_counter()
    supervised_warm_start(model, tokenizer, spec, show_progress=False)
    per_step = (time.perf_counter() - started) / build_steps
    Path(out).write_text(json.dumps({"variant": variant, "torch_threads": torch.get_num_threads(),
                                     "build_steps_timed": build_steps, "sft_step_s": per_step,
                                     "full_build_s": per_step * DIGITS_MODEL_SPEC.sft_steps}))


def demo_worker(variant: str, out: str) -> None:
    """``covgym demo`` in a child process with the variant's threads; wall seconds of the whole command."""
    environment = dict(os.environ)
    if variant == "demo-2threads":
        environment["OMP_NUM_THREADS"] = "2"
    with tempfile.TemporaryDirectory() as run_dir:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "covgym", "demo", "--steps", str(DEMO_STEPS),
                        "--run-dir", str(Path(run_dir) / "demo")],
                       check=True, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
    Path(out).write_text(json.dumps({"variant": variant, "torch_threads": 2 if variant == "demo-2threads" else 1,
                                     "demo_s": seconds}))


def worker(variant: str, steps: int, warmup: int, out: str) -> None:
    """Runs in its own process: thread settings take effect before any work."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from covgym.train.trainer import Trainer, resolve_config

    settings = VARIANTS[variant]
    with tempfile.TemporaryDirectory() as run_dir:
        config, spec = testbed_config(run_dir, **settings)
        trainer = Trainer(config)
        threads = torch.get_num_threads()
        rows = []
        for step in range(1, warmup + steps + 1):
            record = trainer.train_step(step)
            if step > warmup:
                rows.append(record)
        counter = FlopCounterMode(display=False)
        with counter:
            trainer.train_step(warmup + steps + 1)
        step_flops = counter.get_total_flops()
        eval_config = resolve_config(spec.run_config(spec.envs[0], "grpo", 0, Path(run_dir)))
        eval_flops = None
        if variant == "after":  # one held-out evaluation of the quick suite's size, counted once
            from covgym.train.evaluation import EvalSpec, evaluate

            eval_spec = EvalSpec(eval_config.env.env, dict(eval_config.env.env_kwargs), eval_config.eval_problems,
                                 eval_config.eval_samples, seed=1)
            counter = FlopCounterMode(display=False)
            started = time.perf_counter()
            with counter:
                evaluate(trainer.policy, eval_spec, trainer.sampling)
            eval_flops, eval_seconds = counter.get_total_flops(), time.perf_counter() - started
    median = {key: statistics.median(r[key] for r in rows)
              for key in ("time_step_s", "time_generate_s", "time_update_s", "time_score_s", "time_env_s")}
    payload = {"variant": variant, **settings, "torch_threads": threads, "steps_timed": len(rows),
               "step_flops": step_flops, **median, "one_core_matmul_flops_per_s": one_core_matmul_rate(),
               "quick_suite_steps": eval_config.steps}
    if eval_flops is not None:
        payload.update(eval_flops=eval_flops, eval_seconds=eval_seconds, eval_problems=eval_config.eval_problems,
                       eval_samples=eval_config.eval_samples)
    Path(out).write_text(json.dumps(payload))


def busy_process() -> subprocess.Popen:
    code = ("import torch\ntorch.set_num_threads(2)\na=torch.randn(1024,1024)\nwhile True:\n    a@a\n")
    return subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "OMP_NUM_THREADS": "2"})


def run_variant(variant: str, steps: int, warmup: int, busy: bool, build_steps: int = 60) -> dict[str, Any]:
    environment = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # the variant chooses threads
    with tempfile.NamedTemporaryFile(suffix=".json") as handle:
        load = list(os.getloadavg())
        neighbour = busy_process() if busy else None
        try:
            if neighbour is not None:
                time.sleep(2.0)
            subprocess.run([sys.executable, __file__, "--worker", variant, "--steps", str(steps), "--warmup",
                            str(warmup), "--build-steps", str(build_steps), "--result", handle.name], check=True,
                           env=environment)
        finally:
            if neighbour is not None:
                neighbour.kill()
                neighbour.wait()
        result = json.loads(Path(handle.name).read_text())
    result.update(condition="busy" if busy else "quiet", load_average_at_start=load)
    if variant.startswith(("build", "demo")):
        return result
    floor = result["step_flops"] / result["one_core_matmul_flops_per_s"]
    result.update(floor_s=floor, ratio_to_floor=result["time_step_s"] / floor)
    return result


def render(rows: list[dict[str, Any]]) -> str:
    lines = ["| variant | condition | threads | step GFLOP | step s (median) | generate s | update s | floor s | "
             "time / floor |", "|---|---|---|---|---|---|---|---|---|"]
    for r in (r for r in rows if not r["variant"].startswith(("build", "demo"))):
        lines.append(f"| {r['variant']} | {r['condition']} | {r['torch_threads']} | {r['step_flops'] / 1e9:.2f} | "
                     f"{r['time_step_s']:.3f} | {r['time_generate_s']:.3f} | {r['time_update_s']:.3f} | "
                     f"{r['floor_s']:.3f} | {r['ratio_to_floor']:.1f}× |")
    after = next((r for r in rows if "eval_flops" in r), None)
    before = next((r for r in rows if r["variant"] == "before"), None)
    if after is not None:
        per_run = after["quick_suite_steps"] * after["step_flops"] + after["eval_flops"]
        lines.append(f"\nOne evaluation ({after['eval_problems']} distinct problems × {after['eval_samples']} "
                     f"samples, entropies from the sampler): {after['eval_flops'] / 1e9:.1f} GFLOP, "
                     f"{after['eval_seconds']:.1f} s. One quick-suite run ({after['quick_suite_steps']} steps and "
                     f"its evaluation after training; the one before is shared by the sweep): "
                     f"{per_run / 1e9:.0f} GFLOP.")
        if before is not None:
            old = BEFORE_STEPS * before["step_flops"] + 2 * BEFORE_EVAL_FLOPS
            lines.append(f"A run of the previous suite ({BEFORE_STEPS} steps, two evaluations of 256 × 16 with a "
                         f"scoring pass): {old / 1e9:.0f} GFLOP.")
    builds = [r for r in rows if r["variant"].startswith("build")]
    if builds:
        lines += ["", "| build | condition | threads | s per SFT step | full build (extrapolated) |", "|---|---|---|---|---|"]
        lines += [f"| {r['variant']} | {r['condition']} | {r['torch_threads']} | {r['sft_step_s']:.3f} | "
                  f"{r['full_build_s'] / 60:.1f} min |" for r in builds]
    demos = [r for r in rows if r["variant"].startswith("demo")]
    if demos:
        lines += ["", f"| `covgym demo --steps {DEMO_STEPS}` (model cached) | condition | threads | wall s |",
                  "|---|---|---|---|"]
        lines += [f"| {r['variant']} | {r['condition']} | {r['torch_threads']} | {r['demo_s']:.0f} |" for r in demos]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--variants", default=",".join([*VARIANTS, "build-2threads", "build-1thread", "demo",
                                                         "demo-2threads"]))
    parser.add_argument("--build-steps", type=int, default=40)
    parser.add_argument("--conditions", default="quiet,busy")
    parser.add_argument("--out", default="benchmarks/results/tiny_step.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        if args.worker.startswith("build"):
            build_worker(args.worker, args.build_steps, args.result)
        elif args.worker.startswith("demo"):
            demo_worker(args.worker, args.result)
        else:
            worker(args.worker, args.steps, args.warmup, args.result)
        return
    from covgym.benchmark.mechanism import MECHANISM_MODEL
    from covgym.models.sources import resolve_model

    resolve_model(MECHANISM_MODEL)  # built once, before anything is timed
    resolve_model("tiny")
    rows = [run_variant(variant, args.steps, args.warmup, condition == "busy", args.build_steps)
            for condition in args.conditions.split(",") for variant in args.variants.split(",")]
    table = render(rows)
    print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"created": time.strftime("%Y-%m-%d %H:%M:%S"), "rows": rows,
                                          "cpu_count": os.cpu_count()}, indent=2))
    Path(args.out).with_suffix(".md").write_text(table + "\n")


if __name__ == "__main__":
    main()
