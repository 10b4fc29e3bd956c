"""The trainer: rollout → advantages → ``ppo_epochs`` × mini-batch updates → metrics → checkpoint.

Every random choice of step ``s`` derives from ``(seed, s)`` (sampling, env seeds, mini-batch order, Clip-Cov's
generator), so any step can be replayed and a resumed run continues exactly where its checkpoint left off.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import covgym.algorithms as algorithms
from covgym.core.batch import RolloutBatch
from covgym.core.metrics import masked_mean
from covgym.distributed import parallel, sharding
from covgym.envs import make_split_env
from covgym.measure import training_metrics
from covgym.models.policy import Policy, SamplingParams
from covgym.models.threads import apply_threads
from covgym.models.tiny_model import DIGITS_MODEL_ALIAS, TINY_MODEL_ALIAS
from covgym.train.checkpoint import (atomic_write, list_checkpoints, load_latest_checkpoint, save_checkpoint,
                                     set_rng_state)
from covgym.train.config import TrainConfig, from_dict, validate
from covgym.train.dead_signal import DeadSignalMonitor, signal_statistics
from covgym.train.evaluation import EvalSpec, evaluate, make_eval_envs
from covgym.train.rollout import collect_rollout
from covgym.train.run_dir import check_run_dir, clear_run_dir
from covgym.train.samples import SampleWriter, episode_records, first_sample_rows, markdown, spread_rows
from covgym.train.warmstart import is_warm_started

logger = logging.getLogger("covgym")

_PURPOSES = {"rollout": 1, "envs": 2, "minibatch": 3, "algorithm": 4}

#: Auto learning rate of the built-in models: one at which GRPO improves held-out accuracy on the model's own
#: task (measured: docs/benchmarks.md); any other model gets 1e-6.
AUTO_LR = {TINY_MODEL_ALIAS: 1e-4, DIGITS_MODEL_ALIAS: 5e-4}
#: Auto optimizer steps per rollout, for every algorithm (KL-Cov and PPO clipping act only off-policy).
AUTO_MINI_BATCHES = 4


#: What the trainer can give an algorithm that declares it in ``needs`` (``covgym.algorithms.NEEDS``): a critic, a
#: frozen reference model, several mini-batches per rollout (a warning otherwise), the per-token entropy.
PROVIDED_NEEDS = frozenset({"critic", "reference_model", "off_policy_minibatches", "token_entropy"})


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. too many non-finite updates); the last good checkpoint is intact."""


#: Every run evaluates on the same held-out problems with the same sampling seed, whatever its own seed: methods
#: and seeds are compared on one problem set, and the evaluation before training is the same for every seed of a
#: sweep (so a benchmark computes it once per environment).
EVAL_SEED = 777_777


def derive_seed(seed: int, step: int, purpose: str) -> int:
    """A 31-bit seed for one purpose at one step, independent across purposes and steps."""
    return int(np.random.SeedSequence([seed, step, _PURPOSES[purpose]]).generate_state(1)[0] & 0x7FFFFFFF)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available here (use --device cpu)")
    return torch.device(name)


def resolve_config(config: TrainConfig) -> TrainConfig:
    """Fill the 'auto' values so the written config is exact.

    The batch, group and evaluation sizes default to what the built-in tiny model trains with in minutes; any other
    model gets sizes that keep a step of a ~100 M-parameter model on a laptop CPU to a minute or so (set them
    explicitly on a GPU). Learning rate, mini-batches and run directory are filled here too.
    """
    optim, rollout = config.optim, config.rollout
    algorithm_class = algorithms.get(config.algo)
    tiny = config.model.model in AUTO_LR or is_warm_started(config.model.model)  # covgym warmstart's too
    if rollout.prompts_per_step == 0:
        rollout = dataclasses.replace(rollout, prompts_per_step=16 if tiny else 8)
    if rollout.group_size == 0:
        rollout = dataclasses.replace(rollout, group_size=8 if tiny else 4)
    eval_problems = config.eval_problems if config.eval_problems >= 0 else (64 if tiny else 16)
    config = config.replace(rollout=rollout, eval_problems=eval_problems)
    if optim.lr == 0.0:
        auto_lr = AUTO_LR.get(config.model.model, AUTO_LR[TINY_MODEL_ALIAS] if tiny else 1e-6)
        optim = dataclasses.replace(optim, lr=auto_lr)
    if optim.mini_batches == 0:  # the same for every algorithm: methods compared at defaults get equal budgets
        batch = config.rollout.prompts_per_step * config.rollout.group_size
        optim = dataclasses.replace(optim, mini_batches=min(AUTO_MINI_BATCHES, batch))
    algo_params = dict(config.algo_params)
    algorithm = algorithm_class(**algo_params)
    if algorithm.loss_agg_mode == "seq-mean-token-sum-norm" and algorithm.loss_scale_factor is None:
        # a constant divisor (Dr. GRPO's MAX_TOKENS) rather than the batch's padded width, which varies by step
        algo_params["loss_scale_factor"] = float(rollout.max_new_tokens)
    config = config.replace(algo_params=algo_params)
    if config.model.fsdp:  # the probe runs on a rank's own rows, so its forwards would differ between ranks
        config = config.replace(entropy_dynamics=False)
    run_dir = config.run_dir or str(Path("runs") / f"{config.algo}-{config.env.env.split('/')[-1]}-"
                                                    f"{time.strftime('%Y%m%d-%H%M%S')}")
    return config.replace(optim=optim, run_dir=run_dir)


def configuration_warnings(config: TrainConfig) -> list[str]:
    """Combinations that are legal but make the chosen method do nothing."""
    algorithm_class = algorithms.get(config.algo)
    notes = []
    needs = algorithm_class(**config.algo_params).needs
    if "off_policy_minibatches" in needs and config.optim.mini_batches * config.optim.ppo_epochs <= 1:
        notes.append(f"{config.algo} has no effect on a fully on-policy mini-batch (log π = log π_old): with one "
                     f"mini-batch and one epoch per rollout it reduces to its base loss; use --mini-batches >= 2")
    return notes


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    eval_before: dict[str, float] = field(default_factory=dict)
    eval_after: dict[str, float] = field(default_factory=dict)


class Trainer:
    """Trains a causal LM policy with one registered algorithm against one environment."""

    def __init__(self, config: TrainConfig, resume: bool = False, overwrite: bool = False) -> None:
        """``resume``: continue the run in ``config.run_dir`` (same config but for its length and reporting);
        ``overwrite``: clear the previous run there first. Without either, the directory must be new or empty."""
        validate(config)
        dynamics_asked = config.entropy_dynamics
        config = resolve_config(config)
        validate(config)  # the resolved sizes too (e.g. mini-batches against an auto batch)
        check_run_dir(config.run_dir, config.to_dict(), resume=resume, overwrite=overwrite)  # before any rank writes
        device = resolve_device(config.model.device)
        self.distributed = parallel.init_from_environment(device)
        self.device = parallel.local_device(device)
        self.rank, self.world_size = parallel.rank(), parallel.world_size()
        if config.model.fsdp and not self.distributed:
            raise ValueError("fsdp: needs several processes (one process holds the whole model anyway); launch "
                             "with torchrun --nproc_per_node N -m covgym train ...")
        if config.model.fsdp and self.rank == 0 and not config.entropy_dynamics and dynamics_asked:
            warnings.warn("entropy_dynamics is turned off under fsdp", stacklevel=2)
        if config.rollout.prompts_per_step % self.world_size:
            raise ValueError(f"prompts_per_step ({config.rollout.prompts_per_step}) must be a multiple of the "
                             f"number of processes ({self.world_size}): each rank rolls out whole groups")
        self.config = config
        if self.distributed:  # every rank must use rank 0's run directory (its default name has a time in it)
            shared = [self.config.run_dir]
            torch.distributed.broadcast_object_list(shared, src=0)
            self.config = self.config.replace(run_dir=shared[0])
        self.is_main = self.rank == 0
        for note in configuration_warnings(self.config):
            if self.is_main:
                warnings.warn(note, stacklevel=2)
        self.run_dir = Path(self.config.run_dir)
        self.resume = resume
        self.overwrite = overwrite
        self.algorithm = algorithms.get(self.config.algo)(**self.config.algo_params)
        self.generator = torch.Generator()
        self.algorithm.set_generator(self.generator)
        unmet = self.algorithm.needs - PROVIDED_NEEDS
        if unmet:  # refused before any model loads, rather than silently not provided
            raise ValueError(f"{self.config.algo} needs {', '.join(sorted(unmet))}, which covgym's trainer does not "
                             f"provide (it provides {', '.join(sorted(PROVIDED_NEEDS))})")
        m = self.config.model
        chat = {"auto": None, "on": True, "off": False}[m.chat_template]
        self.policy = Policy.from_pretrained(m.model, device=self.device, dtype=m.dtype,
                                             temperature=self.config.rollout.temperature, use_chat_template=chat,
                                             gradient_checkpointing=m.gradient_checkpointing,
                                             checkpoint_every_n_layers=m.checkpoint_every_n_layers,
                                             show_progress=self.config.progress, autocast_bf16=m.autocast_bf16,
                                             share_prompts=m.share_prompts, pack_sequences=m.pack_sequences,
                                             activation_budget_mb=m.activation_budget_mb)
        apply_threads(m.threads, self.policy.model, self.device)  # one thread for a small model (models/threads.py)
        self.reference: Policy | None = None
        needs = self.algorithm.needs  # declared by the algorithm's parts; the trainer never probes for methods
        if "reference_model" in needs:
            self.reference = Policy.from_pretrained(m.model, device=self.device, dtype=m.dtype,
                                                    temperature=self.config.rollout.temperature,
                                                    use_chat_template=chat, show_progress=False,
                                                    autocast_bf16=m.autocast_bf16, share_prompts=m.share_prompts,
                                                    pack_sequences=m.pack_sequences)
            self.reference.model.requires_grad_(False)
        self.critic = None
        self.critic_optimizer: torch.optim.Optimizer | None = None
        if "critic" in needs:
            self._build_critic()  # before sharding: the critic copies the policy's trunk and stays replicated
        self._sampler_stale = False
        if m.generation_backend == "vllm":
            from covgym.models.vllm_sampler import VLLMSampler

            self.policy.sampler = VLLMSampler(self.policy.source_path, dtype="bfloat16" if m.autocast_bf16 else m.dtype,
                                              gpu_memory_utilization=m.vllm_gpu_memory, seed=self.config.seed)
        self.fsdp = m.fsdp
        if self.fsdp:
            sharding.shard_layers(self.policy.model)
            self.policy.share_prompts = False  # its extra prefill pass would differ between ranks
            self.policy.synced = True
        o = self.config.optim
        # fused: one pass per tensor; on CPU the default per-tensor loop took 1.3 s a step for SmolLM2-135M (0.2 s
        # fused), a tenth of a training step. FSDP's mixed DTensor/Tensor parameters take the plain loop.
        self.optimizer = torch.optim.AdamW(self.policy.model.parameters(), lr=o.lr, weight_decay=o.weight_decay,
                                           **({"foreach": False} if self.fsdp else {"fused": True}))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: min(1.0, (step + 1) / o.warmup_steps) if o.warmup_steps else 1.0)
        r = self.config.rollout
        self.sampling = SamplingParams(temperature=r.temperature, top_p=r.top_p, max_new_tokens=r.max_new_tokens)
        self.local_prompts = r.prompts_per_step // self.world_size
        batch_size = self.local_prompts * r.group_size
        self.envs = [make_split_env(self.config.env.env, self.config.env.env_kwargs, "train", check=index == 0)
                     for index in range(batch_size)]  # Gymnasium's passive checker once, not once per copy
        self.eval_spec = EvalSpec(self.config.env.env, dict(self.config.env.env_kwargs), self.config.eval_problems,
                                  self.config.eval_samples, seed=EVAL_SEED,
                                  max_turns=r.max_turns, max_total_tokens=r.max_total_tokens,
                                  grading_deadline_s=r.grading_deadline_s)
        self.start_step = 0
        self.consecutive_skips = 0
        self.eval_before: dict[str, float] = {}
        self._tensorboard = None
        self._samples: SampleWriter | None = None
        self._sample_step = 0  # the training step an evaluation follows (0: before training), for its samples
        self.dead_signal = DeadSignalMonitor(self.config.dead_signal_steps, self.config.env.env, str(self.run_dir),
                                             tuple(self.config.plugins))

    # ------------------------------------------------------------------ set-up helpers
    def _build_critic(self) -> None:
        from covgym.models.critic import Critic

        self.critic = Critic.from_pretrained(self.policy.model).to(self.device)
        lr = self.algorithm.critic_lr or self.config.optim.lr  # an algorithm that needs a critic has critic_lr
        self.critic_optimizer = torch.optim.AdamW(self.critic.parameters(), lr=lr)

    def _write_config(self) -> None:
        if not self.is_main:
            return
        payload = json.dumps(self.config.to_dict(), indent=2, sort_keys=True).encode()
        atomic_write(self.run_dir / "config.json", lambda handle: handle.write(payload))

    def _open_metrics(self) -> None:
        """Keep only lines up to the resumed step, so a resumed run never duplicates a step."""
        path = self.run_dir / "metrics.jsonl"
        if not self.is_main:
            self._metrics_file = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115
            return
        if path.exists():
            kept = []
            for line in path.read_text().splitlines():
                try:
                    if json.loads(line).get("step", math.inf) <= self.start_step:
                        kept.append(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash
            text = ("\n".join(kept) + "\n").encode() if kept else b""
            atomic_write(path, lambda handle: handle.write(text))
        self._metrics_file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in train()
        if self.config.samples_per_step:
            self._samples = SampleWriter(self.run_dir, self.config.samples_max_mb, self.start_step)
        try:
            from torch.utils.tensorboard import SummaryWriter

            if self.config.tensorboard:
                self._tensorboard = SummaryWriter(str(self.run_dir / "tensorboard"))
        except ImportError:
            self._tensorboard = None

    def _log(self, record: dict[str, Any]) -> None:
        record = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        self._metrics_file.write(json.dumps(record, sort_keys=True) + "\n")
        self._metrics_file.flush()
        if self._tensorboard is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step" and value is not None:
                    self._tensorboard.add_scalar(key, value, record["step"])

    def _store_samples(self, batch: RolloutBatch, rows: list[int], step: int, split: str) -> None:
        """A few episodes as readable text in samples.jsonl (and TensorBoard), rank 0 only."""
        if self._samples is None or not self.is_main or not rows:
            return
        tokenizer = self.policy.tokenizer
        records = episode_records(batch, lambda i: tokenizer.decode([i]), rows, step, split, self.policy.decode)
        self._samples.write(records)
        if self._tensorboard is not None:
            self._tensorboard.add_text(f"samples/{split}", markdown(records), step)

    def _state(self, step: int) -> dict[str, Any]:
        if self.fsdp:
            model_state, optimizer_state = sharding.full_state(self.policy.model, self.optimizer)
        else:
            model_state, optimizer_state = self.policy.model.state_dict(), self.optimizer.state_dict()
        state = {"model": model_state, "optimizer": optimizer_state,
                 "scheduler": self.scheduler.state_dict(), "consecutive_skips": self.consecutive_skips,
                 "eval_before": self.eval_before, "next_step": step + 1}
        if self.critic is not None:
            state["critic"] = self.critic.state_dict()
            state["critic_optimizer"] = self.critic_optimizer.state_dict()
        algorithm_state = self.algorithm.state_dict()  # coefficients that entropy controls adapt between steps
        if algorithm_state:
            state["algorithm"] = algorithm_state
        return state

    def _save_checkpoint(self, step: int) -> None:
        """Rank 0 writes; under fsdp every rank first helps gather the full state."""
        if self.is_main or self.fsdp:
            state = self._state(step)
            if self.is_main:
                save_checkpoint(self.run_dir, step, state, self.config.keep_checkpoints)

    def _save_final_model(self) -> None:
        if not self.fsdp:
            if self.is_main:
                self.policy.save(self.run_dir / "final_model")
            return
        model_state, _ = sharding.full_state(self.policy.model)
        if self.is_main:  # the gathered, unsharded weights in the model's own dtype
            self.policy.model.save_pretrained(self.run_dir / "final_model", state_dict=model_state)
            self.policy.tokenizer.save_pretrained(self.run_dir / "final_model")

    def _restore(self) -> None:
        state = load_latest_checkpoint(self.run_dir)
        if state is None:
            return
        if self.fsdp:
            sharding.load_full_state(self.policy.model, state["model"], self.optimizer, state["optimizer"])
        else:
            self.policy.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.critic is not None and "critic" in state:
            self.critic.load_state_dict(state["critic"])
            self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        self.algorithm.load_state_dict(state.get("algorithm", {}))
        self.consecutive_skips = state["consecutive_skips"]
        self.eval_before = state.get("eval_before", {})
        self.start_step = state["next_step"] - 1
        self._sampler_stale = True
        set_rng_state(state["rng"])

    # ------------------------------------------------------------------ one step
    def rollout(self, step: int) -> tuple[RolloutBatch, dict[str, Any]]:
        r = self.config.rollout
        env_rng = np.random.default_rng(derive_seed(self.config.seed, step, "envs"))
        problem_seeds = env_rng.integers(0, 2**31 - 1, size=r.prompts_per_step).tolist()
        first = self.rank * self.local_prompts  # this rank's whole groups
        groups = range(first, first + self.local_prompts)
        env_seeds = [problem_seeds[g] for g in groups for _ in range(r.group_size)]  # a group shares its problem
        group_ids = [g for g in groups for _ in range(r.group_size)]
        self.policy.model.eval()
        self._sync_sampler()
        batch, stats = collect_rollout(self.policy, self.envs, env_seeds, group_ids, self.sampling,
                                       seed=derive_seed(self.config.seed, step, "rollout") + self.rank,
                                       max_turns=r.max_turns, max_total_tokens=r.max_total_tokens,
                                       grading_deadline_s=r.grading_deadline_s)
        started = time.perf_counter()
        with torch.no_grad():
            if self.reference is not None:
                ref_log_probs, _ = self.reference.score(batch.input_ids, batch.attention_mask, batch.prompt_lengths,
                                                        positions=batch.response_mask)
                batch = batch.replace(ref_log_probs=ref_log_probs.cpu() * batch.response_mask)
            if self.critic is not None:
                values = self.critic.values(batch.input_ids.to(self.device), batch.attention_mask.to(self.device))
                batch = batch.replace(values=values.float().cpu() * batch.response_mask)
        timings = {"time_generate_s": stats.time_generate_s, "time_env_s": stats.time_env_s,
                   "time_score_s": stats.time_score_s + time.perf_counter() - started, "turns": float(stats.turns),
                   "env_seeds": problem_seeds}  # each group's env seed: enough to replay the step's problems
        return batch, timings

    def _filter_groups(self, batch: RolloutBatch) -> RolloutBatch:
        """Mask out groups whose rewards are all equal (they carry no group-relative signal).

        Rows are kept (masked, not dropped) so that every data-parallel rank still has a batch to step with.
        """
        keep = torch.tensor([float(batch.rewards[batch.group_ids == g].unique().numel() > 1) for g in batch.group_ids])
        return batch.replace(response_mask=batch.response_mask * keep[:, None])

    def update(self, batch: RolloutBatch, step: int) -> dict[str, float]:
        """``ppo_epochs`` passes of mini-batch updates; returns metrics averaged over the optimizer steps and the
        ranks, the loss shares (``SHARE_METRICS``) summed over ranks, so they read as with one process.

        ``batch`` is this rank's shard (rows ``rank·B … (rank+1)·B`` of the global batch). Each pass draws one
        random order of the *global* prompt groups (or rows, see ``minibatch_rows``) and cuts it into
        ``mini_batches`` pieces; a rank trains on its own rows of each piece, so the update does not depend on how
        many ranks share the work.
        """
        o = self.config.optim
        advantages, returns = self.algorithm.advantages_and_returns(batch)  # returns: None without a critic
        batch_metrics = training_metrics.batch_statistics(batch, advantages)
        self.generator.manual_seed(derive_seed(self.config.seed, step, "algorithm"))
        order_rng = torch.Generator().manual_seed(derive_seed(self.config.seed, step, "minibatch"))
        local, first = batch.batch_size, self.rank * batch.batch_size
        collected: list[dict[str, float]] = []
        dynamics: dict[str, float] = {}
        self.policy.model.train()
        for epoch in range(o.ppo_epochs):
            pieces = minibatch_rows(local * self.world_size, self.config.rollout.group_size, o.mini_batches,
                                    order_rng, by_group=o.minibatch_by_group)
            for piece, global_rows in enumerate(pieces):
                mine = global_rows[(global_rows >= first) & (global_rows < first + local)] - first
                mini = batch.select(mine) if mine.numel() else _empty_like_row(batch)
                mini_advantages = advantages[mine] if mine.numel() else advantages[:1] * 0
                mini_returns = None if returns is None else (returns[mine] if mine.numel() else returns[:1] * 0)
                # the probe measures the first (on-policy) optimizer step and the last one, which is off-policy
                # whenever there are several: KL-Cov's penalty and PPO clipping only act there
                last = epoch == o.ppo_epochs - 1 and piece == o.mini_batches - 1
                probe = "" if epoch == 0 and piece == 0 else ("_last" if last else None)
                measure = (self.config.entropy_dynamics and probe is not None and mine.numel() > 0
                           and step % self.config.entropy_dynamics_every == 0)
                before = training_metrics.response_logits_sample(self.policy, mini) if measure else None
                metrics = self._optimizer_step(mini, mini_advantages, mini_returns,
                                               on_policy=epoch == 0 and piece == 0)
                if before is not None and metrics.get("skipped", 0.0) == 0.0:
                    after = training_metrics.response_logits_sample(self.policy, mini, before.positions)
                    change = training_metrics.entropy_change(before, after, mini_advantages, mini)
                    dynamics.update({f"{key}{probe}": value for key, value in change.items()})
                collected.append(metrics)
        averaged = {key: float(np.mean([m[key] for m in collected if key in m]))
                    for key in {k for m in collected for k in m}}
        averaged["skipped_updates"] = float(sum(m.get("skipped", 0.0) for m in collected))
        averaged.pop("skipped", None)
        metrics = training_metrics.merge_disjoint(batch_metrics, averaged, dynamics)
        return parallel.mean_metrics(metrics, summed=algorithms.SHARE_METRICS)  # the same on every rank

    def _optimizer_step(self, mini: RolloutBatch, advantages: torch.Tensor, returns: torch.Tensor | None,
                        on_policy: bool = False) -> dict[str, float]:
        """One guarded optimizer step: a non-finite loss or gradient skips it and leaves the weights unchanged.

        ``on_policy``: the weights are still those that sampled the rollout, so log π_old is this forward's own
        (detached): the ratio is exactly 1, whether the rollout's log-probs came from the sampler or a scoring pass.

        Normalisers are global token/sequence counts and gradients are summed over ranks; the skip decision is
        taken jointly, so every rank makes the same number of collective calls.
        """
        device = self.device
        mask = mini.response_mask.to(device)
        tokens = parallel.sum_scalar(float(mask.sum()))
        sequences = parallel.sum_scalar(float((mask.sum(-1) > 0).sum()))
        log_probs, entropy = self.policy.score(mini.input_ids, mini.attention_mask, mini.prompt_lengths,
                                               positions=mini.response_mask)
        old_log_probs = log_probs.detach() if on_policy else mini.old_log_probs.to(device)
        loss, metrics = self.algorithm.policy_loss(
            log_probs, old_log_probs, advantages.to(device), mask, entropy=entropy,
            ref_log_probs=None if mini.ref_log_probs is None else mini.ref_log_probs.to(device),
            global_token_count=tokens, global_seq_count=sequences)
        self.optimizer.zero_grad(set_to_none=True)
        if parallel.sum_scalar(0.0 if torch.isfinite(loss) else 1.0) > 0:
            return self._skip(metrics, f"non-finite loss ({float(loss.detach())})")
        loss.backward()
        parameters = [p for p in self.policy.model.parameters() if p.requires_grad]
        if self.fsdp:  # FSDP reduced the sharded layers' gradients itself
            parallel.sum_gradients([p for p in parameters if not sharding.is_sharded(p)])
            sharding.restore_gradient_sums(parameters)
            grad_norm = sharding.clip_gradients(parameters, self.config.optim.grad_clip)
        else:
            parallel.sum_gradients(parameters)
            grad_norm = torch.nn.utils.clip_grad_norm_(parameters, self.config.optim.grad_clip or float("inf"))
        if not torch.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            return self._skip(metrics, f"non-finite gradient norm ({float(grad_norm)})")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)  # not held through sampling and scoring (a model's size)
        self._sampler_stale = True
        self.consecutive_skips = 0
        metrics["grad_norm"] = float(grad_norm)
        plan = self.policy.activation_plan
        if plan is not None:  # the activation budget watched this step's forward
            metrics["checkpointed_layers"] = float(plan.checkpointed_layers)
        if self.critic is not None and returns is not None:
            metrics.update(self._critic_step(mini, returns, tokens, sequences))
        return metrics

    def _critic_step(self, mini: RolloutBatch, returns: torch.Tensor, tokens: float, sequences: float
                     ) -> dict[str, float]:
        mask = mini.response_mask.to(self.device)
        values = self.critic.values(mini.input_ids.to(self.device), mini.attention_mask.to(self.device))
        loss, metrics = self.algorithm.value_loss(values, mini.values.to(self.device), returns.to(self.device), mask,
                                                  global_token_count=tokens, global_seq_count=sequences)
        self.critic_optimizer.zero_grad(set_to_none=True)
        if parallel.sum_scalar(0.0 if torch.isfinite(loss) else 1.0) > 0:  # jointly: the ranks all-reduce next
            return {"critic_skipped": 1.0}
        loss.backward()
        parallel.sum_gradients(list(self.critic.parameters()))
        torch.nn.utils.clip_grad_norm_(self.critic.parameters(), self.config.optim.grad_clip or float("inf"))
        self.critic_optimizer.step()
        return metrics

    def _skip(self, metrics: dict[str, float], reason: str) -> dict[str, float]:
        self.consecutive_skips += 1
        logger.warning("skipped an update: %s (%d in a row)", reason, self.consecutive_skips)
        if self.consecutive_skips >= self.config.optim.max_consecutive_skips:
            saved = list_checkpoints(self.run_dir)
            kept = (f"the checkpoint of step {saved[-1][0]} in {self.run_dir / 'checkpoints'} is intact" if saved
                    else f"no checkpoint was written yet in {self.run_dir}")
            raise TrainingError(f"{self.consecutive_skips} consecutive updates skipped (last: {reason}); stopping. "
                                f"{kept[0].upper() + kept[1:]}; lower --lr or check the reward and model")
        return {**{k: v for k, v in metrics.items() if math.isfinite(v)}, "skipped": 1.0}

    # ------------------------------------------------------------------ the loop
    def evaluate(self) -> dict[str, float]:
        """Held-out evaluation on rank 0 (on every rank under fsdp, whose forwards are collective)."""
        if self.config.eval_problems == 0 or not (self.is_main or self.fsdp):
            return {}
        if not hasattr(self, "_eval_envs"):
            self._eval_envs = make_eval_envs(self.eval_spec, min(64, self.eval_spec.problems) * self.eval_spec.samples)
        self.policy.model.eval()
        self._sync_sampler()
        samples: list[RolloutBatch] = []
        result = evaluate(self.policy, self.eval_spec, self.sampling, self._eval_envs,
                          first_batch_out=samples if self._samples is not None else None)
        if samples:  # one row per problem: each held-out problem's first sample
            rows = first_sample_rows(samples[0].batch_size, self.eval_spec.samples, self.config.samples_per_step)
            self._store_samples(samples[0], rows, self._sample_step, "test")
        return result

    def _sync_sampler(self) -> None:
        """A separate sampling engine (vLLM) gets the weights of the last update before it samples again."""
        if self.policy.sampler is not None and self._sampler_stale:
            self.policy.sampler.load_weights(self.policy.model.state_dict().items())
            self._sampler_stale = False

    def train(self) -> TrainResult:
        """Run the configured number of steps; returns the per-step history and evaluations."""
        from tqdm.auto import tqdm

        torch.manual_seed(self.config.seed)
        if self.overwrite and self.is_main:
            clear_run_dir(self.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.resume:
            self._restore()
        self._write_config()
        self._open_metrics()
        history: list[dict[str, Any]] = []
        try:
            if self.start_step == 0:
                self.eval_before = self.evaluate()
            bar = tqdm(range(self.start_step + 1, self.config.steps + 1), desc=f"{self.config.algo}",
                       initial=self.start_step, total=self.config.steps,
                       disable=not (self.config.progress and self.is_main))
            for step in bar:
                record = self.train_step(step)
                self._sample_step = step
                if (self.config.eval_every and step % self.config.eval_every == 0) or step == self.config.steps:
                    record.update({f"eval_{k}": v for k, v in self.evaluate().items()})
                with warnings.catch_warnings():  # a skipped update means the optimizer did not step this time
                    warnings.simplefilter("ignore", UserWarning)
                    self.scheduler.step()
                self._log(record)
                history.append(record)
                dead = self.dead_signal.update(record)
                if dead and self.is_main:
                    logger.warning("warning: %s", dead)
                bar.set_postfix(reward=f"{record['reward_mean']:.2f}", entropy=f"{record['entropy_mean']:.3f}",
                                **self.dead_signal.postfix())
                if (self.config.save_every and step % self.config.save_every == 0) or step == self.config.steps:
                    self._save_checkpoint(step)
            self._save_final_model()
            parallel.barrier()
        finally:
            self._metrics_file.close()
            if self._tensorboard is not None:
                self._tensorboard.close()
        eval_after = {k[len("eval_"):]: v for k, v in (history[-1] if history else {}).items()
                      if k.startswith("eval_")}
        return TrainResult(self.run_dir, history, self.eval_before, eval_after)

    def train_step(self, step: int) -> dict[str, Any]:
        started = time.perf_counter()
        batch, timings = self.rollout(step)
        rollout_metrics = {**training_metrics.rollout_statistics(batch),
                           **signal_statistics(batch.rewards, batch.group_ids)}
        if self.config.samples_per_step and step % self.config.samples_every == 0:
            self._store_samples(batch, spread_rows(batch.group_ids.tolist(), self.config.samples_per_step), step,
                                "train")
        if self.config.rollout.filter_equal_groups:
            batch = self._filter_groups(batch)
        update_started = time.perf_counter()
        update_metrics = self.update(batch, step)
        time_update = time.perf_counter() - update_started
        elapsed = time.perf_counter() - started
        tokens = parallel.sum_scalar(float(batch.attention_mask.sum()))
        rollout_metrics = parallel.mean_metrics(rollout_metrics)
        timings = {**parallel.mean_metrics({k: v for k, v in timings.items() if k != "env_seeds"}),
                   "env_seeds": timings["env_seeds"]}
        step_metrics = {"step": step, "time_update_s": time_update, "time_step_s": elapsed,
                        "tokens_per_s": tokens / max(elapsed, 1e-9), "lr": self.scheduler.get_last_lr()[0],
                        "seed_rollout": derive_seed(self.config.seed, step, "rollout"),
                        "seed_envs": derive_seed(self.config.seed, step, "envs"),
                        "seed_algorithm": derive_seed(self.config.seed, step, "algorithm")}
        record = training_metrics.merge_disjoint(step_metrics, rollout_metrics, update_metrics, timings)
        # controls that adapt a coefficient between steps see the step's (rank-averaged) metrics, on every rank
        return training_metrics.merge_disjoint(record, self.algorithm.end_of_step(record))


def minibatch_rows(rows: int, group_size: int, pieces: int, generator: torch.Generator, by_group: bool = True
                   ) -> list[torch.Tensor]:
    """The global rows of each mini-batch of one pass, each sorted.

    By group (the default): whole prompt groups (rows ``g·G … g·G+G−1``) are shuffled and cut into ``pieces``, so
    each mini-batch holds a few complete groups and prefix sharing computes each prompt once; with random rows a
    mini-batch of 32 rows from 16 groups of 8 recomputes about 14 prompts. When there are fewer groups than pieces
    (or ``by_group`` is off) rows are shuffled instead.
    """
    groups = rows // group_size if group_size > 0 and rows % group_size == 0 else 0
    if by_group and groups >= pieces:
        order = torch.randperm(groups, generator=generator)
        cuts = torch.tensor_split(order, pieces)
        return [(cut[:, None] * group_size + torch.arange(group_size)).flatten().sort().values for cut in cuts]
    return [cut.sort().values for cut in torch.tensor_split(torch.randperm(rows, generator=generator), pieces)]


def load_run_config(run_dir: str | Path) -> TrainConfig:
    """The resolved config a run directory was written with (for ``--resume``)."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise ValueError(f"{str(run_dir)!r} is not a run directory (no config.json)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is corrupt ({error.msg}); cannot resume from it") from None
    return from_dict(data)


def _empty_like_row(batch: RolloutBatch) -> RolloutBatch:
    """One row of ``batch`` with nothing to train on: keeps a rank in step when its share of a piece is empty."""
    row = batch.select([0])
    return row.replace(response_mask=torch.zeros_like(row.response_mask))
