"""Across data-parallel ranks, Clip-Cov/KL-Cov selection and the batch-wide advantage estimators (REINFORCE++ and
GAE whitening, GPG's α) equal their single-process results over the concatenated batch.

Two CPU processes (gloo) each hold a shard of rows; every result is compared with one process on all rows.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from distributed_helpers import run_ranks

import covgym.algorithms as algorithms
from covgym.algorithms import functional as F
from covgym.core.batch import RolloutBatch

CASES = [(seed, b, t, split) for seed, (b, t, split) in enumerate([(4, 9, 2), (5, 7, 1), (3, 12, 2), (6, 5, 3),
                                                                     (2, 8, 1)])]


def case_inputs(seed: int, b: int, t: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    old = -3 * torch.rand(b, t, generator=g, dtype=torch.float64)
    mask = (torch.rand(b, t, generator=g) < 0.7).double()
    if seed == 4:
        mask[:1] = 0  # rank 0 holds no response token at all
    return {"log_probs": old + 0.4 * torch.randn(b, t, generator=g, dtype=torch.float64), "old_log_probs": old,
            "advantages": 2 * torch.randn(b, t, generator=g, dtype=torch.float64), "response_mask": mask}


def case_batch(seed: int, b: int, t: int, split: int) -> RolloutBatch:
    """A rollout batch whose groups never straddle the split (each rank rolls out whole groups)."""
    g = torch.Generator().manual_seed(seed + 100)
    inputs = case_inputs(seed, b, t)
    rows = torch.arange(b)
    groups = torch.where(rows < split, rows // 2, 100 + (rows - split) // 2)
    return RolloutBatch(input_ids=torch.zeros(b, t, dtype=torch.long),
                        attention_mask=torch.ones(b, t, dtype=torch.long),
                        response_mask=inputs["response_mask"], old_log_probs=inputs["old_log_probs"],
                        rewards=torch.randint(0, 3, (b,), generator=g).double(), group_ids=groups,
                        entropies=torch.zeros(b, t, dtype=torch.float64),
                        values=torch.randn(b, t, generator=g, dtype=torch.float64))


def advantages_for(batch: RolloutBatch) -> dict[str, torch.Tensor]:
    out = {name: algorithms.get(name)().advantages(batch) for name in ("reinforce_pp", "gpg", "grpo", "rloo")}
    out["ppo"], out["ppo_returns"] = algorithms.get("ppo")().advantages_and_returns(batch)
    return out


def results_for(inputs: dict[str, torch.Tensor], global_tokens: float) -> dict[str, torch.Tensor]:
    out = {"covariance": F.covariance_terms(inputs["log_probs"], inputs["advantages"], inputs["response_mask"])}
    for name, params in (("clip_cov", {"clip_cov_ratio": 0.15, "clip_cov_lb": -0.5}),
                         ("kl_cov", {"kl_cov_ratio": 0.2})):
        algorithm = algorithms.get(name)(**params)
        algorithm.set_generator(torch.Generator().manual_seed(7))  # the same state on every rank
        out[f"{name}_selected"] = algorithm.token_loss(**inputs)[1]["selected"]
        algorithm.set_generator(torch.Generator().manual_seed(7))
        out[f"{name}_loss"] = algorithm.policy_loss(**inputs, global_token_count=global_tokens)[0].detach()
    return out


def worker(rank: int, world: int, directory: str) -> None:
    saved = {}
    for seed, b, t, split in CASES:
        inputs = case_inputs(seed, b, t)
        rows = slice(0, split) if rank == 0 else slice(split, b)
        shard = {key: value[rows] for key, value in inputs.items()}
        saved[seed] = results_for(shard, float(inputs["response_mask"].sum()))
        batch = case_batch(seed, b, t, split)
        saved[seed].update(advantages_for(batch.select(list(range(b))[rows])))
    torch.save(saved, Path(directory) / f"rank{rank}.pt")


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_selection_over_two_ranks_equals_selection_over_the_whole_mini_batch(tmp_path):
    run_ranks(worker, (str(tmp_path),), tmp_path)
    shards = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for seed, b, t, split in CASES:
        inputs = case_inputs(seed, b, t)
        whole = results_for(inputs, float(inputs["response_mask"].sum()))
        whole.update(advantages_for(case_batch(seed, b, t, split)))
        for key in ("covariance", "clip_cov_selected", "kl_cov_selected", "reinforce_pp", "gpg", "grpo", "rloo",
                    "ppo", "ppo_returns"):
            torch.testing.assert_close(torch.cat([shards[0][seed][key], shards[1][seed][key]]), whole[key],
                                       msg=f"{key} differs for case {seed}")
        assert int(whole["clip_cov_selected"].sum()) > 0  # the cases exercise the selection
        for key in ("clip_cov_loss", "kl_cov_loss"):  # per-rank losses with the global count sum to the whole
            torch.testing.assert_close(shards[0][seed][key] + shards[1][seed][key], whole[key])
