"""The registry, hyperparameter defaults (algorithms.md), validation, and the PPO critic."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import covgym.algorithms as algorithms
from covgym.models.critic import Critic

REQUIRED = {"grpo", "dr_grpo", "rloo", "reinforce_pp", "ppo", "clip_higher", "clip_cov", "kl_cov", "entropy_bonus"}

# Defaults from docs/algorithms.md (verl's names and values).
COMMON_DEFAULTS = {"loss_agg_mode": "token-mean", "use_kl_loss": False, "kl_loss_coef": 0.001,
                   "kl_loss_type": "low_var_kl"}
PPO_CLIP = {"clip_ratio": 0.2, "clip_ratio_c": 3.0, "clip_ratio_low": None, "clip_ratio_high": None}
SPECIFIC_DEFAULTS = {
    "grpo": {"norm_adv_by_std_in_grpo": True, "epsilon": 1e-6, **PPO_CLIP},
    "dr_grpo": {"norm_adv_by_std_in_grpo": False, "loss_agg_mode": "seq-mean-token-sum-norm", **PPO_CLIP},
    "rloo": PPO_CLIP, "reinforce_pp": PPO_CLIP,
    "clip_higher": {**PPO_CLIP, "clip_ratio_low": 0.2, "clip_ratio_high": 0.28},
    "clip_cov": {"clip_ratio": 0.2, "clip_cov_ratio": 2e-4, "clip_cov_lb": 1.0, "clip_cov_ub": 5.0},
    "kl_cov": {"kl_cov_ratio": 2e-4, "ppo_kl_coef": 1.0},
    "ppo": {"gamma": 1.0, "lam": 1.0, "cliprange_value": 0.5, **PPO_CLIP},
    "entropy_bonus": {"entropy_coeff": 0.005, **PPO_CLIP},
}


def test_registry_lists_every_required_algorithm():
    assert REQUIRED <= set(algorithms.names())
    assert algorithms.names() == sorted(algorithms.names())
    with pytest.raises(KeyError, match="kl_cov"):  # an unknown name lists the known ones
        algorithms.get("klcov")


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_defaults_match_the_design(name):
    algorithm = algorithms.get(name)()
    expected = {**COMMON_DEFAULTS, **SPECIFIC_DEFAULTS.get(name, {})}
    for field, value in expected.items():
        assert getattr(algorithm, field) == value, f"{name}.{field}"


@pytest.mark.parametrize("name", algorithms.names())
def test_every_algorithm_is_a_documented_dataclass(name):
    cls = algorithms.get(name)
    assert cls.name == name and cls.description and cls.source
    for field in dataclasses.fields(cls):
        assert field.metadata.get("help"), f"{name}.{field.name} has no help text"
    instance = cls(kl_loss_coef=0.3)  # hyperparameters are constructor keyword arguments
    assert instance.to_dict()["kl_loss_coef"] == 0.3
    assert cls.needs_critic == (name == "ppo") == ("critic" in instance.needs)
    assert cls.needs_off_policy_minibatches == (name == "kl_cov") == ("off_policy_minibatches" in instance.needs)


@pytest.mark.parametrize("name, field, value", [
    ("grpo", "clip_ratio", -0.1), ("grpo", "clip_ratio_c", 1.0), ("grpo", "loss_agg_mode", "mean"),
    ("grpo", "kl_loss_type", "k9"), ("entropy_bonus", "entropy_coeff", -1.0), ("grpo", "loss_scale_factor", 0.0),
    ("clip_cov", "clip_cov_ratio", 0.0), ("clip_cov", "clip_cov_lb", 9.0), ("kl_cov", "kl_cov_ratio", 2.0),
    ("kl_cov", "ppo_kl_coef", -1.0), ("ppo", "gamma", 1.5), ("ppo", "cliprange_value", -1.0),
    ("ppo", "critic_lr", 0.0),
])
def test_bad_hyperparameters_raise_a_value_error_naming_the_field(name, field, value):
    with pytest.raises(ValueError, match=field):
        algorithms.get(name)(**{field: value})


def test_policy_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="advantages"):
        algorithms.get("grpo")().policy_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 4),
                                             torch.ones(2, 3))


# ---------------------------------------------------------------------------- critic
def tiny_policy() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)
    return LlamaForCausalLM(config).eval()


def test_critic_values_are_aligned_with_the_batch_convention():
    policy = tiny_policy()
    critic = Critic.from_pretrained(policy).eval()
    ids = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 6, dtype=torch.long)
    values = critic.values(ids, mask)
    assert values.shape == (2, 6) and values.dtype == torch.float32
    assert torch.all(values[:, 0] == 0)
    hidden = policy.model(input_ids=ids).last_hidden_state  # the policy's trunk: the critic starts as a copy
    head = critic.value_head(hidden).squeeze(-1)
    torch.testing.assert_close(values[:, 1:], head[:, :-1], atol=1e-5, rtol=1e-5)
    # value at t is of the state before token t: changing token 3 moves values at positions >= 4 only
    changed = ids.clone()
    changed[:, 3] = (changed[:, 3] + 1) % 50
    other = critic.values(changed, mask)
    torch.testing.assert_close(other[:, :4], values[:, :4])
    assert not torch.allclose(other[:, 4:], values[:, 4:])


def test_critic_ignores_right_padding():
    critic = Critic.from_pretrained(tiny_policy()).eval()
    ids = torch.randint(1, 50, (1, 5), generator=torch.Generator().manual_seed(2))
    padded = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 5, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long)], dim=1)
    torch.testing.assert_close(critic.values(padded, mask)[:, :5], critic.values(ids, torch.ones_like(ids)),
                               atol=1e-5, rtol=1e-5)


def test_critic_owns_its_weights_and_training_it_leaves_the_policy_alone():
    policy = tiny_policy()
    before = {name: p.detach().clone() for name, p in policy.named_parameters()}
    critic = Critic.from_pretrained(policy)
    policy_storage = {p.data_ptr() for p in policy.parameters()}
    assert not any(p.data_ptr() in policy_storage for p in critic.parameters())
    ids = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(3))
    mask = torch.ones(2, 6)
    optimizer = torch.optim.SGD(critic.parameters(), lr=0.1)
    ppo = algorithms.get("ppo")()
    old = critic.values(ids, mask.long()).detach()
    for _ in range(3):
        loss, metrics = ppo.value_loss(critic.values(ids, mask.long()), old, torch.ones(2, 6), mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert {"value_loss", "value_clip_frac", "explained_variance"} <= metrics.keys()
    assert float(loss.detach()) < float(ppo.value_loss(old, old, torch.ones(2, 6), mask)[0])  # it learned
    for name, p in policy.named_parameters():
        assert torch.equal(p, before[name]), name


def test_critic_from_a_model_directory(tmp_path):
    policy = tiny_policy()
    policy.save_pretrained(tmp_path)
    from_directory = Critic.from_pretrained(tmp_path).eval()
    from_model = Critic.from_pretrained(policy).eval()
    from_directory.value_head.load_state_dict(from_model.value_head.state_dict())
    ids = torch.randint(0, 50, (1, 4), generator=torch.Generator().manual_seed(4))
    mask = torch.ones(1, 4, dtype=torch.long)
    torch.testing.assert_close(from_directory.values(ids, mask), from_model.values(ids, mask), atol=1e-5, rtol=1e-5)
