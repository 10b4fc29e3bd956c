"""Speed of one GRPO training step, covgym against TRL's ``GRPOTrainer`` doing the same work.

The same work: the built-in tiny model loaded from its local directory, the same 16 arithmetic prompts per step
(covgym's own env seeds for that step), 8 responses each, at most 8 new tokens at temperature 1, old log-probs
scored once, then 4 optimizer steps on mini-batches of 32 sequences (AdamW, lr 1e-4, grad-norm clip 1, no KL,
token-mean loss). Each variant runs in its own fresh subprocess (clean peak memory, same thread count); the first
``--warmup`` steps are dropped and the next ``--steps`` are timed from the wall clock between step ends. The
variants run interleaved ``--rounds`` times and the median round of each is reported (a shared machine's load
changes hit every variant alike).

Phases: generation (sampling, incl. tokenising and decoding), env (grading), scoring (the no-grad old log-prob
pass and advantages), update (the optimizer steps). Peak memory is the worker's kernel high-water mark
``resource.getrusage(RUSAGE_SELF).ru_maxrss``; psutil (when installed) also samples RSS every 10 ms as a check.
Update FLOP/s uses 6 · parameters · tokens (forward + backward) against this machine's float32 matmul FLOP/s.

Usage: ``python benchmarks/speed.py [--steps 20] [--warmup 2] [--rounds 3] [--out benchmarks/results/speed.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

PROMPTS, GROUP, NEW_TOKENS, MINI_BATCHES, LR, SEED = 16, 8, 8, 4, 1e-4, 0
ENV_ID = "covgym/Arithmetic-v0"
VARIANTS = ("covgym", "covgym+dynamics", "covgym-unshared", "trl", "covgym-profile")


# ----------------------------------------------------------------------------------------------- shared helpers
class PeakRSS:
    """Samples this process's RSS every ``interval`` seconds in a thread (psutil); ``peak`` in bytes or None."""

    def __init__(self, interval: float = 0.01) -> None:
        try:
            import psutil
        except ImportError:
            self.process = None
        else:
            self.process = psutil.Process()
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> "PeakRSS":
        if self.process is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self.process is not None:
            self._thread.join()


def max_rss_bytes() -> int:
    """The kernel's peak resident set size of this process (Linux reports KiB, macOS bytes)."""
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value if sys.platform == "darwin" else value * 1024


def matmul_flops(size: int = 2048, repeats: int = 5) -> float:
    """Best-of-``repeats`` float32 FLOP/s of one ``size``² matmul (2·n³ FLOPs) with torch's current threads."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.matmul(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - started)
    return 2.0 * size**3 / best


def step_prompts(step: int) -> list[tuple[str, int]]:
    """The (prompt, env seed) of each group at covgym training step ``step`` (as ``Trainer.rollout`` draws them)."""
    import gymnasium as gym
    import numpy as np

    import covgym.envs  # noqa: F401
    from covgym.trainer import derive_seed

    rng = np.random.default_rng(derive_seed(SEED, step, "envs"))
    seeds = rng.integers(0, 2**31 - 1, size=PROMPTS).tolist()
    env = gym.make(ENV_ID, split="train")
    return [(env.reset(seed=s)[0], s) for s in seeds]


def _phase_means(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: sum(r[key] for r in rows) / len(rows) for key in rows[0]}


# ----------------------------------------------------------------------------------------------- workers
def run_covgym(model_dir: str, steps: int, warmup: int, dynamics: bool, profiler: Any = None,
               share_prompts: bool = True) -> dict[str, Any]:
    from covgym.config import ModelConfig, OptimConfig, RolloutConfig, TrainConfig
    from covgym.trainer import Trainer

    ends: list[float] = []
    records: list[dict[str, Any]] = []

    class TimedTrainer(Trainer):
        def train_step(self, step: int) -> dict[str, Any]:
            if profiler is not None and step > warmup:
                profiler.enable()
            record = super().train_step(step)
            if profiler is not None:
                profiler.disable()
            ends.append(time.perf_counter())
            records.append(record)
            return record

    with tempfile.TemporaryDirectory() as run_dir:
        config = TrainConfig(algo="grpo", steps=warmup + steps, seed=SEED, run_dir=run_dir, eval_problems=0,
                             entropy_dynamics=dynamics, tensorboard=False, progress=False,
                             model=ModelConfig(model=model_dir, device="cpu", share_prompts=share_prompts),
                             rollout=RolloutConfig(prompts_per_step=PROMPTS, group_size=GROUP,
                                                   max_new_tokens=NEW_TOKENS),
                             optim=OptimConfig(lr=LR, mini_batches=MINI_BATCHES))
        trainer = TimedTrainer(config)
        parameters = sum(p.numel() for p in trainer.policy.model.parameters())
        trainer.train()
    timed = records[warmup:]
    per_step = (ends[-1] - ends[warmup - 1]) / steps if warmup else (ends[-1] - ends[0]) / max(steps - 1, 1)
    phases = _phase_means([{"generate": r["time_generate_s"], "env": r["time_env_s"], "score": r["time_score_s"],
                            "update": r["time_update_s"]} for r in timed])
    tokens = sum(r["tokens_per_s"] * r["time_step_s"] for r in timed) / len(timed)
    completion = sum(r["response_length_mean"] for r in timed) / len(timed) * PROMPTS * GROUP
    return {"step_s": per_step, "phases_s": phases, "tokens_per_step": tokens, "completion_tokens_per_step": completion,
            "parameters": parameters, "reward_mean": sum(r["reward_mean"] for r in timed) / len(timed)}


def run_trl(model_dir: str, steps: int, warmup: int) -> dict[str, Any]:
    import gymnasium as gym
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    import covgym.envs  # noqa: F401

    rows = [{"prompt": prompt, "env_seed": seed} for step in range(1, warmup + steps + 1)
            for prompt, seed in step_prompts(step)]
    grader = gym.make(ENV_ID, split="train")

    def reward(prompts: list[str], completions: list[str], env_seed: list[int], **_: Any) -> list[float]:
        rewards = []
        for completion, seed in zip(completions, env_seed):
            grader.reset(seed=seed)
            rewards.append(float(grader.step(completion)[1]))
        return rewards

    calls: dict[str, list[tuple[float, float]]] = {"generate": [], "env": [], "generate_and_score": []}

    def timed(name: str, method: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            result = method(*args, **kwargs)
            calls[name].append((started, time.perf_counter() - started))
            if name == "generate_and_score":
                tokens.append(float(result["prompt_mask"].sum() + result["completion_mask"].sum()))
                completion_tokens.append(float(result["completion_mask"].sum()))
                rewards_seen.append(trainer._metrics["train"]["reward"][-1])
            return result

        return wrapper

    tokens: list[float] = []
    completion_tokens: list[float] = []
    rewards_seen: list[float] = []
    ends: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            ends.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as output_dir:
        args = GRPOConfig(output_dir=output_dir, use_cpu=True, report_to="none", save_strategy="no",
                          logging_strategy="no", learning_rate=LR, lr_scheduler_type="constant", weight_decay=0.0,
                          max_grad_norm=1.0, per_device_train_batch_size=PROMPTS * GROUP // MINI_BATCHES,
                          gradient_accumulation_steps=1, steps_per_generation=MINI_BATCHES, num_generations=GROUP,
                          max_completion_length=NEW_TOKENS, temperature=1.0, top_p=1.0, top_k=0, beta=0.0,
                          loss_type="dapo", scale_rewards="group", shuffle_dataset=False,
                          max_steps=(warmup + steps) * MINI_BATCHES, seed=SEED, disable_tqdm=True,
                          dataloader_num_workers=0, bf16=False, fp16=False)
        model = AutoModelForCausalLM.from_pretrained(model_dir)
        trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=Dataset.from_list(rows),
                              processing_class=AutoTokenizer.from_pretrained(model_dir), callbacks=[StepClock()])
        trainer._generate = timed("generate", trainer._generate)
        trainer._calculate_rewards = timed("env", trainer._calculate_rewards)
        trainer._generate_and_score_completions = timed("generate_and_score", trainer._generate_and_score_completions)
        parameters = sum(p.numel() for p in trainer.model.parameters())
        trainer.train()
    boundary = ends[warmup * MINI_BATCHES - 1] if warmup else ends[0]
    per_step = (ends[-1] - boundary) / (steps if warmup else steps - 1)

    def after(name: str) -> list[float]:
        return [duration for started, duration in calls[name] if started >= boundary]

    generate, env, whole = (sum(after(n)) / len(after(n)) for n in ("generate", "env", "generate_and_score"))
    phases = {"generate": generate, "env": env, "score": whole - generate - env, "update": per_step - whole}
    return {"step_s": per_step, "phases_s": phases, "tokens_per_step": sum(tokens[warmup:]) / steps,
            "completion_tokens_per_step": sum(completion_tokens[warmup:]) / steps, "parameters": parameters,
            "reward_mean": sum(rewards_seen[warmup:]) / steps,
            "trl_version": __import__("trl").__version__}


def profile_covgym(model_dir: str, steps: int, warmup: int) -> dict[str, Any]:
    """cProfile of covgym's training loop: the share of time inside torch's compiled kernels (matmuls, autograd,
    attention) against Python-level work. Timings under the profiler are slower, so this variant has no table row."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    run_covgym(model_dir, steps, warmup, dynamics=False, profiler=profiler)  # profiles the timed steps only
    stats = pstats.Stats(profiler).stats  # (file, line, name) -> (calls, primitive calls, tottime, cumtime, callers)
    total = sum(entry[2] for entry in stats.values())
    kernels = {name: entry[2] for (file, _, name), entry in stats.items() if file == "~" and "torch" in name}
    top = sorted(kernels.items(), key=lambda item: -item[1])[:6]
    return {"profiled_s": total, "torch_kernel_share": sum(kernels.values()) / total,
            "top_kernels": [{"name": name, "share": seconds / total} for name, seconds in top]}


def worker(variant: str, steps: int, warmup: int, out: Path) -> None:
    import torch

    from covgym.tiny_model import ensure_tiny_model

    model_dir = str(ensure_tiny_model(show_progress=False))
    with PeakRSS() as sampler:
        if variant == "trl":
            result = run_trl(model_dir, steps, warmup)
        elif variant == "covgym-profile":
            result = profile_covgym(model_dir, steps, warmup)
        else:
            result = run_covgym(model_dir, steps, warmup, dynamics=variant == "covgym+dynamics",
                                share_prompts=variant != "covgym-unshared")
    result.update(variant=variant, threads=torch.get_num_threads(), peak_rss_bytes=max_rss_bytes(),
                  peak_rss_sampled_bytes=sampler.peak or None)
    out.write_text(json.dumps(result, indent=2))


# ----------------------------------------------------------------------------------------------- parent
def machine() -> dict[str, Any]:
    import torch
    import transformers

    memory = None
    try:
        import psutil

        memory = psutil.virtual_memory().total
    except ImportError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "memory_bytes": memory,
            "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "torch_threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "load_average_at_start": load}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions; the median round is kept")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated subset of " + ", ".join(VARIANTS))
    parser.add_argument("--out", default="benchmarks/results/speed.json")
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 2 or args.warmup < 1 or args.rounds < 1:
        parser.error("--steps must be >= 2, --warmup >= 1 and --rounds >= 1")
    if args.worker:
        worker(args.worker, args.steps, args.warmup, Path(args.worker_out))
        return 0

    from covgym.tiny_model import ensure_tiny_model

    ensure_tiny_model()  # build outside the timed workers
    info = machine()
    info["matmul_flops"] = matmul_flops()
    results: dict[str, Any] = {}
    variants = [v for v in args.variants.split(",") if v]
    if "trl" in variants:
        try:
            import trl  # noqa: F401
        except ImportError:
            results["trl"] = {"skipped": "trl is not installed (pip install 'covgym[trl]')"}
            variants.remove("trl")
    rounds: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for round_index in range(args.rounds):  # interleaved, so a load change on a shared machine hits every variant
        for variant in variants:
            if variant == "covgym-profile" and round_index > 0:
                continue
            with tempfile.NamedTemporaryFile(suffix=".json") as handle:
                command = [sys.executable, __file__, "--worker", variant, "--worker-out", handle.name,
                           "--steps", str(args.steps), "--warmup", str(args.warmup)]
                print(f"speed: round {round_index + 1}/{args.rounds}: {variant} ...", file=sys.stderr)
                completed = subprocess.run(command, capture_output=True, text=True)
                if completed.returncode != 0:
                    print(completed.stderr[-3000:], file=sys.stderr)
                    rounds[variant].append({"failed": completed.stderr.strip().splitlines()[-1:]})
                    continue
                rounds[variant].append(json.loads(Path(handle.name).read_text()))
    for variant, runs in rounds.items():
        timed = sorted((r for r in runs if "step_s" in r), key=lambda r: r["step_s"])
        if timed:  # the round with the median step time stands for the variant; all step times are kept
            results[variant] = {**timed[(len(timed) - 1) // 2], "step_s_rounds": [r["step_s"] for r in runs
                                                                                 if "step_s" in r]}
        elif runs:
            results[variant] = runs[0]
    for result in results.values():
        if "step_s" in result:
            result["tokens_per_s"] = result["tokens_per_step"] / result["step_s"]
            result["update_flops"] = 6.0 * result["parameters"] * result["tokens_per_step"] / result["phases_s"][
                "update"]
            result["update_flops_fraction_of_matmul"] = result["update_flops"] / info["matmul_flops"]
    paired = [t["step_s"] / c["step_s"] for c, t in zip(rounds.get("covgym", []), rounds.get("trl", []))
              if "step_s" in c and "step_s" in t]
    if paired:  # TRL's step time over covgym's, round by round (the two ran back to back)
        info["speedup_rounds"] = paired
        info["speedup_covgym_over_trl"] = sorted(paired)[(len(paired) - 1) // 2] if len(paired) % 2 else (
            sorted(paired)[len(paired) // 2 - 1] + sorted(paired)[len(paired) // 2]) / 2
    payload = {"created": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": info,
               "setup": {"model": "tiny (built-in)", "env": ENV_ID, "prompts_per_step": PROMPTS, "group_size": GROUP,
                         "max_new_tokens": NEW_TOKENS, "optimizer_steps_per_step": MINI_BATCHES, "lr": LR,
                         "timed_steps": args.steps, "warmup_steps": args.warmup, "rounds": args.rounds,
                         "command": "python benchmarks/speed.py " + " ".join(argv or sys.argv[1:])},
               "results": results}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2))
    print(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
