"""Any covgym algorithm inside TRL: ``CovgymGRPOTrainer``, a ``trl.GRPOTrainer`` whose learning rule is covgym's.

TRL keeps what it is good at (generation, batching across processes, the optimizer loop, checkpoints, logging);
covgym supplies the learning rule, through four overrides of TRL's GRPO trainer:

- ``_generate_and_score_completions``: after TRL generated and rewarded a generation batch, the batch of every
  process is gathered into one ``RolloutBatch`` (``covgym.adapters.trl_batch``) and the advantages are the
  algorithm's ``advantages_and_returns`` (its estimator, then its controls), ``[B, C]`` per token. The rollout's
  log-probs and entropies are scored once here, as covgym's trainer scores its rollout.
- ``_compute_loss``: the algorithm's ``policy_loss`` on the mini-batch (token weights and loss terms of its
  controls included), normalised by the mini-batch's global token and sequence counts as covgym's trainer does;
  the first optimizer step of a rollout is on-policy (log π_old is the forward's own, detached).
- after the last optimizer step of a rollout: the step's record under covgym's metric names (rollout and batch
  statistics, averaged loss metrics, the entropy-dynamics probe), the algorithm's ``end_of_step`` on it, and the
  record pushed into TRL's logs. One covgym step is one TRL generation cycle (``steps_per_generation ×
  num_iterations`` optimizer steps, one mini-batch each).
- ``_save_checkpoint`` / ``_load_optimizer_and_scheduler``: the algorithm's state (adapted coefficients) in every
  TRL checkpoint, restored on resume.

The private methods overridden are TRL 1.16's; ``SUPPORTED_TRL`` pins the versions and importing this module under
another one fails with one line. Algorithms that need a critic are refused. Multi-turn envs come in through TRL's
``rollout_func`` (``covgym.adapters.trl_multiturn``): the rows' ``env_seed`` are kept for it (``covgym_env_seeds``),
its ``env_mask`` (TRL's ``tool_mask``) takes env tokens out of the loss, and its ``turns`` are logged.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from covgym.adapters.trl_batch import completion_columns, rollout_batch_from_trl
from covgym.algorithms.base import SHARE_METRICS, AlgorithmCore
from covgym.core.batch import RolloutBatch
from covgym.distributed import parallel
from covgym.measure import training_metrics
from covgym.models.policy import Policy
from covgym.train.dead_signal import signal_statistics
from covgym.train.trainer import derive_seed

#: TRL releases whose private GRPO hooks this module overrides (``_generate_and_score_completions``,
#: ``_compute_loss``, ``_calculate_rewards``, ``_tokenize_prompts``, ``_get_grad_norm``, checkpoint hooks).
SUPPORTED_TRL = ((1, 16),)
#: What the TRL engine gives an algorithm that declares it in ``needs``.
PROVIDED_NEEDS = frozenset({"reference_model", "off_policy_minibatches", "token_entropy"})
#: Metric names TRL logs itself; covgym's metric of the same name stays in metrics.jsonl only.
TRL_OWNED_METRICS = frozenset({"reward", "reward_std", "frac_reward_zero_std", "entropy", "kl", "num_tokens",
                               "step_time", "loss", "grad_norm", "learning_rate", "epoch"})
STATE_FILE = "covgym_state.json"


def check_trl_version(version: str) -> None:
    """One-line ``ImportError`` unless ``version`` is a release these overrides were written against."""
    parts = tuple(int(piece) for piece in version.split(".")[:2] if piece.isdigit())
    if parts not in SUPPORTED_TRL:
        wanted = ", ".join(f"{major}.{minor}.x" for major, minor in SUPPORTED_TRL)
        raise ImportError(f"covgym's TRL engine overrides private GRPOTrainer hooks of TRL {wanted}; TRL {version} "
                          f"is installed: pip install 'trl>=1.16,<1.17'")


import trl  # noqa: E402  (after the helper, which the version check below uses)

check_trl_version(trl.__version__)
from transformers import TrainerCallback  # noqa: E402
from trl import GRPOTrainer  # noqa: E402
from trl.data_utils import is_conversational  # noqa: E402


def refusal(algorithm: AlgorithmCore, name: str) -> str | None:
    """Why the TRL engine cannot run ``algorithm`` (one line), or None."""
    unmet = algorithm.needs - PROVIDED_NEEDS
    if "critic" in unmet:
        return (f"{name} needs a critic (value model, GAE advantages), which the TRL engine does not provide; "
                "train it with --engine covgym")
    if unmet:
        return f"{name} needs {', '.join(sorted(unmet))}, which the TRL engine does not provide"
    return None


class CovgymGRPOTrainer(GRPOTrainer):
    """``trl.GRPOTrainer`` with a covgym algorithm's advantages, loss, step hook and state.

    Args:
        algorithm: an instance of any covgym algorithm (``covgym.algorithms.get(name)(**hyperparameters)``).
        policy: a covgym ``Policy`` over the same model and tokenizer (prompts are encoded as covgym encodes
            them; the entropy probe and evaluations use it).
        seed: the run seed; Clip-Cov's random choice of step ``s`` is seeded from ``(seed, s)`` as in covgym.
        filter_equal_groups: mask out groups whose rewards are all equal (covgym's ``--filter-equal-groups``).
        entropy_dynamics_every: probe predicted vs actual ΔH on every N-th step (0: never).
        on_record: called on every process with each finished step record (covgym's metric names).
        on_rollout: called on every process with each step's scored rollout (every process's rows, TRL's layout:
            left-padded prompts) and its covgym step, before any group filter; ``covgym train --engine trl``
            keeps a few of its rows in samples.jsonl.
        **kwargs: ``GRPOTrainer``'s (``model``, ``reward_funcs``, ``args``, ``train_dataset``, ...).
    """

    def __init__(self, *args: Any, algorithm: AlgorithmCore, policy: Policy, seed: int = 0,
                 filter_equal_groups: bool = False, entropy_dynamics_every: int = 1,
                 on_record: Callable[[dict[str, Any]], None] | None = None,
                 on_rollout: Callable[[RolloutBatch, int], None] | None = None, **kwargs: Any) -> None:
        reason = refusal(algorithm, algorithm.name or type(algorithm).__name__)
        if reason:
            raise ValueError(reason)
        training_args = kwargs.get("args")
        if training_args is not None and training_args.gradient_accumulation_steps != 1:
            raise ValueError("CovgymGRPOTrainer takes one mini-batch per optimizer step: set "
                             "gradient_accumulation_steps=1 (and steps_per_generation to the mini-batches)")
        if "reference_model" in algorithm.needs and training_args is not None and training_args.beta == 0.0:
            raise ValueError("the algorithm adds a KL penalty to a reference model (use_kl_loss): set GRPOConfig "
                             "beta to its kl_loss_coef so that TRL loads the reference model")
        super().__init__(*args, **kwargs)
        self.algorithm = algorithm
        self.covgym_policy = policy
        self.covgym_seed = seed
        self.filter_equal_groups = filter_equal_groups
        self.entropy_dynamics_every = entropy_dynamics_every
        self.on_record = on_record
        self.on_rollout = on_rollout
        self.algorithm.set_generator(torch.Generator())
        self.updates_per_rollout = self.args.steps_per_generation * self.num_iterations
        self._rollout: dict[str, Any] = {}  # the current step's rollout statistics and timing
        self._updates: list[dict[str, float]] = []  # policy_loss metrics of the step's optimizer steps
        self._dynamics: dict[str, float] = {}
        self._probe: tuple | None = None
        self._last_rewards: Tensor | None = None
        self._last_info: list[dict[str, Any]] | None = None
        self.covgym_env_seeds: list[Any] | None = None
        self.add_callback(_StepBoundary(self))

    # ------------------------------------------------------------------ where one covgym step is
    @property
    def covgym_step(self) -> int:
        """The covgym step (1-based) the current optimizer step belongs to."""
        return self.state.global_step // self.updates_per_rollout + 1

    def _update_index(self) -> int:
        """Which optimizer step of its rollout the current micro-batch is (0: the first, on-policy one)."""
        return self._step % self.updates_per_rollout

    # ------------------------------------------------------------------ generation and advantages
    def _tokenize_prompts(self, prompts: list):
        """Plain-text prompts are encoded as covgym encodes them (``Policy.encode_prompt``: the chat template for
        instruct models, no special tokens otherwise), so training sees the prompts evaluation sees."""
        if prompts and not is_conversational({"prompt": prompts[0]}):
            return [self.covgym_policy.encode_prompt(prompt) for prompt in prompts], None, {}
        return super()._tokenize_prompts(prompts)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        weighted = (rewards_per_func * self.reward_weights.to(rewards_per_func.device).unsqueeze(0)).nansum(dim=1)
        self._last_rewards = weighted  # [N] over every process, TRL's order
        info = []
        for index in range(len(completions)):  # "correct" from a grader that reports it (covgym's GradingReward)
            found = [getattr(f, "last_info", None) for f in self.reward_funcs]
            found = [f[index] for f in found if isinstance(f, list) and len(f) == len(completions)]
            info.append(found[0] if found else {})
        from accelerate.utils import gather_object

        self._last_info = gather_object(info)
        return rewards_per_func

    def _gather_rows(self, values: Tensor, pad_value: float, pad_first: bool) -> Tensor:
        """Every process's rows of ``values`` ``[B, L]``, padded to one width, in process order."""
        values = self.accelerator.pad_across_processes(values, dim=1, pad_index=pad_value, pad_first=pad_first)
        return self.accelerator.gather(values)

    def _generate_and_score_completions(self, inputs):
        # the rows' env seeds, for a rollout_func that plays covgym's episodes (covgym.adapters.trl_multiturn)
        self.covgym_env_seeds = [row.get("env_seed") for row in inputs]
        if not self.model.training:
            return super()._generate_and_score_completions(inputs)
        started = time.perf_counter()
        # sampling seeded per step and process, as covgym's trainer does (TRL seeds every process alike once)
        torch.manual_seed(derive_seed(self.covgym_seed, self.covgym_step, "rollout") + self.accelerator.process_index)
        output = super()._generate_and_score_completions(inputs)
        self.covgym_rollout(output, started)
        return output

    def covgym_rollout(self, output: dict[str, Any], started: float | None = None) -> RolloutBatch:
        """Score TRL's generation batch ``output`` and put covgym's advantages ``[B, C]`` and rollout log-probs into
        it (in place); keeps the step's rollout statistics. Needs the rewards of ``_calculate_rewards`` (every
        process's, ``_last_rewards``). Returns the gathered ``RolloutBatch`` of all processes."""
        prompt_ids, prompt_mask = output["prompt_ids"], output["prompt_mask"]
        completion_ids, completion_mask = output["completion_ids"], output["completion_mask"]
        loss_mask = completion_mask * output["tool_mask"] if "tool_mask" in output else completion_mask
        width = completion_ids.size(1)
        with torch.no_grad():  # the rollout's log-probs and entropies, as covgym's trainer scores its rollout
            log_probs, entropies, _ = self._get_per_token_logps_and_entropies(
                self.model, torch.cat([prompt_ids, completion_ids], 1), torch.cat([prompt_mask, completion_mask], 1),
                width, batch_size=self.args.per_device_train_batch_size, compute_entropy=True)
        pad = self._tokenizer.pad_token_id
        gathered = {"prompt_ids": self._gather_rows(prompt_ids, pad, True),
                    "prompt_mask": self._gather_rows(prompt_mask, 0, True),
                    "completion_ids": self._gather_rows(completion_ids, pad, False),
                    "completion_mask": self._gather_rows(completion_mask, 0, False),
                    "loss_mask": self._gather_rows(loss_mask, 0, False),
                    "log_probs": self._gather_rows(log_probs, 0.0, False),
                    "entropies": self._gather_rows(entropies, 0.0, False)}
        ref = output.get("ref_per_token_logps")
        batch = rollout_batch_from_trl(
            gathered["prompt_ids"], gathered["prompt_mask"], gathered["completion_ids"], gathered["loss_mask"],
            gathered["log_probs"], gathered["entropies"], self._last_rewards.float(), self.num_generations,
            completion_mask=gathered["completion_mask"], info=self._last_info,
            ref_log_probs=None if ref is None else self._gather_rows(ref, 0.0, False)).to("cpu")
        step = self.covgym_step
        rollout_metrics = {**training_metrics.rollout_statistics(batch),
                           **signal_statistics(batch.rewards, batch.group_ids)}
        stats = getattr(self.rollout_func, "last_stats", None)  # covgym's episodes (trl_multiturn.EpisodeRollout)
        if stats is not None:
            rollout_metrics.update(turns=float(stats.turns), time_generate_s=stats.time_generate_s,
                                   time_env_s=stats.time_env_s)
        if self.on_rollout is not None:
            self.on_rollout(batch, step)
        if self.filter_equal_groups:
            keep = torch.tensor([float(batch.rewards[batch.group_ids == g].unique().numel() > 1)
                                 for g in batch.group_ids])
            batch = batch.replace(response_mask=batch.response_mask * keep[:, None])
        advantages, _ = self.algorithm.advantages_and_returns(batch)  # [N, P + C]
        self.algorithm.generator.manual_seed(derive_seed(self.covgym_seed, step, "algorithm"))
        rows = slice(self.accelerator.process_index * len(prompt_ids),
                     (self.accelerator.process_index + 1) * len(prompt_ids))
        local = completion_columns(advantages, gathered["prompt_ids"].size(1), width)[rows]
        output["advantages"] = local.to(completion_ids.device)
        output["old_per_token_logps"] = log_probs
        if self.filter_equal_groups:
            output["tool_mask"] = (loss_mask * completion_columns(batch.response_mask, gathered["prompt_ids"].size(1),
                                                                  width)[rows].to(loss_mask)).long()
        self._rollout = {"started": time.perf_counter() if started is None else started, "step": step,
                         "metrics": training_metrics.merge_disjoint(
                             rollout_metrics, training_metrics.batch_statistics(batch, advantages))}
        self._updates, self._dynamics = [], {}
        return batch

    # ------------------------------------------------------------------ the loss
    def _compute_loss(self, model, inputs):
        prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
        mask = completion_mask if "tool_mask" not in inputs else completion_mask * inputs["tool_mask"]
        mask = mask.to(torch.float32)
        training = self.model.training
        on_policy = training and self._update_index() < self.args.gradient_accumulation_steps
        if training:
            self._maybe_probe_before(inputs, mask)
        log_probs, entropies, _ = self._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, completion_ids.size(1), compute_entropy=True)
        old = inputs.get("old_per_token_logps")
        old = log_probs.detach() if on_policy or old is None else old
        counts = self.accelerator.reduce(torch.stack([mask.sum(), (mask.sum(-1) > 0).sum().to(mask.dtype)]),
                                         reduction="sum")
        loss, metrics = self.algorithm.policy_loss(
            log_probs, old, inputs["advantages"], mask, entropy=entropies,
            ref_log_probs=inputs.get("ref_per_token_logps"),
            global_token_count=float(counts[0]), global_seq_count=float(counts[1]))
        if training:
            self._updates.append(metrics)
        # the per-process losses sum to the mini-batch's loss; data parallel averages gradients over processes
        return loss * self.accelerator.num_processes

    def _get_grad_norm(self, model, grad_norm=None):
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        if self._updates and grad_norm is not None:
            self._updates[-1]["grad_norm"] = float(grad_norm)
        return grad_norm

    # ------------------------------------------------------------------ the entropy-dynamics probe
    def _probe_suffix(self) -> str | None:
        """``""`` for the first optimizer step of a probed step, ``"_last"`` for its last one, else None."""
        every = self.entropy_dynamics_every
        if not every or self.covgym_step % every:
            return None
        index = self._update_index()
        return "" if index == 0 else "_last" if index == self.updates_per_rollout - 1 else None

    def _maybe_probe_before(self, inputs: dict[str, Any], mask: Tensor) -> None:
        suffix = self._probe_suffix()
        if suffix is None:
            self._probe = None
            return
        rewards = torch.zeros(len(inputs["prompt_ids"]))
        mini = rollout_batch_from_trl(inputs["prompt_ids"], inputs["prompt_mask"], inputs["completion_ids"], mask,
                                      torch.zeros_like(mask), torch.zeros_like(mask), rewards, 1,
                                      completion_mask=inputs["completion_mask"]).to("cpu")
        advantages = torch.cat([torch.zeros_like(inputs["prompt_ids"], dtype=torch.float32),
                                inputs["advantages"].float() * mask], 1).cpu()
        before = training_metrics.response_logits_sample(self.covgym_policy, mini.to(self.covgym_policy.device))
        self._probe = (suffix, mini, advantages, before)

    def _probe_after(self) -> None:
        if self._probe is None:
            return
        suffix, mini, advantages, before = self._probe
        self._probe = None
        after = training_metrics.response_logits_sample(self.covgym_policy, mini.to(self.covgym_policy.device),
                                                        before.positions)
        change = training_metrics.entropy_change(before, after, advantages, mini)
        self._dynamics.update({f"{key}{suffix}": value for key, value in change.items()})

    # ------------------------------------------------------------------ the end of a covgym step
    def _finish_step(self) -> None:
        """After the rollout's last optimizer step: the record, ``end_of_step``, TRL's logs, ``on_record``."""
        collected = self._updates
        averaged = {key: float(np.mean([m[key] for m in collected if key in m]))
                    for key in sorted({k for m in collected for k in m})}
        averaged = parallel.mean_metrics(averaged, summed=SHARE_METRICS)
        dynamics = parallel.mean_metrics(dict(sorted(self._dynamics.items())))
        step = self._rollout.get("step", self.covgym_step - 1)
        step_metrics = {"step": step, "time_step_s": time.perf_counter() - self._rollout.get("started", 0.0),
                        "lr": float(self._get_learning_rate()),
                        "seed_algorithm": derive_seed(self.covgym_seed, step, "algorithm")}
        record = training_metrics.merge_disjoint(step_metrics, self._rollout.get("metrics", {}), averaged, dynamics)
        record = training_metrics.merge_disjoint(record, self.algorithm.end_of_step(record))
        for key, value in record.items():
            if key not in TRL_OWNED_METRICS and key != "step" and isinstance(value, (int, float)):
                self._metrics["train"][key].append(float(value))
        if self.on_record is not None:
            self.on_record(record)

    # ------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            with open(os.path.join(folder, STATE_FILE), "w", encoding="utf-8") as handle:
                json.dump({"algorithm": self.algorithm.state_dict(), "algorithm_name": self.algorithm.name}, handle)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None:
            path = os.path.join(checkpoint, STATE_FILE)
            if os.path.exists(path):
                with open(path, encoding="utf-8") as handle:
                    self.algorithm.load_state_dict(json.load(handle)["algorithm"])


class _StepBoundary(TrainerCallback):
    """Tells the trainer when an optimizer step happened and when a rollout's last one has."""

    def __init__(self, trainer: CovgymGRPOTrainer) -> None:
        self.trainer = trainer

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.trainer._probe_after()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.trainer.updates_per_rollout == 0:
            self.trainer._finish_step()


__all__ = ["CovgymGRPOTrainer", "PROVIDED_NEEDS", "SUPPORTED_TRL", "check_trl_version", "refusal"]
