"""Checked equal, not assumed: one rollout through covgym's trainer and through the TRL engine, side by side.

``EngineComparison`` holds one covgym ``Trainer`` and one ``CovgymGRPOTrainer`` over two copies of the same model
and one rollout batch (same tokens, same rewards). ``compare(name, **hyperparameters)`` gives each engine a fresh
instance of the algorithm (with the same state and the same random generator seed) and measures, for the first
(on-policy) and a later (off-policy) mini-batch, the largest absolute differences of

- the advantages: covgym's ``Trainer`` path (``algorithm.advantages_and_returns`` on covgym's right-padded
  batch) against the TRL path (``CovgymGRPOTrainer.covgym_rollout`` on TRL's left-padded prompt and completion),
- the loss and its gradient w.r.t. every model parameter: ``Trainer._optimizer_step`` (covgym's own scoring and
  global normalisers; its optimizer step replaced by a capture of the gradients) against
  ``CovgymGRPOTrainer.compute_loss`` followed by ``backward``.

Used by tests/test_adapters_trl_equality.py (which asserts float tolerance) and benchmarks/trl_equality.py (which
prints and stores the table).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import covgym.algorithms as algorithms
from covgym.adapters.trl_batch import rollout_inputs_for_trl, to_completion_layout
from covgym.adapters.trl_trainer import CovgymGRPOTrainer
from covgym.train.config import EnvConfig, ModelConfig, OptimConfig, RolloutConfig, TrainConfig
from covgym.train.trainer import Trainer, derive_seed

#: Added to the rollout's log-probs to make the off-policy mini-batch's ratios differ from 1 (clipping and KL-Cov act).
OFF_POLICY_NOISE = 0.15
MAX_NEW_TOKENS = 8


@dataclass
class Differences:
    """Largest absolute differences between the engines (and the largest magnitudes, for scale)."""

    advantages: float
    loss_on_policy: float
    grad_on_policy: float
    loss_off_policy: float
    grad_off_policy: float
    grad_scale: float

    @property
    def loss(self) -> float:
        return max(self.loss_on_policy, self.loss_off_policy)

    @property
    def grad(self) -> float:
        return max(self.grad_on_policy, self.grad_off_policy)


def algorithm_for(name: str, hyperparameters: dict[str, Any]) -> Any:
    """The algorithm as covgym's ``resolve_config`` builds it (Dr. GRPO's divisor: the response budget)."""
    algorithm = algorithms.get(name)(**hyperparameters)
    if algorithm.loss_agg_mode == "seq-mean-token-sum-norm" and algorithm.loss_scale_factor is None:
        algorithm = algorithms.get(name)(**{**hyperparameters, "loss_scale_factor": float(MAX_NEW_TOKENS)})
    return algorithm


class EngineComparison:
    """Both engines over the model at ``model_path`` and one rollout of ``env`` (``prompts × group`` rows)."""

    def __init__(self, model_path: str | Path, env: str = "covgym/Arithmetic-v0", prompts: int = 4, group: int = 4,
                 seed: int = 0) -> None:
        from trl import GRPOConfig

        from covgym.adapters.trl import prompt_dataset

        self.seed = seed
        self.directory = tempfile.TemporaryDirectory(prefix="covgym-trl-check-")
        config = TrainConfig(algo="grpo", steps=1, seed=seed, run_dir=str(Path(self.directory.name) / "covgym"),
                             eval_problems=0, entropy_dynamics=False, samples_per_step=0, tensorboard=False,
                             progress=False, model=ModelConfig(model=str(model_path), device="cpu"),
                             env=EnvConfig(env), rollout=RolloutConfig(prompts_per_step=prompts, group_size=group,
                                                                       max_new_tokens=MAX_NEW_TOKENS),
                             optim=OptimConfig(lr=1e-4, mini_batches=2, grad_clip=0.0))
        self.covgym = Trainer(config)
        batch, _ = self.covgym.rollout(1)
        generator = torch.Generator().manual_seed(seed)  # rewards with signal in every group, the same for both
        rewards = torch.tensor([0.0, 0.25, 1.0])[torch.randint(0, 3, (batch.batch_size,), generator=generator)]
        noise = OFF_POLICY_NOISE * torch.randn(batch.old_log_probs.shape, generator=generator)
        reference = (batch.old_log_probs + OFF_POLICY_NOISE * torch.randn(batch.old_log_probs.shape,
                                                                         generator=generator)) * batch.response_mask
        self.batch = batch.replace(rewards=rewards, ref_log_probs=reference)  # read by use_kl_loss only
        self.off_policy_old = (batch.old_log_probs + noise) * batch.response_mask
        args = GRPOConfig(output_dir=str(Path(self.directory.name) / "trl"), per_device_train_batch_size=prompts * group,
                          steps_per_generation=2, num_generations=group, max_steps=2, max_grad_norm=0.0,
                          max_completion_length=MAX_NEW_TOKENS, use_cpu=True, bf16=False, report_to="none",
                          save_strategy="no", disable_tqdm=True, seed=seed)
        from covgym.models.policy import Policy

        policy = Policy.from_pretrained(str(model_path), show_progress=False)
        self.trl = CovgymGRPOTrainer(model=policy.model, reward_funcs=lambda completions, **_: [0.0] * len(completions),
                                     args=args, train_dataset=prompt_dataset(env, num_prompts=prompts, seed=seed),
                                     processing_class=policy.tokenizer, algorithm=algorithms.get("grpo")(),
                                     policy=policy, seed=seed, entropy_dynamics_every=0)
        self.trl.model.train()
        self.inputs, self.rows, self.columns = rollout_inputs_for_trl(self.batch, policy.pad_token_id)
        self.inputs["ref_per_token_logps"] = to_completion_layout(reference, self.rows, self.columns,
                                                                  self.inputs["completion_mask"])

    def close(self) -> None:
        self.directory.cleanup()

    def _set(self, trainer: Any, name: str, hyperparameters: dict[str, Any], state: dict[str, Any] | None,
             generator: torch.Generator) -> Any:
        algorithm = algorithm_for(name, hyperparameters)
        if state:
            algorithm.load_state_dict(state)
        algorithm.set_generator(generator)
        trainer.algorithm = algorithm
        return algorithm

    def _covgym_step(self, advantages: torch.Tensor, on_policy: bool) -> tuple[float, dict[str, torch.Tensor]]:
        trainer, captured = self.covgym, {}
        model = trainer.policy.model

        def capture(*args: Any, **kwargs: Any) -> None:
            captured.update({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None})

        trainer.optimizer.step = capture
        mini = self.batch if on_policy else self.batch.replace(old_log_probs=self.off_policy_old)
        metrics = trainer._optimizer_step(mini, advantages, None, on_policy=on_policy)
        del trainer.optimizer.step
        if metrics.get("skipped"):
            raise RuntimeError("covgym's trainer skipped the update (non-finite loss or gradient)")
        return metrics["loss"], captured

    def _trl_step(self, inputs: dict[str, Any], on_policy: bool) -> tuple[float, dict[str, torch.Tensor]]:
        trainer = self.trl
        trainer._step = 0 if on_policy else 1  # the first (on-policy) or the second optimizer step of the rollout
        if not on_policy:
            inputs = {**inputs, "old_per_token_logps": to_completion_layout(
                self.off_policy_old, self.rows, self.columns, inputs["completion_mask"])}
        trainer.model.zero_grad(set_to_none=True)
        loss = trainer.compute_loss(trainer.model, inputs)
        loss.backward()
        grads = {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
        trainer.model.zero_grad(set_to_none=True)
        return float(loss.detach()), grads

    def compare(self, name: str, state: dict[str, Any] | None = None, trl_overrides: dict[str, Any] | None = None,
                **hyperparameters: Any) -> Differences:
        """The largest differences between the engines for algorithm ``name`` (with ``state`` loaded).

        ``trl_overrides`` changes hyperparameters on the TRL side only (to check that the check can fail)."""
        seed = derive_seed(self.seed, 1, "algorithm")
        covgym_generator, trl_generator = torch.Generator(), torch.Generator()
        covgym_algorithm = self._set(self.covgym, name, hyperparameters, state, covgym_generator)
        self._set(self.trl, name, {**hyperparameters, **(trl_overrides or {})}, state, trl_generator)
        advantages, _ = covgym_algorithm.advantages_and_returns(self.batch)
        self.trl._last_rewards, self.trl._last_info = self.batch.rewards.clone(), None
        output = dict(self.inputs)
        self.trl.covgym_rollout(output)  # the TRL path's own scoring and advantages
        mask = self.inputs["completion_mask"]
        advantage_difference = float((to_completion_layout(advantages, self.rows, self.columns, mask)
                                      - output["advantages"]).abs().max())
        found: dict[str, float] = {"advantages": advantage_difference, "grad_scale": 0.0}
        for on_policy, label in ((True, "on_policy"), (False, "off_policy")):
            covgym_generator.manual_seed(seed)
            trl_generator.manual_seed(seed)
            covgym_loss, covgym_grads = self._covgym_step(advantages, on_policy)
            trl_loss, trl_grads = self._trl_step(output, on_policy)
            if covgym_grads.keys() != trl_grads.keys():
                raise RuntimeError(f"the engines' gradients cover different parameters: "
                                   f"{sorted(covgym_grads.keys() ^ trl_grads.keys())[:3]}")
            found[f"loss_{label}"] = abs(covgym_loss - trl_loss)
            found[f"grad_{label}"] = max(float((covgym_grads[n] - trl_grads[n]).abs().max()) for n in covgym_grads)
            found["grad_scale"] = max(found["grad_scale"], max(float(g.abs().max()) for g in covgym_grads.values()))
        return Differences(**found)
