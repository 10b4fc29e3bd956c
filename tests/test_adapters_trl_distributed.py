"""The TRL engine data parallel: 2 gloo processes make the same updates as 1 process on one fixed rollout.

``CovgymGRPOTrainer`` runs TRL's real training loop (``trainer.train()``: its dataloader and sampler, the
generation-batch buffer and mini-batch split, accelerate's DDP wrapping and gradient all-reduce, the optimizer)
with one thing replaced: generation. ``GRPOTrainer._generate_and_score_completions`` returns each process's rows
of one fixed generation batch (16 completions = 4 groups × 4, ragged prompts and completions, each process's
tensors padded to its own widths as TRL pads them) and its rewards, so everything covgym adds runs for real:
``covgym_rollout`` (gathering the processes' rows, scoring, the algorithm's advantages over the whole batch) and
``_compute_loss`` (global token counts, the algorithm's loss with its cross-process reductions, the scaling that
turns DDP's gradient average into a sum).

Two rollouts of 2 mini-batches each: 4 optimizer steps (on-policy, off-policy, and again after ``end_of_step``
adapted a control's state). For every step the loss (summed over processes), the gradient the optimizer sees
(after the all-reduce) and, per rollout, the advantages must equal the single process's; so must the parameters
after the last step (plain SGD, so that the parameter change is the gradient's and not Adam's sign-like step).

TRL cuts mini-batches on each process from that process's rows (each process shuffles its own rows and takes
slice k): with 2 processes mini-batch k is the union of both processes' k-th slices, not the single process's
k-th slice of all rows. The test therefore replaces TRL's random row shuffle by a fixed order, identity with 2
processes and, in the single process, the order that makes its k-th mini-batch the same rows in the same order
as the 2 processes' k-th mini-batch (rank 0's slice, then rank 1's: the order in which covgym's cross-process
gathers see tokens, which Clip-Cov's random choice depends on).
"""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import os
import traceback
from pathlib import Path
from typing import Any

import pytest
import torch

pytestmark = [pytest.mark.skipif(importlib.util.find_spec("trl") is None,
                                 reason="TRL not installed (optional extra): pip install 'covgym[trl]'"),
              pytest.mark.filterwarnings("ignore::FutureWarning"), pytest.mark.filterwarnings("ignore::UserWarning")]

GROUPS, GROUP_SIZE, MINI_BATCHES, ROLLOUTS, WORLD = 4, 4, 2, 2, 2
ROWS = GROUPS * GROUP_SIZE
LR = 0.5  # SGD on a random 1-layer model: large enough that later mini-batches are visibly off-policy
TOLERANCE = 2e-5  # absolute, on losses of order 0.1-1 and gradients whose largest entry is of order 0.1-1
KL_COV = {"kl_cov_ratio": 0.2, "ppo_kl_coef": 1.0}
#: case -> (algorithm, its hyperparameters, max_grad_norm)
CASES = {
    "grpo": ("grpo", {}, 0.0),
    "clip_cov": ("clip_cov", {"clip_cov_ratio": 0.2, "clip_cov_lb": -10.0, "clip_cov_ub": 10.0}, 0.0),
    "kl_cov": ("kl_cov", KL_COV, 0.0),
    # gradient norms are 0.9-1.3 here: clipping at 0.5 acts on every step, with the norm of the summed gradient
    "kl_cov+grad_clip": ("kl_cov", KL_COV, 0.5),
    # a target just under the random model's entropy (≈ 4.62 nats), so that the control's scale c is in (0, 1)
    "grpo+entropy_target": ("grpo+entropy_target", {"entropy_target_value": 4.615, "entropy_target_gain_init": 5.0},
                            0.0),
}


# ---------------------------------------------------------------------------------------------- the fixed rollout
def fixed_generation_batch(pad_token_id: int) -> dict[str, torch.Tensor]:
    """All processes' rows, TRL's layout: left-padded prompts ``[B, P]``, right-padded completions ``[B, C]``."""
    generator = torch.Generator().manual_seed(1234)
    prompt_lengths = torch.randint(2, 7, (ROWS,), generator=generator)
    completion_lengths = torch.randint(2, 9, (ROWS,), generator=generator)
    p, c = int(prompt_lengths.max()), int(completion_lengths.max())
    prompt_ids = torch.full((ROWS, p), pad_token_id, dtype=torch.long)
    prompt_mask = torch.zeros(ROWS, p, dtype=torch.long)
    completion_ids = torch.full((ROWS, c), pad_token_id, dtype=torch.long)
    completion_mask = torch.zeros(ROWS, c, dtype=torch.long)
    for i in range(ROWS):
        n, m = int(prompt_lengths[i]), int(completion_lengths[i])
        prompt_ids[i, p - n:] = torch.randint(3, 60, (n,), generator=generator)
        prompt_mask[i, p - n:] = 1
        completion_ids[i, :m] = torch.randint(3, 60, (m,), generator=generator)
        completion_mask[i, :m] = 1
    rewards = torch.tensor([0.0, 0.25, 1.0])[torch.randint(0, 3, (ROWS,), generator=generator)]
    return {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
            "completion_mask": completion_mask, "rewards": rewards}


def process_rows(batch: dict[str, torch.Tensor], rank: int, world: int) -> dict[str, torch.Tensor]:
    """One process's rows, padded to their own widths (as TRL's generation pads each process's batch)."""
    share = ROWS // world
    rows = slice(rank * share, (rank + 1) * share)
    prompt_width = int(batch["prompt_mask"][rows].sum(1).max())
    completion_width = int(batch["completion_mask"][rows].sum(1).max())
    return {"prompt_ids": batch["prompt_ids"][rows, -prompt_width:].clone(),
            "prompt_mask": batch["prompt_mask"][rows, -prompt_width:].clone(),
            "completion_ids": batch["completion_ids"][rows, :completion_width].clone(),
            "completion_mask": batch["completion_mask"][rows, :completion_width].clone()}


def mini_batch_order(world: int) -> torch.Tensor:
    """The row order replacing TRL's shuffle of a process's generation batch (see the module docstring)."""
    if world == WORLD:
        return torch.arange(ROWS // world)
    share, chunk = ROWS // WORLD, ROWS // WORLD // MINI_BATCHES
    return torch.tensor([r * share + k * chunk + j for k in range(MINI_BATCHES) for r in range(WORLD)
                         for j in range(chunk)])


# ---------------------------------------------------------------------------------------------- one process's run
def run_trl(rank: int, world: int, model_dir: str, case: str, out: str, broken: str = "") -> None:
    """Train ``ROLLOUTS`` rollouts of the fixed batch through ``CovgymGRPOTrainer`` and save what each step did.

    ``broken`` (to show the comparison can fail): ``"local_counts"`` normalises the loss by this process's token
    count instead of the mini-batch's; ``"local_selection"`` makes Clip-Cov/KL-Cov choose tokens (and their
    covariance means) per process instead of over the mini-batch; ``"mean_gradients"`` leaves DDP's average of
    the processes' gradients where the mini-batch's gradient is their sum.
    """
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    if world > 1:  # what accelerate reads besides torchrun's variables (the gloo group is already joined)
        os.environ.update(LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1")
    torch.set_num_threads(1)
    import datasets
    import trl.trainer.grpo_trainer as grpo_module
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from covgym.adapters.trl_check import algorithm_for
    from covgym.adapters.trl_trainer import CovgymGRPOTrainer
    from covgym.models.policy import Policy

    torch.manual_seed(0)
    policy = Policy.from_pretrained(model_dir, show_progress=False)
    batch = fixed_generation_batch(policy.pad_token_id)
    local = process_rows(batch, rank, world)
    algorithm, hyperparameters, max_grad_norm = CASES[case]
    recorded: dict[str, list] = {"advantages": [], "completion_mask": [], "loss": [], "grad": [], "records": []}

    def generate(self, inputs):  # TRL's generation and rewards replaced by the fixed batch
        self._last_rewards, self._last_info = batch["rewards"].clone(), None
        return {key: value.clone() for key, value in local.items()}

    order = mini_batch_order(world)
    GRPOTrainer._generate_and_score_completions = generate
    grpo_module.shuffle_sequence_dict = lambda tensors: {
        key: value[order] if isinstance(value, torch.Tensor) and value.dim() > 0 else value
        for key, value in tensors.items()}
    if broken == "local_selection":
        import covgym.algorithms.token_selection as token_selection

        token_selection.all_reduce_sum = lambda values: values
        token_selection.gather_variable = lambda values: (values, 0)

    class Recording(CovgymGRPOTrainer):
        def covgym_rollout(self, output, started=None):
            gathered = super().covgym_rollout(output, started)
            recorded["advantages"].append(output["advantages"].detach().clone())
            recorded["completion_mask"].append(output["completion_mask"].clone())
            return gathered

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            recorded["loss"].append(float(loss.detach()) / self.accelerator.num_processes)  # this process's share
            return loss / self.accelerator.num_processes if broken == "mean_gradients" else loss

    class GradientCapture(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            recorded["grad"].append({n: p.grad.detach().clone() for n, p in policy.model.named_parameters()
                                     if p.grad is not None})

    per_device = ROWS // (world * MINI_BATCHES)
    args = GRPOConfig(output_dir=f"{out}/trl-w{world}", per_device_train_batch_size=per_device,
                      gradient_accumulation_steps=1, steps_per_generation=MINI_BATCHES, num_iterations=1,
                      num_generations=GROUP_SIZE, max_steps=ROLLOUTS * MINI_BATCHES, optim="sgd", learning_rate=LR,
                      lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=max_grad_norm,
                      max_completion_length=8, use_cpu=True, bf16=False, report_to="none", save_strategy="no",
                      disable_tqdm=True, logging_steps=1, seed=0, remove_unused_columns=False)
    dataset = datasets.Dataset.from_dict({"prompt": [f"prompt {i}" for i in range(4 * GROUPS)]})
    trainer = Recording(model=policy.model, reward_funcs=lambda completions, **_: [0.0] * len(completions),
                        args=args, train_dataset=dataset, processing_class=policy.tokenizer,
                        algorithm=algorithm_for(algorithm, hyperparameters), policy=policy, seed=0, entropy_dynamics_every=0,
                        on_record=lambda record: recorded["records"].append(dict(record)))
    assert trainer.accelerator.num_processes == world
    if broken == "local_counts":
        trainer.accelerator.reduce = lambda tensor, reduction="sum": tensor.clone()
    trainer.add_callback(GradientCapture())
    initial = {n: p.detach().clone() for n, p in policy.model.named_parameters()}
    trainer.train()
    torch.save({**recorded, "initial": initial, "state": json.dumps(trainer.algorithm.state_dict(), sort_keys=True),
                "final": {n: p.detach().clone() for n, p in policy.model.named_parameters()}},
               f"{out}/w{world}-rank{rank}.pt")


def _alone(function, args: tuple, errors: str) -> None:
    try:
        for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            os.environ.pop(key, None)
        os.environ["OMP_NUM_THREADS"] = "1"
        function(0, 1, *args)
    except BaseException:
        Path(errors, "error-single.txt").write_text(traceback.format_exc())
        raise


def run_single(function, args: tuple, directory: Path) -> None:
    """``function(0, 1, *args)`` in a fresh spawned process (accelerate's state is per process)."""
    process = multiprocessing.get_context("spawn").Process(target=_alone, args=(function, args, str(directory)))
    process.start()
    process.join()
    if process.exitcode != 0:
        error = directory / "error-single.txt"
        raise AssertionError(f"the single process failed:\n{error.read_text() if error.exists() else ''}")


def run_both(model_dir: str, case: str, out: Path, broken: str = "") -> tuple[dict, list[dict]]:
    from distributed_helpers import run_ranks

    run_single(run_trl, (model_dir, case, str(out), broken), out)
    run_ranks(run_trl, (model_dir, case, str(out), broken), out, world=WORLD)
    return torch.load(out / "w1-rank0.pt"), [torch.load(out / f"w{WORLD}-rank{r}.pt") for r in range(WORLD)]


def differences(single: dict, ranks: list[dict]) -> dict[str, float]:
    """Largest absolute differences, 1 process against 2 (and the largest magnitudes, for scale)."""
    found = {"loss": 0.0, "grad": 0.0, "advantages": 0.0, "params": 0.0, "ranks_disagree": 0.0,
             "grad_scale": 0.0, "change_scale": 0.0}
    steps = len(single["loss"])
    assert steps == ROLLOUTS * MINI_BATCHES and all(len(r["loss"]) == steps and len(r["grad"]) == steps for r in ranks)
    for step in range(steps):
        found["loss"] = max(found["loss"], abs(sum(r["loss"][step] for r in ranks) - single["loss"][step]))
        want = single["grad"][step]
        for r in ranks:
            assert r["grad"][step].keys() == want.keys()
            found["grad"] = max(found["grad"], max(float((r["grad"][step][n] - want[n]).abs().max()) for n in want))
        found["grad_scale"] = max(found["grad_scale"], max(float(g.abs().max()) for g in want.values()))
    share = ROWS // WORLD
    for rollout in range(ROLLOUTS):
        whole = single["advantages"][rollout]
        for rank, r in enumerate(ranks):
            local, mask = r["advantages"][rollout], r["completion_mask"][rollout]
            want = whole[rank * share:(rank + 1) * share, :local.size(1)]
            found["advantages"] = max(found["advantages"], float(((local - want) * mask).abs().max()))
    for n, want in single["final"].items():
        found["params"] = max(found["params"], float((ranks[0]["final"][n] - want).abs().max()))
        found["ranks_disagree"] = max(found["ranks_disagree"], float((ranks[0]["final"][n] - ranks[1]["final"][n])
                                                                      .abs().max()))
        found["change_scale"] = max(found["change_scale"], float((want - single["initial"][n]).abs().max()))
    return found


def report(name: str, found: dict[str, float]) -> str:
    return (f"{name}: max|Δloss| {found['loss']:.1e}  max|Δgrad| {found['grad']:.1e} (of {found['grad_scale']:.1e})"
            f"  max|Δadv| {found['advantages']:.1e}  max|Δparam| {found['params']:.1e} "
            f"(change {found['change_scale']:.1e})  ranks differ by {found['ranks_disagree']:.1e}")


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_update_as_one(case, random_model_dir, tmp_path):
    single, ranks = run_both(str(random_model_dir), case, tmp_path)
    found = differences(single, ranks)
    print("\n" + report(case, found))
    assert found["grad_scale"] > 1e-3 and found["change_scale"] > 1e-3, "nothing moved: the check would pass anyway"
    assert found["ranks_disagree"] == 0.0
    assert all(found[key] <= TOLERANCE for key in ("loss", "grad", "advantages", "params")), report(case, found)
    assert all(states_close(r["state"], single["state"]) for r in ranks), (single["state"], ranks[0]["state"])
    for key in ("pg_loss", "loss"):  # the logged loss is a process's share of the mini-batch's: summed, as 1 process
        logged = [(record[key], want[key]) for record, want in zip(ranks[0]["records"], single["records"])]
        assert logged and all(abs(got - want) <= 1e-5 for got, want in logged), (key, logged)
    if "entropy_target" in case:  # the control acted: it scaled the contracting tokens, with a state it adapted
        scales = [record["entropy_target_scale"] for record in single["records"]]
        assert any(0.0 < scale < 1.0 for scale in scales), scales


def states_close(got: str, want: str, rtol: float = 1e-5) -> bool:
    """Two algorithm states (JSON) equal up to float rounding (the processes score the rollout in other batches)."""
    def flat(value: Any) -> list:
        if isinstance(value, dict):
            return [item for key in sorted(value) for item in (key, *flat(value[key]))]
        if isinstance(value, list):
            return [item for entry in value for item in flat(entry)]
        return [value]

    a, b = flat(json.loads(got)), flat(json.loads(want))
    return len(a) == len(b) and all(
        x == y or (isinstance(x, float) and isinstance(y, float) and abs(x - y) <= rtol * max(abs(x), abs(y), 1e-12))
        for x, y in zip(a, b))


@pytest.mark.slow
@pytest.mark.parametrize("case, broken", [("grpo", "local_counts"), ("kl_cov", "local_selection"),
                                          ("grpo", "mean_gradients")])
def test_the_comparison_fails_when_the_cross_process_reductions_are_broken(case, broken, random_model_dir, tmp_path):
    """Per-process loss normalisation, KL-Cov's tokens chosen per process, or gradients averaged over processes
    instead of summed, is caught (the single process is unaffected by each: its reductions are over its own
    rows, which are all of them)."""
    single, ranks = run_both(str(random_model_dir), case, tmp_path, broken=broken)
    found = differences(single, ranks)
    print("\n" + report(f"{case}, {broken}", found))
    assert found["grad"] > 50 * TOLERANCE and found["params"] > 50 * TOLERANCE
