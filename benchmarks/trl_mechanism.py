"""Does the mechanism survive the move to TRL? GRPO vs KL-Cov through ``--engine trl`` on covgym's testbed.

The settings are the math task of covgym's mechanism quick suite (``covgym.benchmark.mechanism.mechanism_spec``: model
``tiny-digits``, env ``covgym/DigitSum-v0``, 80 steps, lr 5e-4, 16 prompts × 8 samples, 2 mini-batches, the
suite's KL-Cov hyperparameters, the entropy probe every 10 steps), each run through
``covgym.adapters.trl.train_with_trl`` instead of covgym's trainer. The held-out evaluation is the suite's (512
problems × 16 samples, fixed problems and sampling seed) unless ``--eval-problems`` scales it down; the evaluation
before training is computed once (covgym's ``evaluate`` on the untrained model, as ``covgym bench`` shares it).

The table (mean and Student-t 95 % interval over seeds; the seed-paired KL-Cov − GRPO difference) comes from
covgym's own summary code (``bench_summary.summarize_run``, ``aggregate``, ``paired_comparisons``). Run it single
process with one thread, or data parallel on CPU: ``OMP_NUM_THREADS=1 accelerate launch --multi_gpu --num_processes 2
--num_cpu_threads_per_process 1 benchmarks/trl_mechanism.py --tag accelerate2`` (on a machine without CUDA this
starts 2 processes on gloo; accelerate 1.16's ``--cpu`` with ``--num_processes 2`` starts only one).

Usage: ``python benchmarks/trl_mechanism.py [--seeds 0,1,2] [--steps 80] [--eval-problems 512] [--tag single]
[--out-runs runs/trl-mechanism]``; writes benchmarks/results/trl_mechanism_<tag>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
import warnings
from pathlib import Path

from tqdm.auto import tqdm

METHODS = ("grpo", "kl_cov")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the quick suite's)")
    parser.add_argument("--eval-problems", type=int, default=None, help="default: the quick suite's 512")
    parser.add_argument("--tag", default="single")
    parser.add_argument("--out-runs", default="runs/trl-mechanism")
    parser.add_argument("--results", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

    from covgym.adapters.trl_run import train_with_trl
    from covgym.benchmark.mechanism import mechanism_spec
    from covgym.benchmark.summary import (add_evaluation_before, aggregate, paired_comparisons, read_records,
                                          summarize_run)
    from covgym.models.policy import Policy, SamplingParams
    from covgym.models.threads import apply_threads
    from covgym.train.evaluation import EvalSpec, evaluate
    from covgym.train.trainer import EVAL_SEED

    spec = mechanism_spec(methods=METHODS)
    env = spec.envs[0]  # the math task, DigitSum
    if args.steps is not None:
        env = dataclasses.replace(env, steps=args.steps)
    if args.eval_problems is not None:
        spec = dataclasses.replace(spec, eval_problems=args.eval_problems)
    seeds = [int(s) for s in args.seeds.split(",")]
    main_process = os.environ.get("RANK", "0") == "0"
    out = Path(args.out_runs) / args.tag
    before_path = Path(args.out_runs) / f"eval_before_{spec.eval_problems}.json"
    eval_before = None
    if main_process:
        if before_path.is_file():
            eval_before = json.loads(before_path.read_text())
        else:  # covgym's evaluation of the untrained model, shared by every run (its problems and seed are fixed)
            config = spec.run_config(env, "grpo", 0, out / "unused")
            policy = Policy.from_pretrained(config.model.model, show_progress=False)
            apply_threads(0, policy.model, "cpu")
            r = config.rollout
            eval_before = evaluate(policy, EvalSpec(config.env.env, dict(config.env.env_kwargs), config.eval_problems,
                                                    config.eval_samples, seed=EVAL_SEED),
                                   SamplingParams(temperature=r.temperature, top_p=r.top_p,
                                                  max_new_tokens=r.max_new_tokens))
            before_path.parent.mkdir(parents=True, exist_ok=True)
            before_path.write_text(json.dumps(eval_before, indent=2, sort_keys=True))
    runs, started_all = [], time.perf_counter()
    for seed in tqdm(seeds, desc="seeds", disable=not main_process):
        for method in METHODS:
            run_dir = out / method / f"seed{seed}"
            config = spec.run_config(env, method, seed, run_dir).replace(progress=False)
            started = time.perf_counter()
            train_with_trl(config, overwrite=run_dir.exists(), eval_before=eval_before)
            wall = time.perf_counter() - started
            if main_process:
                summary = summarize_run(read_records(run_dir), spec.summary_options(), wall, law_window=spec.law_window)
                add_evaluation_before(summary, eval_before)
                summary.update(env=env.env, method=method, seed=seed, run_dir=str(run_dir), status="complete")
                runs.append(summary)
    if not main_process:
        return
    table = aggregate(runs)[env.env]
    paired = paired_comparisons(runs, "grpo")[env.env]["kl_cov"]

    def cell(stat: dict) -> str:
        if stat["mean"] is None:
            return "—"
        return f"{stat['mean']:.3f}" + ("" if stat.get("half_width") is None else f" ± {stat['half_width']:.3f}")

    def pass_at(row: dict, k: str) -> dict:
        return row["pass_at_k_curve"].get(k, {"mean": None})

    k = str(spec.eval_samples)
    print(f"\nTRL engine ({args.tag}), {env.env}, {env.steps} steps, seeds {seeds}, eval {spec.eval_problems} x "
          f"{spec.eval_samples}; mean ± 95 % CI half-width over seeds")
    print(f"{'method':8} {'H first 3':>14} {'H last 10':>14} {'pass@1':>14} {f'pass@{k}':>14}")
    for method in METHODS:
        row = table[method]
        print(f"{method:8} {cell(row['initial_entropy']):>14} {cell(row['final_entropy']):>14} "
              f"{cell(row['accuracy']):>14} {cell(pass_at(row, k)):>14}")
    print(f"before   {'':14} {'':14} {eval_before['accuracy']:14.3f} {eval_before.get(f'pass@{k}', float('nan')):14.3f}")

    def diff(d: dict) -> str:
        if d["mean"] is None:
            return "—"
        if d["half_width"] is None:
            return f"{d['mean']:+.3f}"
        return f"{d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"

    print(f"KL-Cov − GRPO (seed-paired): final H {diff(paired['final_entropy'])}, pass@1 {diff(paired['accuracy'])}, "
          f"pass@{k} {diff(paired['pass_at_max'])}")
    ratios = {s: None for s in seeds}
    by = {(r["method"], r["seed"]): r for r in runs}
    for s in seeds:
        g, c = by[("grpo", s)]["final_entropy"], by[("kl_cov", s)]["final_entropy"]
        ratios[s] = c / g if g else None
    print(f"final entropy KL-Cov / GRPO per seed: " + ", ".join(f"{s}: {v:.2f}" for s, v in ratios.items()))
    import trl

    result = {"created": time.strftime("%Y-%m-%d %H:%M:%S"), "tag": args.tag, "engine": "trl",
              "trl_version": trl.__version__, "processes": int(os.environ.get("WORLD_SIZE", "1")),
              "torch_threads": __import__("torch").get_num_threads(), "env": env.env, "steps": env.steps,
              "seeds": seeds, "eval_problems": spec.eval_problems, "eval_samples": spec.eval_samples,
              "method_params": {m: spec.method_params.get(m, {}) for m in METHODS}, "eval_before": eval_before,
              "wall_time_s": time.perf_counter() - started_all, "runs": runs, "aggregate": table,
              "paired_kl_cov_minus_grpo": paired, "final_entropy_ratio_kl_cov_over_grpo": ratios}
    path = Path(args.results) / f"trl_mechanism_{args.tag}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")
    print(f"written: {path}")


if __name__ == "__main__":
    main()
