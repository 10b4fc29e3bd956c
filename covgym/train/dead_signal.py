"""Dead learning signal: steps on which no group's rewards differ, so group-relative advantages are all zero.

GRPO, RLOO and their kin learn from reward differences within a group; when every response to every prompt
scores the same (most often: all 0), the update is zero up to noise and a run can go on for hours learning
nothing. Two per-step metrics make that visible (``zero_variance_group_ratio``, ``all_zero_reward``) and
``DeadSignalMonitor`` turns a run of such steps into one warning that names the usual causes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def signal_statistics(rewards: torch.Tensor, group_ids: torch.Tensor) -> dict[str, float]:
    """``zero_variance_group_ratio``: share of groups whose rewards are all equal; ``all_zero_reward``: 1.0 when
    every reward of the step is 0.

    Args:
        rewards: ``[B]`` per-sequence rewards.
        group_ids: ``[B]`` group of each sequence.
    """
    groups = group_ids.unique()
    flat = sum(int(rewards[group_ids == g].unique().numel() == 1) for g in groups)
    return {"zero_variance_group_ratio": flat / max(len(groups), 1),
            "all_zero_reward": float(bool((rewards == 0).all()))}


@dataclass
class DeadSignalMonitor:
    """Counts consecutive steps without reward variance in any group; warns once when ``patience`` is reached
    (and again should the signal return and die again). ``patience`` 0 turns it off."""

    patience: int
    env_id: str = ""
    run_dir: str = ""
    plugins: tuple[str, ...] = ()  # named in the suggested warmstart command, which needs them to find the env
    streak: int = 0
    zero_streak: int = 0

    def update(self, record: dict[str, float]) -> str | None:
        """Feed one step's metrics; returns the warning on the step the streak reaches ``patience``."""
        dead = record.get("zero_variance_group_ratio", 0.0) >= 1.0
        self.streak = self.streak + 1 if dead else 0
        self.zero_streak = self.zero_streak + 1 if dead and record.get("all_zero_reward", 0.0) >= 1.0 else 0
        if not self.patience or self.streak != self.patience:
            return None
        return self.message(record)

    def postfix(self) -> dict[str, str]:
        """For the progress line, while the streak lasts past ``patience``: ``no_signal='7 steps'``."""
        return {"no_signal": f"{self.streak} steps"} if self.patience and self.streak >= self.patience else {}

    def message(self, record: dict[str, float]) -> str:
        step = int(record.get("step", 0))
        first = step - self.streak + 1
        show = f"covgym show {self.run_dir}" if self.run_dir else "covgym show RUN_DIR"
        plugins = "".join(f"--plugin {plugin} " for plugin in self.plugins)
        warmstart = f"covgym warmstart {plugins}--env {self.env_id or 'ID'}"
        if self.zero_streak >= self.streak:
            return (f"no learning signal: every reward was 0 on steps {first}-{step}, so every advantage is zero and "
                    f"the model learns nothing. Likely causes: the answer format (the grader does not find an "
                    f"answer in the responses), the grader itself, or a model too weak for the task. Read the "
                    f"responses and the grader's reasons with `{show}`; make a model that starts right some of the "
                    f"time with `{warmstart}` and train with --model on the directory it prints")
        return (f"no learning signal: on steps {first}-{step} every response to a prompt got the same reward "
                f"(mean {record.get('reward_mean', float('nan')):.3f}), so every group-relative advantage is zero. "
                f"If all are right the task is too easy for this model; otherwise check the grader and the format "
                f"with `{show}`, or raise --temperature or --group-size for more varied responses")
