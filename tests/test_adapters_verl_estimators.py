"""covgym's advantage estimators in verl's advantage-estimator registry (``covgym.adapters.verl_estimators``).

verl calls an estimator with response-only ``[B, T]`` tensors and each response's prompt uid; covgym's trainer
builds a ``RolloutBatch`` with the prompt in front and integer group ids. The tests build both sides independently
from the same rewards and check that the advantages agree, first through a stand-in of verl's registry, then (where
verl is installed, ``make verl-check``) through verl's real registry and its own ``compute_advantage`` dispatch, and
against verl's own estimators where the definitions agree.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from verl_standin import builtin_part_names, install, make_core_algos

import covgym.algorithms as algorithms
from covgym.adapters import verl as adapter
from covgym.core.batch import RolloutBatch

ESTIMATORS = builtin_part_names("estimator")
OUTCOME = [name for name in ESTIMATORS if name != "gae"]
PROMPT = 3  # prompt columns in front of the response in covgym's batch (verl's tensors are response-only)


@pytest.fixture
def fake_verl(monkeypatch):
    return install(monkeypatch, make_core_algos())


@st.composite
def rollouts(draw, per_token: bool = False):
    """Responses to a few prompts: ``(rewards [B], lengths [B], groups [B], length T, token rewards [B, T] or None)``.

    Rewards are small integers scaled by a factor (ties in groups, zeros for GPG's α, ±1 for pass@k) or, with
    ``per_token``, spread over every response token as verl's KL-in-reward makes them.
    """
    sizes = draw(st.lists(st.integers(1, 5), min_size=1, max_size=4))
    groups = [g for g, size in enumerate(sizes) for _ in range(size)]
    b = len(groups)
    length = draw(st.integers(1, 7))
    lengths = draw(st.lists(st.integers(1, length), min_size=b, max_size=b))
    scale = draw(st.sampled_from([1.0, 0.5, 2.0]))
    rewards = [scale * r for r in draw(st.lists(st.integers(-1, 2), min_size=b, max_size=b))]
    token_rewards = None
    if per_token:
        # multiples of 1/8: every sum is exact whatever order the two layouts add them in. With arbitrary floats
        # the two sums differ in the last bit, and whitening a batch whose centred scores are all ~0 (one
        # response, or equal scores) blows that bit up to 1e-3 on both sides alike.
        values = draw(st.lists(st.integers(-16, 16), min_size=b * length, max_size=b * length))
        token_rewards = torch.tensor(values, dtype=torch.float32).reshape(b, length) / 8
        token_rewards = token_rewards * (torch.arange(length)[None] < torch.tensor(lengths)[:, None])
    return torch.tensor(rewards), torch.tensor(lengths), torch.tensor(groups), length, token_rewards


def verl_inputs(rewards, lengths, groups, length, token_rewards=None):
    """What verl passes: response-only ``token_level_rewards`` (the outcome on the last response token, as verl's
    reward manager writes it), ``response_mask`` and uids (strings, in a numpy object array)."""
    mask = (torch.arange(length)[None] < lengths[:, None]).float()  # [B, T]
    if token_rewards is None:
        token_rewards = torch.zeros(len(rewards), length)
        token_rewards[torch.arange(len(rewards)), lengths - 1] = rewards
    index = np.array([f"uid-{int(g) * 7919 % 1000}" for g in groups], dtype=object)
    return token_rewards, mask, index


def covgym_batch(rewards, lengths, groups, length, token_rewards=None, values=None):
    """covgym's own layout: ``PROMPT`` prompt tokens in front (mask 0), the outcome left for the batch to place."""
    b, t = len(rewards), PROMPT + length
    mask = torch.zeros(b, t)
    for i, n in enumerate(lengths.tolist()):
        mask[i, PROMPT:PROMPT + n] = 1.0
    pad = torch.zeros(b, PROMPT)
    return RolloutBatch(input_ids=torch.zeros(b, t, dtype=torch.long), attention_mask=torch.ones(b, t, dtype=torch.long),
                        response_mask=mask, old_log_probs=torch.zeros(b, t), rewards=rewards.float(),
                        group_ids=groups * 3 + 1, entropies=torch.zeros(b, t),
                        token_rewards=None if token_rewards is None else torch.cat([pad, token_rewards], 1),
                        values=None if values is None else torch.cat([pad, values], 1))


def covgym_advantages(name, batch, **hyperparameters):
    return algorithms.get(name)(**hyperparameters).advantages(batch)[:, PROMPT:]


# ---------------------------------------------------------------------------------------------- the stand-in
def test_every_covgym_estimator_is_registered_under_a_prefix(fake_verl):
    registered = adapter.register_verl_advantage_estimators()
    assert set(registered) >= {f"covgym_{name}" for name in ESTIMATORS}  # plugin parts of other tests go too
    assert registered == sorted(f"covgym_{name}" for name in algorithms.part_names("estimator"))
    assert {"covgym_grpo", "covgym_rloo", "covgym_gpg", "covgym_passk", "covgym_quantile_baseline"} <= set(registered)
    for name in registered:
        assert callable(fake_verl.get_adv_estimator_fn(name))
    assert "grpo" not in fake_verl.ADV_ESTIMATOR_REGISTRY  # verl's own names are left alone


@pytest.mark.parametrize("name", OUTCOME)
@settings(deadline=None, max_examples=15, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=rollouts())
def test_verl_side_advantages_equal_covgym_advantages(fake_verl, name, case):
    adapter.register_verl_advantage_estimators([name])
    token_rewards, mask, index = verl_inputs(*case)
    advantages, returns = fake_verl.get_adv_estimator_fn(f"covgym_{name}")(
        token_level_rewards=token_rewards, response_mask=mask, index=index, config=None)
    want = covgym_advantages(name, covgym_batch(*case))
    torch.testing.assert_close(advantages, want)
    torch.testing.assert_close(returns, want)  # outcome estimators: returns = advantages, as verl's own
    assert advantages.shape == mask.shape


@pytest.mark.parametrize("name", ["grpo", "rloo", "reinforce_pp"])
@settings(deadline=None, max_examples=10)
@given(case=rollouts(per_token=True))
def test_token_level_rewards_are_summed_per_response(name, case):
    """verl's rewards may sit on every token (KL in the reward): the score is their sum, in both."""
    token_rewards, mask, index = verl_inputs(*case)
    advantages, _ = adapter.verl_advantage_estimator(name)(token_level_rewards=token_rewards, response_mask=mask,
                                                          index=index)
    torch.testing.assert_close(advantages, covgym_advantages(name, covgym_batch(*case)))


def test_gae_with_values_equals_covgym_and_without_points_to_verls_gae(fake_verl):
    case = (torch.tensor([1.0, 0.0, 2.0]), torch.tensor([4, 2, 3]), torch.tensor([0, 0, 1]), 4, None)
    values = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    token_rewards, mask, index = verl_inputs(*case)
    adapter.register_verl_advantage_estimators(["gae"])
    function = fake_verl.get_adv_estimator_fn("covgym_gae")
    advantages, returns = function(token_level_rewards=token_rewards, response_mask=mask, index=index,
                                   config=SimpleNamespace(gamma=0.9, lam=0.8), values=values)
    batch = covgym_batch(*case, values=values)
    want_advantages, want_returns = algorithms.get("ppo")(gamma=0.9, lam=0.8).advantages_and_returns(batch)
    torch.testing.assert_close(advantages, want_advantages[:, PROMPT:])
    torch.testing.assert_close(returns, want_returns[:, PROMPT:])
    with pytest.raises(ValueError, match="adv_estimator=gae"):
        function(token_level_rewards=token_rewards, response_mask=mask, index=index, config=None)


def test_hyperparameters_come_from_verls_algorithm_config_unless_fixed(fake_verl):
    case = (torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0]), torch.tensor([2, 3, 1, 2, 2, 1]),
            torch.tensor([0, 0, 0, 0, 1, 1]), 3, None)
    token_rewards, mask, index = verl_inputs(*case)
    batch = covgym_batch(*case)
    config = SimpleNamespace(norm_adv_by_std_in_grpo=False, passk_k=2, gamma=1.0)

    def run(name, **fixed):
        adapter.register_verl_advantage_estimators([name], hyperparameters={name: fixed} if fixed else None)
        return fake_verl.get_adv_estimator_fn(f"covgym_{name}")(token_level_rewards=token_rewards,
                                                                 response_mask=mask, index=index, config=config)[0]

    torch.testing.assert_close(run("passk"), covgym_advantages("passk", batch, passk_k=2))
    torch.testing.assert_close(run("passk", passk_k=3), covgym_advantages("passk", batch, passk_k=3))
    assert not torch.allclose(covgym_advantages("passk", batch, passk_k=2), covgym_advantages("passk", batch))
    dr_grpo = covgym_advantages("dr_grpo", batch)
    torch.testing.assert_close(run("grpo"), dr_grpo)  # verl's norm_adv_by_std_in_grpo=False reaches covgym_grpo
    assert not torch.allclose(dr_grpo, covgym_advantages("grpo", batch))
    config.norm_adv_by_std_in_grpo = True  # verl's default: Dr. GRPO must not read it
    torch.testing.assert_close(run("dr_grpo"), dr_grpo)


def test_bad_input_gets_a_one_line_error(fake_verl):
    token_rewards, mask, index = verl_inputs(torch.tensor([1.0, 0.0]), torch.tensor([2, 1]), torch.tensor([0, 0]), 2)
    function = adapter.verl_advantage_estimator("grpo")
    with pytest.raises(ValueError, match="no index"):
        function(token_level_rewards=token_rewards, response_mask=mask, config=None)
    with pytest.raises(ValueError, match="3 uids for 2 responses"):
        function(token_level_rewards=token_rewards, response_mask=mask, index=np.array(["a", "b", "c"]))
    with pytest.raises(ValueError, match="unknown field"):
        adapter.verl_advantage_estimator("grpo", {"passk_k": 2})
    with pytest.raises(ValueError, match="passk_k"):
        adapter.verl_advantage_estimator("passk", {"passk_k": 0})
    with pytest.raises(ValueError, match="not being registered"):
        adapter.register_verl_advantage_estimators(["grpo"], hyperparameters={"rloo": {}})


def test_registering_again_replaces_covgyms_entry_but_not_anothers(fake_verl):
    adapter.register_verl_advantage_estimators(["passk"])
    adapter.register_verl_advantage_estimators(["passk"], hyperparameters={"passk": {"passk_k": 2}})
    token_rewards, mask, index = verl_inputs(torch.tensor([1.0, 0.0, 0.0]), torch.tensor([1, 1, 1]),
                                             torch.tensor([0, 0, 0]), 1)
    advantages, _ = fake_verl.get_adv_estimator_fn("covgym_passk")(token_level_rewards=token_rewards,
                                                                   response_mask=mask, index=index)
    batch = covgym_batch(torch.tensor([1.0, 0.0, 0.0]), torch.tensor([1, 1, 1]), torch.tensor([0, 0, 0]), 1)
    torch.testing.assert_close(advantages, covgym_advantages("passk", batch, passk_k=2))
    fake_verl.register_adv_est("covgym_rloo")(lambda **kwargs: None)  # someone else's estimator under our name
    with pytest.raises(ValueError, match="already been registered"):
        adapter.register_verl_advantage_estimators(["rloo"])


@pytest.mark.parametrize("control", builtin_part_names("control"))
def test_no_control_rides_on_verls_estimator_call(control):
    """Advantage-transforming controls read the rollout's entropies, which verl's call lacks; the others act in
    the loss. Either way registering ``grpo+<control>`` as an estimator is refused with the reason."""
    with pytest.raises(NotImplementedError, match=rf"^covgym_grpo\+{control}: not supported yet in verl: "
                                                  rf"control '{control}' [^\n]*$"):
        adapter.verl_advantage_estimator(f"grpo+{control}")


# ---------------------------------------------------------------------------------------------- the real verl
HAS_VERL = importlib.util.find_spec("verl") is not None
needs_verl = pytest.mark.skipif(not HAS_VERL, reason="verl is not installed (optional; `make verl-check` runs this)")

#: covgym estimator -> (verl's own estimator, its keyword arguments) where the definitions agree
VERL_TWINS = {"grpo": ("grpo", {}), "dr_grpo": ("grpo", {"norm_adv_by_std_in_grpo": False}),
              "rloo": ("rloo", {}), "reinforce_pp": ("reinforce_plus_plus_baseline", {}), "gpg": ("gpg", {})}


@needs_verl
@pytest.mark.parametrize("name", sorted(VERL_TWINS))
@settings(deadline=None, max_examples=15)
@given(case=rollouts())
def test_real_verl_estimators_equal_covgyms_where_they_agree(name, case):
    """A cross-check of the mapping: verl's own estimator and covgym_<name>, both looked up in verl's registry."""
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn

    adapter.register_verl_advantage_estimators()
    token_rewards, mask, index = verl_inputs(*case)
    assume(name != "reinforce_pp" or mask.sum() >= 2)  # verl's masked_var refuses a single token
    verl_name, kwargs = VERL_TWINS[name]
    theirs, _ = get_adv_estimator_fn(verl_name)(token_level_rewards=token_rewards.clone(), response_mask=mask,
                                               index=index, **kwargs)
    ours, _ = get_adv_estimator_fn(f"covgym_{name}")(token_level_rewards=token_rewards, response_mask=mask,
                                                    index=index, config=None)
    torch.testing.assert_close(ours, theirs * mask, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours, covgym_advantages(name, covgym_batch(*case)))


@needs_verl
@settings(deadline=None, max_examples=15)
@given(case=rollouts(), gamma=st.sampled_from([1.0, 0.9]), lam=st.sampled_from([1.0, 0.95]))
def test_real_verl_gae_equals_covgyms(case, gamma, lam):
    """verl routes critic values only to its own gae; it must compute covgym's GAE (on the response tokens)."""
    from verl.trainer.ppo.core_algos import compute_gae_advantage_return

    token_rewards, mask, _ = verl_inputs(*case)
    assume(mask.sum() >= 2)  # verl's masked_var refuses a single token
    values = torch.randn(mask.shape, generator=torch.Generator().manual_seed(int(mask.sum())))
    theirs, their_returns = compute_gae_advantage_return(token_level_rewards=token_rewards, values=values,
                                                         response_mask=mask, gamma=gamma, lam=lam)
    ours, our_returns = algorithms.get("ppo")(gamma=gamma, lam=lam).advantages_and_returns(
        covgym_batch(*case, values=values))
    torch.testing.assert_close(ours[:, PROMPT:], theirs * mask, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(our_returns[:, PROMPT:], their_returns * mask, rtol=1e-5, atol=1e-5)


@needs_verl
@pytest.mark.parametrize("name", OUTCOME)
def test_real_verl_compute_advantage_dispatches_to_covgym(name):
    """verl's own driver-side dispatch (ray_trainer.compute_advantage, with its AlgoConfig and DataProto)."""
    from verl import DataProto
    from verl.trainer.config import AlgoConfig
    from verl.trainer.ppo.ray_trainer import compute_advantage

    adapter.register_verl_advantage_estimators()
    case = (torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, -1.0, 2.0]), torch.tensor([3, 1, 2, 3, 3, 2, 1]),
            torch.tensor([0, 0, 0, 1, 1, 1, 2]), 3, None)
    token_rewards, mask, index = verl_inputs(*case)
    data = DataProto.from_dict(tensors={"token_level_rewards": token_rewards, "response_mask": mask},
                               non_tensors={"uid": index})
    data = compute_advantage(data, adv_estimator=f"covgym_{name}", config=AlgoConfig(adv_estimator=f"covgym_{name}"))
    want = covgym_advantages(name, covgym_batch(*case))
    torch.testing.assert_close(data.batch["advantages"], want)
    torch.testing.assert_close(data.batch["returns"], want)


@needs_verl
def test_real_verl_imports_the_plugin_named_in_its_environment():
    """``VERL_USE_EXTERNAL_MODULES=covgym.adapters.verl_plugin``: every process that imports verl registers covgym's
    losses and estimators (verl/__init__.py), the driver that computes advantages included."""
    script = ("import verl\n"
              "from verl.trainer.ppo.core_algos import get_adv_estimator_fn, get_policy_loss_fn\n"
              "print(get_adv_estimator_fn('covgym_rloo').__name__, get_policy_loss_fn('covgym_kl_cov').__name__)\n")
    env = {**os.environ, "VERL_USE_EXTERNAL_MODULES": "covgym.adapters.verl_plugin", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["covgym_rloo", "covgym_kl_cov"]
