"""Entropy controls inside verl's policy losses: compositions registered as one loss, and the refusals.

``register_verl_policy_losses(["grpo+clip_cov+covariance_kernel"])`` registers the composition as one verl loss;
its loss part and its controls' token weights and loss terms act inside verl's call, so it must equal covgym's own
``policy_loss`` on the same tensors. Controls that need what verl's calls do not give (a step hook, the token
entropy, advantages from the rollout's entropies) are refused at registration with a one-line reason. The real-verl
tests run where verl is installed (``make verl-check``).
"""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from verl_standin import builtin_part_names, install, make_core_algos

import covgym.algorithms as algorithms
from covgym.adapters import verl as adapter
from covgym.adapters.verl_support import ROLLOUT_ENTROPY, STEP_HOOK, TOKEN_ENTROPY

#: compositions whose controls act inside verl's loss call (covariance_kernel: token weights from log-probs and
#: advantages; entropy_bonus: verl's own actor.entropy_coeff)
COMPOSITIONS = ["grpo+covariance_kernel", "grpo+clip_cov+covariance_kernel", "kl_cov+covariance_kernel",
                "grpo+gspo+covariance_kernel", "grpo+cispo+covariance_kernel"]
SELECTING = {"clip_cov_ratio": 0.3, "clip_cov_lb": -10.0, "clip_cov_ub": 10.0, "kl_cov_ratio": 0.3,
             "ppo_kl_coef": 0.7}


@pytest.fixture
def fake_verl(monkeypatch):
    return install(monkeypatch, make_core_algos())


def config(**policy_loss) -> SimpleNamespace:
    """verl's actor config as the losses read it (the entropy bonus and reference KL must not be used)."""
    return SimpleNamespace(clip_ratio=0.2, clip_ratio_low=None, clip_ratio_high=None, clip_ratio_c=3.0,
                           entropy_coeff=0.01, use_kl_loss=True, kl_loss_coef=0.5, global_batch_info={},
                           policy_loss={"loss_mode": "vanilla", **SELECTING, **policy_loss})


def inputs(seed: int, b: int = 5, t: int = 8):
    generator = torch.Generator().manual_seed(seed)
    old = -torch.rand(b, t, generator=generator) * 3  # [B, T]
    log_prob = old + (torch.rand(b, t, generator=generator) - 0.5)
    advantages = torch.randn(b, 1, generator=generator).expand(b, t) + 0.3 * torch.randn(b, t, generator=generator)
    lengths = torch.randint(1, t + 1, (b,), generator=generator)
    mask = torch.arange(t)[None] < lengths[:, None]  # [B, T] bool, as verl passes it
    return old, log_prob, advantages, mask


def through(function, old, log_prob, advantages, mask, mode="token-mean"):
    leaf = log_prob.detach().clone().requires_grad_(True)
    loss, metrics = function(old_log_prob=old, log_prob=leaf, advantages=advantages, response_mask=mask,
                             loss_agg_mode=mode, config=config())
    loss.backward()
    return loss.detach(), leaf.grad, metrics


def covgyms_own(name, old, log_prob, advantages, mask, mode="token-mean"):
    fields = {field.name for field in algorithms.get(name).hyperparameters()}
    kwargs = {k: v for k, v in {**SELECTING, "clip_ratio_c": 3.0}.items() if k in fields}
    algorithm = algorithms.get(name)(loss_agg_mode=mode, **kwargs)
    algorithm.set_generator(torch.Generator().manual_seed(0))  # the adapter's seed 0 at rank 0
    leaf = log_prob.detach().clone().requires_grad_(True)
    loss, _ = algorithm.policy_loss(leaf, old, advantages, mask.float())
    loss.backward()
    return loss.detach(), leaf.grad


# ---------------------------------------------------------------------------------------------- the stand-in
@pytest.mark.parametrize("name", COMPOSITIONS)
@settings(deadline=None, max_examples=10, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), mode=st.sampled_from(["token-mean", "seq-mean-token-mean"]))
def test_a_composition_registered_as_one_loss_equals_covgyms_policy_loss(fake_verl, name, seed, mode):
    assert adapter.register_verl_policy_losses([name]) == [f"covgym_{name}"]
    old, log_prob, advantages, mask = inputs(seed)
    loss, grad, metrics = through(fake_verl.get_policy_loss_fn(f"covgym_{name}"), old, log_prob, advantages, mask,
                                  mode)
    want_loss, want_grad = covgyms_own(name, old, log_prob, advantages, mask, mode)
    torch.testing.assert_close(loss, want_loss)
    torch.testing.assert_close(grad, want_grad)
    assert 0.0 < metrics["actor/covgym/covariance_kernel_weight_mean"] <= 1.0


@pytest.mark.parametrize("name", COMPOSITIONS)
def test_the_controls_weights_change_the_loss_inside_verl(fake_verl, name):
    """The kernel is applied, not dropped: the same call without it gives another gradient."""
    base = name.replace("+covariance_kernel", "")
    adapter.register_verl_policy_losses([name, base])
    old, log_prob, advantages, mask = inputs(seed=1)
    _, with_kernel, _ = through(fake_verl.get_policy_loss_fn(f"covgym_{name}"), old, log_prob, advantages, mask)
    _, without, _ = through(fake_verl.get_policy_loss_fn(f"covgym_{base}"), old, log_prob, advantages, mask)
    assert not torch.allclose(with_kernel, without)


def test_the_entropy_bonus_in_a_composition_is_left_to_verl(fake_verl):
    adapter.register_verl_policy_losses(["clip_cov", "grpo+clip_cov+entropy_bonus"])
    old, log_prob, advantages, mask = inputs(seed=2)
    plain, _, _ = through(fake_verl.get_policy_loss_fn("covgym_clip_cov"), old, log_prob, advantages, mask)
    bonus, _, _ = through(fake_verl.get_policy_loss_fn("covgym_grpo+clip_cov+entropy_bonus"), old, log_prob,
                          advantages, mask)
    torch.testing.assert_close(bonus, plain)


#: every built-in control and why verl cannot carry it (None: it works inside verl's loss)
VERDICTS = {"adaptive_entropy": STEP_HOOK, "covariance_kernel": None, "entrocraft": STEP_HOOK,
            "entropy_bonus": None, "entropy_schedule": STEP_HOOK, "entropy_target": STEP_HOOK,
            "high_entropy_tokens": TOKEN_ENTROPY, "htpo": ROLLOUT_ENTROPY, "opefo": ROLLOUT_ENTROPY,
            "polarity_aware": STEP_HOOK}


def test_every_control_has_a_verdict():
    assert sorted(VERDICTS) == builtin_part_names("control")


@pytest.mark.parametrize("control", sorted(VERDICTS))
def test_each_control_registers_or_is_refused_with_its_reason_in_one_line(fake_verl, control):
    name = f"grpo+clip_cov+{control}"
    reason = VERDICTS[control]
    if reason is None:
        assert adapter.register_verl_policy_losses([name]) == [f"covgym_{name}"]
        return
    with pytest.raises(NotImplementedError) as error:
        adapter.register_verl_policy_losses([name])
    message = str(error.value)
    assert message.startswith(f"covgym_{name}: not supported yet in verl: control '{control}' ")
    assert reason in message and "\n" not in message
    assert f"covgym_{name}" not in fake_verl.POLICY_LOSS_REGISTRY  # nothing half-registered


def test_a_control_needing_a_step_hook_names_end_of_step():
    with pytest.raises(NotImplementedError, match=r"control 'entropy_target' needs a step hook \(end_of_step\)"):
        adapter.verl_policy_loss("grpo+entropy_target")


def test_every_preset_is_still_registered_by_default(fake_verl):
    assert adapter.register_verl_policy_losses() == sorted(f"covgym_{name}" for name in algorithms.names())


# ---------------------------------------------------------------------------------------------- the real verl
HAS_VERL = importlib.util.find_spec("verl") is not None
needs_verl = pytest.mark.skipif(not HAS_VERL, reason="verl is not installed (optional; `make verl-check` runs this)")


@needs_verl
@pytest.mark.parametrize("name", ["grpo+clip_cov+covariance_kernel", "kl_cov+covariance_kernel"])
def test_real_verl_composition_equals_covgyms_policy_loss(name):
    """Through verl's real registry, with verl's own ActorConfig carrying the hyperparameters."""
    from verl.trainer.ppo.core_algos import get_policy_loss_fn
    from verl.workers.config import ActorConfig

    adapter.register_verl_policy_losses([name])
    actor = ActorConfig(strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=1, clip_ratio=0.2,
                        clip_ratio_c=3.0, loss_agg_mode="token-mean",
                        policy_loss={"loss_mode": f"covgym_{name}", **SELECTING})
    old, log_prob, advantages, mask = inputs(seed=3)
    leaf = log_prob.detach().clone().requires_grad_(True)
    loss, metrics = get_policy_loss_fn(f"covgym_{name}")(old_log_prob=old, log_prob=leaf, advantages=advantages,
                                                         response_mask=mask, loss_agg_mode="token-mean",
                                                         config=actor, rollout_is_weights=None)
    loss.backward()
    want_loss, want_grad = covgyms_own(name, old, log_prob, advantages, mask)
    torch.testing.assert_close(loss.detach(), want_loss)
    torch.testing.assert_close(leaf.grad, want_grad)
    assert "actor/covgym/covariance_kernel_weight_mean" in metrics


@needs_verl
def test_real_verl_refuses_an_unsupported_control_before_registering():
    from verl.trainer.ppo import core_algos

    with pytest.raises(NotImplementedError, match="not supported yet in verl"):
        adapter.register_verl_policy_losses(["grpo+adaptive_entropy"])
    assert "covgym_grpo+adaptive_entropy" not in core_algos.POLICY_LOSS_REGISTRY


def flatten_like_verl(log_prob, lengths, prompt):
    """verl's unpadded model output: per sequence ``prompt + length`` values, the response's log-probs shifted left
    by one (position ``prompt − 1`` predicts the first response token), as ``no_padding_2_padding`` reads them."""
    pieces = []
    for i, n in enumerate(lengths.tolist()):
        pieces += [torch.zeros(prompt - 1), log_prob[i, :n], torch.zeros(1)]
    return torch.cat(pieces)


@needs_verl
@pytest.mark.parametrize("name,entropy_coeff,kl_coef", [("grpo+clip_cov+covariance_kernel", 0.0, None),
                                                        ("kl_cov+covariance_kernel+entropy_bonus", 0.01, None),
                                                        ("grpo+covariance_kernel", 0.0, 0.1)])
def test_real_verls_ppo_loss_with_a_composition_equals_covgyms_whole_loss(name, entropy_coeff, kl_coef):
    """verl's own per-micro-batch loss (``verl/workers/utils/losses.py`` ``ppo_loss``: the policy loss looked up by
    ``loss_mode``, then verl's entropy bonus and reference KL) equals covgym's ``policy_loss`` with the same entropy
    bonus and KL term."""
    from tensordict import TensorDict
    from verl.utils import tensordict_utils
    from verl.workers.config import ActorConfig
    from verl.workers.utils.losses import ppo_loss

    adapter.register_verl_policy_losses([name])
    old, log_prob, advantages, mask = inputs(seed=4, b=4, t=6)
    lengths, prompt = mask.sum(-1), 2
    generator = torch.Generator().manual_seed(5)
    entropy, ref = torch.rand(mask.shape, generator=generator), old - 0.2 * torch.rand(mask.shape, generator=generator)
    leaf, entropy_leaf = log_prob.clone().requires_grad_(True), entropy.clone().requires_grad_(True)
    tensors = {"prompts": torch.ones(4, prompt, dtype=torch.long), "responses": torch.ones(4, 6, dtype=torch.long),
               "attention_mask": torch.cat([torch.ones(4, prompt, dtype=torch.long), mask.long()], 1),
               "response_mask": mask.long(), "old_log_probs": old, "advantages": advantages}
    if kl_coef is not None:
        tensors["ref_log_prob"] = ref
    data = TensorDict(tensors, batch_size=[4])
    tensordict_utils.assign_non_tensor(data, dp_size=1, batch_num_tokens=int(mask.sum()), global_batch_size=4)
    actor = ActorConfig(strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=1, clip_ratio=0.2,
                        clip_ratio_c=3.0, loss_agg_mode="token-mean", entropy_coeff=entropy_coeff,
                        use_kl_loss=kl_coef is not None, kl_loss_coef=kl_coef or 0.001, kl_loss_type="low_var_kl",
                        policy_loss={"loss_mode": f"covgym_{name}", **SELECTING})
    output = {"log_probs": flatten_like_verl(leaf, lengths, prompt)}
    if entropy_coeff:
        output["entropy"] = flatten_like_verl(entropy_leaf, lengths, prompt)
    loss, metrics = ppo_loss(actor, output, data)
    loss.backward()

    fields = {field.name for field in algorithms.get(name).hyperparameters()}
    kwargs = {k: v for k, v in {**SELECTING, "clip_ratio_c": 3.0, "entropy_coeff": entropy_coeff}.items()
              if k in fields}
    if kl_coef is not None:
        kwargs.update(use_kl_loss=True, kl_loss_coef=kl_coef, kl_loss_type="low_var_kl")
    algorithm = algorithms.get(name)(**kwargs)
    algorithm.set_generator(torch.Generator().manual_seed(0))
    ours_leaf, ours_entropy = log_prob.clone().requires_grad_(True), entropy.clone().requires_grad_(True)
    ours, _ = algorithm.policy_loss(ours_leaf, old, advantages, mask.float(),
                                    entropy=ours_entropy if entropy_coeff else None,
                                    ref_log_probs=ref if kl_coef is not None else None)
    ours.backward()
    torch.testing.assert_close(loss.detach(), ours.detach())
    torch.testing.assert_close(leaf.grad, ours_leaf.grad)
    if entropy_coeff:
        torch.testing.assert_close(entropy_leaf.grad, ours_entropy.grad)
    assert "actor/covgym/covariance_kernel_weight_mean" in metrics
