"""``covgym train --engine trl``: covgym's config run through ``CovgymGRPOTrainer``, into covgym's run directory.

The run directory is the one covgym's own trainer writes (``config.json`` with the resolved config,
``metrics.jsonl`` with one record per step under covgym's metric names and the held-out evaluation ``eval_*`` of
the final step, ``final_model/``), so ``covgym plot``, ``covgym eval`` and the benchmark summaries read it
unchanged; ``trl/`` holds TRL's own checkpoints and ``trl.json`` the TRL version, the ``GRPOConfig`` used and the
evaluation before training.

How covgym's settings map onto TRL's: one covgym step is one TRL generation cycle of ``prompts_per_step ×
group_size`` completions, cut into ``mini_batches`` optimizer steps (``steps_per_generation``; one mini-batch per
optimizer step, ``gradient_accumulation_steps=1``) for ``ppo_epochs`` passes (``num_iterations``); TRL cuts
mini-batches from shuffled rows (covgym's ``--minibatch-by-group false``, recorded so in ``config.json``). What
TRL cannot honour is refused with one line (``unsupported``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from covgym.adapters.common import completion_text
from covgym.adapters.trl import EnvReward, prompt_dataset
from covgym.models.policy import Policy, SamplingParams
from covgym.train.checkpoint import atomic_write
from covgym.train.config import ModelConfig, OptimConfig, RolloutConfig, TrainConfig, validate
from covgym.train.dead_signal import DeadSignalMonitor
from covgym.train.evaluation import EvalSpec, evaluate, make_eval_envs
from covgym.train.run_dir import check_run_dir, clear_run_dir
from covgym.train.trainer import EVAL_SEED, TrainResult, resolve_config, resolve_device

logger = logging.getLogger("covgym")

#: covgym settings the TRL engine cannot honour: (section, field) -> why. Refused when not at their default.
UNSUPPORTED = {
    ("model", "dtype"): "the TRL engine trains in float32 only",
    ("model", "autocast_bf16"): "bf16 autocast is not wired into the TRL engine",
    ("model", "generation_backend"): "the TRL engine generates with transformers (TRL's own use_vllm is not wired)",
    ("model", "fsdp"): "FSDP is not wired into the TRL engine (accelerate launch gives data parallelism)",
    ("model", "checkpoint_every_n_layers"): "TRL checkpoints every layer (use --gradient-checkpointing alone)",
    ("optim", "warmup_steps"): "covgym's per-step warm-up is not mapped onto TRL's scheduler",
    ("optim", "max_consecutive_skips"): "TRL does not skip non-finite updates",
    ("rollout", "max_turns"): "the TRL engine trains single-turn envs only",
    ("rollout", "max_total_tokens"): "the TRL engine trains single-turn envs only",
}
_DEFAULTS = {"model": ModelConfig(), "optim": OptimConfig(), "rollout": RolloutConfig()}
#: Reporting options the TRL engine does not produce; the written config records them as off.
NOT_PRODUCED = {"samples_per_step": 0, "tensorboard": False}
ENGINE_FILE = "trl.json"


def unsupported(config: TrainConfig) -> str | None:
    """One line naming the first setting of ``config`` the TRL engine cannot honour, or None."""
    for (section, name), why in UNSUPPORTED.items():
        value, default = getattr(getattr(config, section), name), getattr(_DEFAULTS[section], name)
        if value != default:
            return f"--{name.replace('_', '-')} {value!r} is not supported with --engine trl: {why}"
    return None


class GradingReward(EnvReward):
    """``EnvReward`` that also keeps each completion's env ``info`` (``last_info``: whether it was correct), so the
    step's accuracy is the env's own grade, not a threshold on the reward."""

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], env_seed: Sequence[int] | None = None,
                 answer: Sequence[str] | None = None, **unused: Any) -> list[float]:
        if env_seed is None or len(env_seed) != len(completions):
            raise ValueError("the TRL engine's dataset needs one 'env_seed' per completion")
        env = self.grader.env
        rewards, infos = [], []
        for index, completion in enumerate(completions):
            env.reset(seed=int(env_seed[index]))
            _, reward, _, _, info = env.step(completion_text(completion))
            rewards.append(float(reward))
            infos.append({"correct": bool(info.get("correct", False))})
        self.last_info = infos
        return rewards


def world_size() -> int:
    """Processes of the launch (accelerate/torchrun set ``WORLD_SIZE``), 1 otherwise."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def grpo_config(config: TrainConfig, processes: int, cpu: bool):
    """TRL's ``GRPOConfig`` for a resolved covgym config (see the module docstring for the mapping)."""
    from trl import GRPOConfig

    r, o = config.rollout, config.optim
    rows = r.prompts_per_step * r.group_size
    if rows % (o.mini_batches * processes):
        raise ValueError(f"--engine trl cuts each step's {rows} completions (prompts_per_step × group_size) into "
                         f"mini_batches × processes = {o.mini_batches} × {processes} equal parts; choose sizes "
                         "that divide evenly")
    params = config.algo_params
    return GRPOConfig(
        output_dir=str(Path(config.run_dir) / "trl"), seed=config.seed, data_seed=config.seed,
        per_device_train_batch_size=rows // (o.mini_batches * processes), gradient_accumulation_steps=1,
        steps_per_generation=o.mini_batches, num_iterations=o.ppo_epochs, num_generations=r.group_size,
        max_steps=config.steps * o.mini_batches * o.ppo_epochs, learning_rate=o.lr, weight_decay=o.weight_decay,
        max_grad_norm=o.grad_clip, lr_scheduler_type="constant", warmup_steps=0,
        temperature=r.temperature, top_p=r.top_p, top_k=0, max_completion_length=r.max_new_tokens,
        beta=float(params.get("kl_loss_coef", 0.001)) if params.get("use_kl_loss") else 0.0,
        gradient_checkpointing=config.model.gradient_checkpointing, use_cpu=cpu, bf16=False, fp16=False,
        logging_steps=1, report_to="none", disable_tqdm=not config.progress, log_completions=False,
        save_strategy="steps" if config.save_every else "no",
        save_steps=max(config.save_every, 1) * o.mini_batches * o.ppo_epochs, save_total_limit=config.keep_checkpoints,
        save_only_model=False, remove_unused_columns=False, shuffle_dataset=True)


def _write_json(path: Path, data: Any) -> None:
    payload = json.dumps(data, indent=2, sort_keys=True, default=str).encode()
    atomic_write(path, lambda handle: handle.write(payload))


def _resumed_step(checkpoint: str | None, updates_per_step: int) -> int:
    if checkpoint is None:
        return 0
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
    return int(state["global_step"]) // updates_per_step


def _keep_metrics_up_to(path: Path, step: int) -> None:
    """A resumed run keeps only the records of the steps its checkpoint holds."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
    text = ("\n".join(kept) + "\n").encode() if kept else b""
    atomic_write(path, lambda handle: handle.write(text))


def train_with_trl(config: TrainConfig, resume: bool = False, overwrite: bool = False,
                   eval_before: Mapping[str, float] | None = None) -> TrainResult:
    """Train ``config`` through TRL and write covgym's run directory; returns covgym's ``TrainResult``.

    ``eval_before``: the held-out evaluation of the untrained model, when the caller has it already (a benchmark
    shares it between runs of one env); otherwise the main process evaluates before training.
    """
    import covgym.algorithms as algorithms
    from covgym.adapters.common import make_single_turn_env
    from covgym.adapters.trl_trainer import CovgymGRPOTrainer, refusal

    validate(config)
    processes = world_size()
    if processes > 1 and not config.run_dir:
        raise ValueError("under accelerate launch give --run-dir (the default name has the time in it, which "
                         "differs between processes)")
    config = resolve_config(config)
    config = config.replace(optim=dataclasses.replace(config.optim, minibatch_by_group=False), **NOT_PRODUCED)
    validate(config)
    reason = unsupported(config)
    algorithm = algorithms.get(config.algo)(**config.algo_params)
    reason = reason or refusal(algorithm, config.algo)
    if reason:
        raise ValueError(reason)
    env = make_single_turn_env(config.env.env, {**config.env.env_kwargs, "split": "train"})
    if getattr(env, "stop_strings", ()):
        raise ValueError(f"{config.env.env} stops generation at {env.stop_strings!r}, which TRL's generation does "
                         "not do; not supported with --engine trl yet")
    run_dir = Path(config.run_dir)
    main = int(os.environ.get("RANK", "0")) == 0
    check_run_dir(run_dir, config.to_dict(), resume=resume, overwrite=overwrite)
    engine_path = run_dir / ENGINE_FILE
    if resume and not engine_path.exists():
        raise ValueError(f"{run_dir} was not trained with --engine trl; resume it without --engine trl")
    if processes > 1:  # every process has checked the directory before the main one writes into it
        from accelerate import PartialState

        PartialState().wait_for_everyone()
    if main and overwrite:
        clear_run_dir(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    device = resolve_device(config.model.device)
    m, r = config.model, config.rollout
    policy = Policy.from_pretrained(m.model, device="cpu", temperature=r.temperature,
                                    use_chat_template={"auto": None, "on": True, "off": False}[m.chat_template],
                                    show_progress=False, share_prompts=m.share_prompts,
                                    pack_sequences=m.pack_sequences)
    from covgym.models.threads import apply_threads

    apply_threads(m.threads, policy.model, device)
    args = grpo_config(config, processes, cpu=device.type == "cpu")
    sampling = SamplingParams(temperature=r.temperature, top_p=r.top_p, max_new_tokens=r.max_new_tokens)
    eval_spec = EvalSpec(config.env.env, dict(config.env.env_kwargs), config.eval_problems, config.eval_samples,
                         seed=EVAL_SEED, max_turns=r.max_turns, max_total_tokens=r.max_total_tokens,
                         grading_deadline_s=r.grading_deadline_s)
    eval_envs: list = []

    def run_evaluation() -> dict[str, float]:
        if config.eval_problems == 0:
            return {}
        if not eval_envs:
            eval_envs.extend(make_eval_envs(eval_spec, min(64, eval_spec.problems) * eval_spec.samples))
        was_training = policy.model.training
        policy.model.eval()
        result = evaluate(policy, eval_spec, sampling, eval_envs)
        policy.model.train(was_training)
        return result

    from transformers.trainer_utils import get_last_checkpoint

    checkpoint = get_last_checkpoint(args.output_dir) if resume and Path(args.output_dir).is_dir() else None
    updates_per_step = config.optim.mini_batches * config.optim.ppo_epochs
    start_step = _resumed_step(checkpoint, updates_per_step)
    engine: dict[str, Any] = json.loads(engine_path.read_text()) if engine_path.exists() else {}
    if main:
        _write_json(run_dir / "config.json", config.to_dict())
        if start_step == 0:
            engine["eval_before"] = dict(eval_before) if eval_before is not None else run_evaluation()
        import trl

        engine.update(engine="trl", trl_version=trl.__version__, processes=processes,
                      grpo_config={k: v for k, v in args.to_dict().items() if not k.startswith("_")})
        _write_json(engine_path, engine)
        _keep_metrics_up_to(run_dir / "metrics.jsonl", start_step)
    history: list[dict[str, Any]] = []
    monitor = DeadSignalMonitor(config.dead_signal_steps, config.env.env, str(run_dir), tuple(config.plugins))
    metrics_file = open(run_dir / "metrics.jsonl", "a", encoding="utf-8") if main else None  # noqa: SIM115

    def on_record(record: dict[str, Any]) -> None:
        step = record["step"]
        if main and ((config.eval_every and step % config.eval_every == 0) or step == config.steps):
            record.update({f"eval_{key}": value for key, value in run_evaluation().items()})
        history.append(record)
        if not main:
            return
        dead = monitor.update(record)
        if dead:
            logger.warning("warning: %s", dead)
        clean = {k: (None if isinstance(v, float) and v != v else v) for k, v in record.items()}
        metrics_file.write(json.dumps(clean, sort_keys=True) + "\n")
        metrics_file.flush()

    reward = GradingReward(config.env.env, config.env.env_kwargs, split="train")
    dataset = prompt_dataset(config.env.env, num_prompts=config.steps * r.prompts_per_step, seed=config.seed,
                             env_kwargs=config.env.env_kwargs, split="train")
    trainer = CovgymGRPOTrainer(model=policy.model, reward_funcs=reward, args=args, train_dataset=dataset,
                                processing_class=policy.tokenizer, algorithm=algorithm, policy=policy,
                                seed=config.seed, filter_equal_groups=r.filter_equal_groups,
                                entropy_dynamics_every=config.entropy_dynamics_every if config.entropy_dynamics else 0,
                                on_record=on_record)
    if not config.progress:  # TRL prints every log dict when its bar is off; covgym's metrics.jsonl has them
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    try:
        trainer.train(resume_from_checkpoint=checkpoint)
    finally:
        if metrics_file is not None:
            metrics_file.close()
    if main:
        policy.save(run_dir / "final_model")
    trainer.accelerator.wait_for_everyone()
    eval_after = {k[len("eval_"):]: v for k, v in (history[-1] if history else {}).items() if k.startswith("eval_")}
    return TrainResult(run_dir, history, dict(engine.get("eval_before", {})), eval_after)
