"""The activation budget: its plan fits when anything fits, its memory model matches what a forward saves, and
checkpointing the layers it picks changes no score, entropy or gradient."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from covgym.models.activation_budget import choose_count, estimated_bytes, spread
from covgym.models.prefix_sharing import PrefixGroups
from covgym.train.config import ConfigError, ModelConfig, TrainConfig, validate

sizes = st.integers(0, 10**9)


@given(used=sizes, per_layer=sizes, layer_input=sizes, remaining=st.integers(1, 64), budget=sizes)
def test_the_plan_checkpoints_the_fewest_layers_that_fit(used, per_layer, layer_input, remaining, budget):
    count = choose_count(used, per_layer, layer_input, remaining, budget)
    fits = [c for c in range(remaining + 1) if estimated_bytes(used, per_layer, layer_input, remaining, c) <= budget]
    if fits:
        assert count == min(fits)  # 0 when everything fits; else the least recompute that fits
    else:
        assert count == remaining  # nothing fits: the least memory there is


@given(total=st.integers(0, 200), data=st.data())
def test_spread_picks_that_many_distinct_evenly_spaced_layers(total, data):
    count = data.draw(st.integers(0, total))
    chosen = spread(count, total)
    assert len(set(chosen)) == count and all(0 <= i < total for i in chosen)
    if count:  # no gap between neighbours (or before the first, after the last) wider than one span + 1
        gaps = [b - a for a, b in zip([-1] + chosen, chosen + [total])]
        assert max(gaps) <= total / count + 1


def test_the_estimate_counts_a_recomputed_layer_and_each_checkpointed_input():
    # 4 remaining layers, 2 checkpointed: 2 kept (2·100), 2 inputs (2·10), one recomputed in backward (100)
    assert estimated_bytes(50, 100, 10, 4, 2) == 50 + 200 + 20 + 100
    assert estimated_bytes(50, 100, 10, 4, 0) == 50 + 400
    assert estimated_bytes(50, 100, 10, 4, 1) == 50 + 300 + 10 + 100
    assert estimated_bytes(50, 100, 10, 4, 4) == 50 + 40 + 100  # all checkpointed: inputs + one recompute


def _policy(directory, budget_mb: float):
    from covgym.models.policy import Policy

    return Policy.from_pretrained(str(directory), show_progress=False, activation_budget_mb=budget_mb)


def _uneven_batch(policy, rows: int = 4, width: int = 24):
    generator = torch.Generator().manual_seed(1)
    ids = torch.full((rows, width), policy.pad_token_id)
    mask = torch.zeros(rows, width, dtype=torch.long)
    for row, n in enumerate(torch.randint(width // 2, width + 1, (rows,), generator=generator).tolist()):
        ids[row, :n] = torch.randint(3, policy.model.config.vocab_size, (n,), generator=generator)
        mask[row, :n] = 1
    response = mask.clone()
    response[:, :3] = 0
    return ids, mask, response


def _train_step(policy):
    ids, mask, response = _uneven_batch(policy)
    policy.model.train()
    policy.model.zero_grad(set_to_none=True)
    log_probs, entropies = policy.score(ids, mask, positions=response)
    (log_probs * torch.linspace(-1, 1, ids.shape[1]) + 0.3 * entropies).sum().backward()
    return log_probs.detach(), entropies.detach(), [p.grad.clone() for p in policy.model.parameters()]


def _record_checkpointed_layers(policy) -> list[int]:
    """Installs the budget and returns a list that fills with the index of each layer run under a checkpoint."""
    from covgym.models.activation_budget import decoder_layers

    policy.model.train()
    budget = policy._active_budget()
    ran: list[int] = []
    for index, layer in enumerate(decoder_layers(policy.model)):
        inner = layer._gradient_checkpointing_func

        def recording(*args, _index=index, _inner=inner, **kwargs):
            ran.append(_index)
            return _inner(*args, **kwargs)

        layer._gradient_checkpointing_func = recording
    assert budget is not None
    return ran


def _checkpoint_flags(policy) -> list[bool]:
    from covgym.models.activation_budget import decoder_layers

    return [bool(layer.gradient_checkpointing) for layer in decoder_layers(policy.model)]


def test_an_ample_budget_keeps_everything_and_its_estimate_matches_what_the_forward_saved(four_layer_dir):
    policy = _policy(four_layer_dir, 1024)
    _train_step(policy)
    plan = policy._budget.last
    assert plan.checkpointed_layers == 0 and plan.positions > 0
    # layer 0's bytes extrapolated to all layers vs every saved tensor counted (the final norm is the rest)
    assert plan.measured_bytes > 0
    assert abs(plan.estimate_bytes - plan.measured_bytes) <= 0.15 * plan.measured_bytes
    _train_step(policy)  # now known to be far below the budget: not watched, estimated from the last one
    again = policy._budget.last
    assert again.measured_bytes == 0 and again.checkpointed_layers == 0
    assert again.estimate_bytes == pytest.approx(plan.positions * policy._budget.bytes_per_position, abs=1)


@pytest.mark.parametrize("fraction, checkpointed", [(1e-6, 3), (0.8, None)])
def test_a_tight_budget_checkpoints_layers_and_changes_no_result(four_layer_dir, fraction, checkpointed):
    reference = _train_step(_policy(four_layer_dir, 0))
    unchecked = _policy(four_layer_dir, 1024)
    _train_step(unchecked)
    full = unchecked._budget.last.measured_bytes
    policy = _policy(four_layer_dir, fraction * full / 2**20)
    ran = _record_checkpointed_layers(policy)
    result = _train_step(policy)
    plan = policy._budget.last
    if checkpointed is None:  # in between: some, not all, of the three layers after the first
        assert 1 <= plan.checkpointed_layers < 3 and plan.estimate_bytes <= fraction * full
    else:
        assert plan.checkpointed_layers == checkpointed
    # the layers the plan names are the ones that ran under a checkpoint, never layer 0 (it measures), spread
    assert sorted(set(ran)) == list(plan.checkpointed) == [1 + i for i in spread(plan.checkpointed_layers, 3)]
    assert _checkpoint_flags(policy) == [False] * 4  # switched back on the way out: only this forward recomputes
    torch.testing.assert_close(result[0], reference[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(result[1], reference[1], rtol=0, atol=1e-6)
    assert any(float(g.abs().sum()) > 0 for g in reference[2])
    for ours, theirs in zip(result[2], reference[2]):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)


def test_scoring_without_gradients_and_user_checkpointing_leave_the_budget_alone(four_layer_dir):
    from covgym.models.policy import Policy

    policy = _policy(four_layer_dir, 1e-6)
    ids, mask, response = _uneven_batch(policy)
    with torch.no_grad():
        policy.score(ids, mask, positions=response)
    assert policy._budget is None
    checkpointed = Policy.from_pretrained(str(four_layer_dir), show_progress=False, gradient_checkpointing=True,
                                          activation_budget_mb=1e-6)
    _train_step(checkpointed)
    assert checkpointed._budget is None and _checkpoint_flags(checkpointed) == [True] * 4


def test_a_shared_prompt_layout_over_budget_gives_way_to_one_that_can_checkpoint(four_layer_dir):
    policy = _policy(four_layer_dir, 1e-6)
    _train_step(policy)  # measures bytes per position
    prompt = torch.randint(3, policy.model.config.vocab_size, (10,), generator=torch.Generator().manual_seed(2))
    ids = torch.cat([prompt.repeat(4, 1), torch.randint(3, 50, (4, 3))], dim=1)
    mask = torch.ones_like(ids)
    prompt_lengths = torch.full((4,), 10)
    policy.model.train()
    with torch.no_grad():  # outside training the budget does not apply: sharing pays here
        assert isinstance(policy._layout(ids, mask, prompt_lengths, policy._active_budget()), PrefixGroups)
    assert not isinstance(policy._layout(ids, mask, prompt_lengths, policy._active_budget()), PrefixGroups)


def test_a_negative_budget_is_refused():
    with pytest.raises(ConfigError, match="activation_budget_mb: must be >= 0"):
        validate(TrainConfig(model=ModelConfig(activation_budget_mb=-1)))


def test_the_trainer_logs_how_many_layers_the_budget_checkpointed(tmp_path, four_layer_dir):
    from covgym.train.config import EnvConfig, OptimConfig, RolloutConfig
    from covgym.train.trainer import Trainer

    def run(budget_mb: float) -> dict:
        config = TrainConfig(steps=2, run_dir=str(tmp_path / f"budget-{budget_mb}"), eval_problems=0, progress=False,
                             entropy_dynamics=False, model=ModelConfig(model=str(four_layer_dir),
                                                                       activation_budget_mb=1024),
                             env=EnvConfig(env="covgym/Arithmetic-v0"),
                             rollout=RolloutConfig(prompts_per_step=2, group_size=2, max_new_tokens=4),
                             optim=OptimConfig(lr=1e-4, mini_batches=1))
        trainer = Trainer(config)
        trainer.policy.activation_budget_mb = budget_mb  # below the config's 1 MiB step: these are a few KiB
        return trainer.train().history[-1]

    assert run(1024)["checkpointed_layers"] == 0
    # step 2's forward: step 1 (prompts shared, nothing measured yet) gave the bytes per position
    assert run(1e-6)["checkpointed_layers"] == 3  # every layer after the first
    assert "checkpointed_layers" not in run(0)  # no budget: nothing watched

