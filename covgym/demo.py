"""The README's main job: build (or reuse) the tiny model, train it with GRPO on arithmetic, show before/after."""

from __future__ import annotations

import time

from covgym.train.config import OptimConfig, RolloutConfig, TrainConfig

DEMO_STEPS = 120


def demo_config(steps: int | None = None, run_dir: str = "runs/demo", seed: int = 0) -> TrainConfig:
    """GRPO on ``covgym/Arithmetic-v0`` with the tiny model: 16 prompts × 8 responses, 4 mini-batches a step."""
    return TrainConfig(algo="grpo", steps=steps or DEMO_STEPS, seed=seed, run_dir=run_dir, eval_problems=256,
                       eval_samples=4, rollout=RolloutConfig(prompts_per_step=16, group_size=8, max_new_tokens=8),
                       optim=OptimConfig(lr=1e-4, mini_batches=4))


def run_demo(steps: int | None = None, run_dir: str = "runs/demo", seed: int = 0) -> None:
    from covgym.benchmark.plotting import plot_reward_entropy
    from covgym.models.tiny_model import ensure_tiny_model
    from covgym.train.run_dir import is_taken
    from covgym.train.trainer import Trainer

    started = time.perf_counter()
    print(f"tiny model: {ensure_tiny_model()}")
    build_s = time.perf_counter() - started  # the first demo builds the model; later ones reuse the cache
    if is_taken(run_dir):  # never on top of an earlier demo (or a file): a fresh, time-stamped directory
        run_dir = f"{run_dir}-{time.strftime('%Y%m%d-%H%M%S')}"
    started = time.perf_counter()
    result = Trainer(demo_config(steps, run_dir, seed)).train()
    train_s = time.perf_counter() - started
    figure = plot_reward_entropy(result.run_dir)
    first, last = result.history[0], result.history[-1]
    before, after = result.eval_before, result.eval_after
    print(f"\nGRPO on covgym/Arithmetic-v0 with the tiny model, {len(result.history)} steps in {train_s:.0f} s "
          f"(evaluations included); building or loading the model took {build_s:.0f} s before that")
    print(f"{'':34}{'before':>9}{'after':>9}")
    print(f"{'held-out accuracy (mean@4)':34}{before['accuracy']:>9.3f}{after['accuracy']:>9.3f}")
    print(f"{'held-out pass@4':34}{before['pass@4']:>9.3f}{after['pass@4']:>9.3f}")
    print(f"{'held-out token entropy':34}{before['entropy_mean']:>9.3f}{after['entropy_mean']:>9.3f}")
    print(f"{'training token entropy (first→last)':34}{first['entropy_mean']:>9.3f}{last['entropy_mean']:>9.3f}")
    print(f"\nrun directory: {result.run_dir}\nreward/entropy plot: {figure}")
