"""verl adapter: covgym's losses through a verl-shaped registry, covgym's graders as a verl reward function.

Most tests run against a stand-in of ``verl.trainer.ppo.core_algos`` (a fake module in ``sys.modules`` with
verl's ``register_policy_loss`` / ``get_policy_loss_fn`` and calling convention), so the adapter is exercised
without verl; the tests at the end use the real verl and are skipped where it is not installed.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from types import SimpleNamespace

import gymnasium as gym
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from verl_standin import install, make_core_algos

import covgym.algorithms as algorithms
from covgym.adapters import verl as adapter
from covgym.algorithms.functional import LOSS_AGG_MODES

B, T = 6, 9


@pytest.fixture
def fake_verl(monkeypatch):
    return install(monkeypatch, make_core_algos())


def verl_config(**policy_loss) -> SimpleNamespace:
    """verl's actor config as the losses read it; entropy and reference-KL settings that must NOT be used."""
    return SimpleNamespace(clip_ratio=0.2, clip_ratio_low=None, clip_ratio_high=None, clip_ratio_c=3.0,
                           loss_agg_mode="token-mean", entropy_coeff=0.01, use_kl_loss=True, kl_loss_coef=0.5,
                           kl_loss_type="low_var_kl", global_batch_info={},
                           policy_loss={"loss_mode": "vanilla", **policy_loss})


def random_inputs(seed: int = 0, batch: int = B, length: int = T):
    generator = torch.Generator().manual_seed(seed)
    old = -torch.rand(batch, length, generator=generator) * 3  # [B, T]
    log_prob = (old + (torch.rand(batch, length, generator=generator) - 0.5)).requires_grad_(True)  # ratio in e^±.5
    advantages = torch.randn(batch, 1, generator=generator).expand(batch, length).clone()
    lengths = torch.randint(1, length + 1, (batch,), generator=generator)
    mask = torch.arange(length)[None] < lengths[:, None]  # [B, T] bool, as verl passes it
    return old, log_prob, advantages, mask


def call(function, old, log_prob, advantages, mask, **kwargs):
    leaf = log_prob.detach().clone().requires_grad_(True)
    loss, metrics = function(old_log_prob=old, log_prob=leaf, advantages=advantages, response_mask=mask, **kwargs)
    loss.backward()
    return loss.detach(), leaf.grad, metrics


def direct(name, old, log_prob, advantages, mask, seed=0, **hyperparameters):
    algorithm = algorithms.get(name)(**hyperparameters)
    algorithm.set_generator(torch.Generator().manual_seed(seed))
    leaf = log_prob.detach().clone().requires_grad_(True)
    loss, _ = algorithm.policy_loss(leaf, old, advantages, mask.float())
    loss.backward()
    return loss.detach(), leaf.grad


# ---------------------------------------------------------------------------------------------- registration
def test_every_covgym_algorithm_is_registered_under_a_prefix(fake_verl):
    registered = adapter.register_verl_policy_losses()
    assert registered == sorted(f"covgym_{name}" for name in algorithms.names())
    for name in registered:
        assert callable(fake_verl.get_policy_loss_fn(name))
    assert "clip_cov" not in fake_verl.POLICY_LOSS_REGISTRY  # verl's own names are left alone


SELECTING = {"clip_cov_ratio": 0.3, "clip_cov_lb": -10.0, "clip_cov_ub": 10.0, "kl_cov_ratio": 0.3,
             "ppo_kl_coef": 0.7}


@pytest.mark.parametrize("name", algorithms.names())
def test_loss_through_registry_lookup_matches_direct_call(fake_verl, name):
    adapter.register_verl_policy_losses()
    function = fake_verl.get_policy_loss_fn(f"covgym_{name}")
    old, log_prob, advantages, mask = random_inputs(seed=len(name))
    loss, grad, metrics = call(function, old, log_prob, advantages, mask, loss_agg_mode="token-mean",
                               config=verl_config(**SELECTING))
    fields = {field.name for field in algorithms.get(name).hyperparameters()}
    expected = {key: value for key, value in {**SELECTING, "clip_ratio": 0.2, "clip_ratio_c": 3.0,
                                               "entropy_coeff": 0.0}.items() if key in fields}
    want_loss, want_grad = direct(name, old, log_prob, advantages, mask,
                                  loss_agg_mode="token-mean", **expected)  # verl's mode, even for dr_grpo
    torch.testing.assert_close(loss, want_loss)
    torch.testing.assert_close(grad, want_grad)
    assert {"actor/pg_clipfrac", "actor/ppo_kl", "actor/pg_clipfrac_lower"} <= set(metrics)
    assert all(isinstance(value, float) for value in metrics.values())


def ppo_clip_reference(old, log_prob, advantages, mask, low, high, dual):
    """verl's vanilla formula, written out token by token."""
    total, count = 0.0, 0
    for i in range(old.shape[0]):
        for t in range(old.shape[1]):
            if not mask[i, t]:
                continue
            ratio = torch.exp(log_prob[i, t] - old[i, t])
            a = advantages[i, t]
            loss = torch.maximum(-a * ratio, -a * torch.clamp(ratio, 1 - low, 1 + high))
            if a < 0:
                loss = torch.minimum(loss, -a * dual)
            total, count = total + loss, count + 1
    return total / count


def test_verl_clip_settings_reach_the_loss(fake_verl):
    adapter.register_verl_policy_losses(["grpo"])
    old, log_prob, advantages, mask = random_inputs(seed=3)
    config = verl_config()
    config.clip_ratio_low, config.clip_ratio_high, config.clip_ratio_c = 0.1, 0.28, 2.0
    loss, _, _ = call(fake_verl.get_policy_loss_fn("covgym_grpo"), old, log_prob, advantages, mask, config=config)
    reference = ppo_clip_reference(old, log_prob.detach(), advantages, mask, 0.1, 0.28, 2.0)
    torch.testing.assert_close(loss, reference)
    other = ppo_clip_reference(old, log_prob.detach(), advantages, mask, 0.2, 0.2, 3.0)
    assert not torch.allclose(reference, other)  # the settings matter on these tensors


def test_registration_hyperparameters_override_verl_config(fake_verl):
    adapter.register_verl_policy_losses(["kl_cov"], hyperparameters={"kl_cov": {"ppo_kl_coef": 1.0}})
    old, log_prob, advantages, mask = random_inputs(seed=4)
    loss, grad, _ = call(fake_verl.get_policy_loss_fn("covgym_kl_cov"), old, log_prob, advantages, mask,
                         config=verl_config(kl_cov_ratio=0.3, ppo_kl_coef=0.1))
    want_loss, want_grad = direct("kl_cov", old, log_prob, advantages, mask, kl_cov_ratio=0.3, ppo_kl_coef=1.0)
    torch.testing.assert_close(loss, want_loss)
    torch.testing.assert_close(grad, want_grad)
    with pytest.raises(ValueError, match="unknown field"):
        adapter.verl_policy_loss("kl_cov", {"not_a_field": 1})


def test_entropy_bonus_and_reference_kl_are_left_to_verl(fake_verl):
    adapter.register_verl_policy_losses(["grpo", "entropy_bonus"])
    old, log_prob, advantages, mask = random_inputs(seed=5)
    config = verl_config()  # entropy_coeff=0.01, use_kl_loss=True: verl adds those terms itself
    grpo, _, _ = call(fake_verl.get_policy_loss_fn("covgym_grpo"), old, log_prob, advantages, mask, config=config)
    bonus, _, _ = call(fake_verl.get_policy_loss_fn("covgym_entropy_bonus"), old, log_prob, advantages, mask,
                       config=config)
    torch.testing.assert_close(grpo, bonus)
    torch.testing.assert_close(grpo, ppo_clip_reference(old, log_prob.detach(), advantages, mask, 0.2, 0.2, 3.0))


def verl_agg_loss(loss_mat, loss_mask, mode, dp_size=1, batch_num_tokens=None, global_batch_size=None,
                  loss_scale_factor=None):
    """verl 0.9.1's ``agg_loss`` (``verl/trainer/ppo/core_algos.py``), re-derived sequence by sequence.

    token-mean: Σ L·m / tokens · dp; the seq-mean modes: Σ over sequences with a token of their value / sequences
    · dp, where a sequence's value is Σ_t L·m (token-sum), that / its token count (token-mean), or that / the
    factor (token-sum-norm, Dr. GRPO; the factor defaults to the padded length). Counts default to the local ones.
    """
    tokens = float(loss_mask.sum()) if batch_num_tokens is None else float(batch_num_tokens)
    if mode == "token-mean":
        return sum(float(loss_mat[i, t]) for i in range(loss_mat.shape[0]) for t in range(loss_mat.shape[1])
                   if loss_mask[i, t]) / tokens * dp_size
    values = []
    for i in range(loss_mat.shape[0]):
        row = [float(loss_mat[i, t]) for t in range(loss_mat.shape[1]) if loss_mask[i, t]]
        if not row:
            continue  # a fully masked sequence counts for nothing
        value = sum(row)
        if mode == "seq-mean-token-mean":
            value /= len(row)
        elif mode == "seq-mean-token-sum-norm":
            value /= loss_mask.shape[-1] if loss_scale_factor is None else loss_scale_factor
        values.append(value)
    sequences = len(values) if global_batch_size is None else global_batch_size
    return sum(values) / sequences * dp_size


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
@pytest.mark.parametrize("batch_info", [{}, {"loss_scale_factor": 7.0},
                                        {"dp_size": 4, "batch_num_tokens": 100, "global_batch_size": 24,
                                         "loss_scale_factor": 7.0}])
def test_every_aggregation_mode_is_verls_agg_loss(mode, batch_info):
    """On-policy (ratio 1) the per-token loss is −A, so the loss is verl's aggregate of −A (Dr. GRPO's included)."""
    function = adapter.verl_policy_loss("grpo")
    old, _, advantages, mask = random_inputs(seed=6)
    mask[2] = False  # a fully masked sequence: verl leaves it out of the sequence count
    config = verl_config()
    config.global_batch_info = dict(batch_info)
    loss, _, _ = call(function, old, old.clone(), advantages, mask, loss_agg_mode=mode, config=config)
    want = verl_agg_loss(-advantages, mask, mode, **batch_info)
    torch.testing.assert_close(loss, torch.tensor(want), rtol=1e-5, atol=1e-6)


def test_dp_size_without_the_global_count_is_refused_as_in_verl():
    function = adapter.verl_policy_loss("grpo")
    old, log_prob, advantages, mask = random_inputs(seed=10)
    config = verl_config()
    config.global_batch_info = {"dp_size": 2, "batch_num_tokens": int(mask.sum())}
    with pytest.raises(ValueError, match="global_batch_size"):
        call(function, old, log_prob, advantages, mask, loss_agg_mode="seq-mean-token-sum-norm", config=config)


@settings(deadline=None, max_examples=25)
@given(seed=st.integers(0, 10_000),
       mode=st.sampled_from(["token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]),
       cut=st.integers(1, B - 1))
def test_sharded_calls_with_global_batch_info_average_to_the_whole_batch(seed, mode, cut):
    """verl averages gradients over dp ranks: Σ/global_count·dp_size per rank must average to the whole loss."""
    function = adapter.verl_policy_loss("grpo")
    old, log_prob, advantages, mask = random_inputs(seed)
    whole = verl_config()
    whole.global_batch_info = {"loss_scale_factor": 5.0}
    whole_loss, whole_grad, _ = call(function, old, log_prob, advantages, mask, loss_agg_mode=mode, config=whole)
    config = verl_config()
    config.global_batch_info = {"dp_size": 2, "batch_num_tokens": int(mask.sum()), "global_batch_size": B,
                                "loss_scale_factor": 5.0}
    grads, losses = torch.zeros(B, T), []
    for rows in (slice(0, cut), slice(cut, B)):
        loss, grad, _ = call(function, old[rows], log_prob[rows], advantages[rows], mask[rows], loss_agg_mode=mode,
                             config=config)
        losses.append(loss)
        grads[rows] = grad
    torch.testing.assert_close(sum(losses) / 2, whole_loss)
    torch.testing.assert_close(grads / 2, whole_grad)


def test_seq_mean_token_sum_norm_is_the_mean_over_sequences_divided_by_the_factor():
    """verl 0.9.1's Dr. GRPO loss: (1/B)·Σ_i Σ_t L·m / factor, not the sum over sequences (B times larger)."""
    function = adapter.verl_policy_loss("grpo")
    old, _, advantages, mask = random_inputs(seed=6)
    config = verl_config()
    config.global_batch_info = {"loss_scale_factor": 7.0}
    loss, _, _ = call(function, old, old.clone(), advantages, mask, loss_agg_mode="seq-mean-token-sum-norm",
                      config=config)  # ratio 1: per-token loss −A
    torch.testing.assert_close(loss, -(advantages * mask).sum() / B / 7.0)


def test_registration_can_fix_the_aggregation_mode():
    function = adapter.verl_policy_loss("dr_grpo", {"loss_agg_mode": "seq-mean-token-sum-norm",
                                                    "loss_scale_factor": 5.0})
    old, _, advantages, mask = random_inputs(seed=9)
    config = verl_config()
    config.global_batch_info = {"dp_size": 2, "global_batch_size": 2 * B, "batch_num_tokens": 99,
                                "loss_scale_factor": 11.0}  # fixed values win over verl's
    loss, _, _ = call(function, old, old.clone(), advantages, mask, loss_agg_mode="token-mean", config=config)
    torch.testing.assert_close(loss, -(advantages * mask).sum() / (2 * B) * 2 / 5.0)


def test_rollout_importance_weights_are_refused_clearly():
    function = adapter.verl_policy_loss("grpo")
    old, log_prob, advantages, mask = random_inputs()
    with pytest.raises(ValueError, match="rollout_is_weights"):
        function(old_log_prob=old, log_prob=log_prob, advantages=advantages, response_mask=mask,
                 config=verl_config(), rollout_is_weights=torch.ones(B, T))


def test_older_verl_gets_the_four_tensor_form(monkeypatch):
    core = install(monkeypatch, make_core_algos("tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]"))
    adapter.register_verl_policy_losses(["grpo"])
    old, log_prob, advantages, mask = random_inputs(seed=7)
    result = core.get_policy_loss_fn("covgym_grpo")(old_log_prob=old, log_prob=log_prob, advantages=advantages,
                                                    response_mask=mask, loss_agg_mode="token-mean",
                                                    config=verl_config())
    assert len(result) == 4 and all(isinstance(item, torch.Tensor) for item in result)
    ratio = torch.exp(log_prob.detach() - old)
    clipped = (-advantages * torch.clamp(ratio, 0.8, 1.2)) > (-advantages * ratio)
    torch.testing.assert_close(result[1], clipped[mask].float().mean())
    torch.testing.assert_close(result[2], (old - log_prob.detach())[mask].mean())


def test_selection_stays_on_this_rank_inside_verl(monkeypatch):
    """Under torch.distributed (faked: world size 2, no process group) the loss makes no collective call."""
    from covgym.algorithms import distributed

    old, log_prob, advantages, mask = random_inputs(seed=8)
    want_loss, want_grad = direct("kl_cov", old, log_prob, advantages, mask, kl_cov_ratio=0.3, ppo_kl_coef=1.0)
    fake_world = lambda: 2  # noqa: E731
    monkeypatch.setattr(distributed, "world_size", fake_world)
    function = adapter.verl_policy_loss("kl_cov", {"kl_cov_ratio": 0.3, "ppo_kl_coef": 1.0})
    loss, grad, _ = call(function, old, log_prob, advantages, mask, config=None)
    torch.testing.assert_close(loss, want_loss)
    torch.testing.assert_close(grad, want_grad)
    assert distributed.world_size is fake_world  # restored after the call
    with pytest.raises((RuntimeError, ValueError)):  # without the adapter's guard the loss would need a group
        direct("kl_cov", old, log_prob, advantages, mask, kl_cov_ratio=0.3)


def test_importing_the_plugin_registers_the_losses(fake_verl, monkeypatch):
    """What ``actor_rollout_ref.model.external_lib=covgym.adapters.verl_plugin`` does in each verl worker."""
    monkeypatch.delitem(sys.modules, "covgym.adapters.verl_plugin", raising=False)
    plugin = importlib.import_module("covgym.adapters.verl_plugin")
    monkeypatch.delitem(sys.modules, "covgym.adapters.verl_plugin")  # the next import registers again
    assert plugin.REGISTERED == sorted(f"covgym_{name}" for name in algorithms.names())
    assert set(plugin.REGISTERED) <= set(fake_verl.POLICY_LOSS_REGISTRY)
    assert plugin.REGISTERED_ESTIMATORS == sorted(f"covgym_{name}" for name in algorithms.part_names("estimator"))
    assert set(plugin.REGISTERED_ESTIMATORS) == set(fake_verl.ADV_ESTIMATOR_REGISTRY)


def test_missing_verl_names_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "verl", None)
    with pytest.raises(ImportError, match="install verl"):
        adapter.register_verl_policy_losses()


# ---------------------------------------------------------------------------------------------- rewards and data
def solved(env_id, env_seed, env_kwargs):
    env = gym.make(env_id, **env_kwargs).unwrapped
    _, info = env.reset(seed=env_seed)
    return env.oracle_action(), str(info["answer"])


@pytest.mark.parametrize("env_id", ["covgym/Arithmetic-v0", "covgym/Countdown-v0", "covgym/LinearEquations-v0"])
def test_compute_score_regrades_with_the_env(tmp_path, env_id):
    path = adapter.write_verl_dataset(tmp_path / "train.jsonl", env_id, num_prompts=5, seed=1)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 5
    for row in rows:
        extra = row["extra_info"]
        kwargs = json.loads(extra["env_kwargs"])
        assert kwargs["split"] == "train" and row["data_source"] == env_id
        oracle, answer = solved(env_id, extra["env_seed"], kwargs)
        assert row["reward_model"] == {"style": "rule", "ground_truth": answer}
        assert row["prompt"][0]["role"] == "user"
        assert adapter.compute_score(row["data_source"], oracle, answer, extra) == 1.0
        assert adapter.compute_score(row["data_source"], "no idea", answer, extra) == 0.0


def test_compute_score_without_seed_grades_against_ground_truth():
    assert adapter.compute_score("covgym/Arithmetic-v0", "so \\boxed{-12}", "-12") == 1.0
    assert adapter.compute_score("covgym/Arithmetic-v0", "so \\boxed{12}", "-12") == 0.0
    extra = {"env_kwargs": json.dumps({"format_reward": 0.25})}
    assert adapter.compute_score("covgym/Arithmetic-v0", "so \\boxed{12}", "-12", extra) == 0.25
    with pytest.raises(ValueError, match="env_seed"):  # Countdown's grader needs the problem's numbers
        adapter.compute_score("covgym/Countdown-v0", "1+2", "1+2")


def test_compute_score_refuses_data_from_other_env_settings(tmp_path):
    row = adapter.verl_rows("covgym/Arithmetic-v0", num_prompts=1, seed=2)[0]
    extra = {**row["extra_info"], "env_kwargs": json.dumps({"split": "train", "num_terms": 5})}
    with pytest.raises(ValueError, match="same env_id and env_kwargs"):
        adapter.compute_score(row["data_source"], "0", row["reward_model"]["ground_truth"], extra)
    with pytest.raises(ValueError, match="not registered"):
        adapter.compute_score("covgym/Nope-v0", "0", "0")
    with pytest.raises(ValueError, match="SingleTurnEnv"):
        adapter.verl_rows("covgym/Maze-v0", num_prompts=1)


def test_parquet_dataset_round_trips(tmp_path):
    pandas = pytest.importorskip("pandas", reason="pandas/pyarrow not installed: Parquet output unavailable")
    pytest.importorskip("pyarrow", reason="pyarrow not installed: Parquet output unavailable")
    path = adapter.write_verl_dataset(tmp_path / "train.parquet", num_prompts=4, seed=3, chat=False)
    frame = pandas.read_parquet(path)
    assert list(frame.columns) == ["data_source", "prompt", "ability", "reward_model", "extra_info"]
    for _, row in frame.iterrows():
        assert isinstance(row["prompt"], str) and row["prompt"].startswith("Compute:")
        answer = row["reward_model"]["ground_truth"]
        assert adapter.compute_score(row["data_source"], f"\\boxed{{{answer}}}", answer, row["extra_info"]) == 1.0


# ---------------------------------------------------------------------------------------------- the real verl
HAS_VERL = importlib.util.find_spec("verl") is not None
needs_verl = pytest.mark.skipif(not HAS_VERL, reason="verl is not installed (optional; install it separately to run "
                                                     "the real-registry tests)")


@needs_verl
@pytest.mark.parametrize("name", ["grpo", "clip_cov", "kl_cov"])
def test_real_verl_registry_lookup_matches_direct_call(name):
    from verl.trainer.ppo.core_algos import get_policy_loss_fn

    adapter.register_verl_policy_losses()
    function = get_policy_loss_fn(f"covgym_{name}")
    old, log_prob, advantages, mask = random_inputs(seed=11)
    leaf = log_prob.detach().clone().requires_grad_(True)
    result = function(old_log_prob=old, log_prob=leaf, advantages=advantages, response_mask=mask,
                      loss_agg_mode="token-mean", config=verl_config(**SELECTING))
    result[0].backward()
    fields = {field.name for field in algorithms.get(name).hyperparameters()}
    expected = {key: value for key, value in SELECTING.items() if key in fields}
    want_loss, want_grad = direct(name, old, log_prob, advantages, mask, **expected)
    torch.testing.assert_close(result[0].detach(), want_loss)
    torch.testing.assert_close(leaf.grad, want_grad)


@needs_verl
def test_real_verl_vanilla_equals_covgym_grpo():
    from omegaconf import OmegaConf
    from verl.trainer.ppo.core_algos import get_policy_loss_fn

    adapter.register_verl_policy_losses(["grpo"])
    old, log_prob, advantages, mask = random_inputs(seed=12)
    config = OmegaConf.create({"clip_ratio": 0.2, "clip_ratio_low": 0.2, "clip_ratio_high": 0.28, "clip_ratio_c": 3.0,
                               "global_batch_info": {}, "policy_loss": {"loss_mode": "vanilla"}})
    theirs = get_policy_loss_fn("vanilla")(old_log_prob=old, log_prob=log_prob.detach(), advantages=advantages,
                                           response_mask=mask, loss_agg_mode="token-mean", config=config)
    ours = get_policy_loss_fn("covgym_grpo")(old_log_prob=old, log_prob=log_prob.detach(), advantages=advantages,
                                             response_mask=mask, loss_agg_mode="token-mean", config=config)
    torch.testing.assert_close(ours[0], theirs[0])


@needs_verl
@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_real_verl_agg_loss_equals_the_adapters_aggregation(mode):
    from verl.trainer.ppo.core_algos import agg_loss

    old, _, advantages, mask = random_inputs(seed=13)
    info = {"dp_size": 2, "batch_num_tokens": int(mask.sum()) * 2, "global_batch_size": 2 * B, "loss_scale_factor": 7}
    config = verl_config()
    config.global_batch_info = dict(info)
    ours, _, _ = call(adapter.verl_policy_loss("grpo"), old, old.clone(), advantages, mask, loss_agg_mode=mode,
                      config=config)
    theirs = agg_loss(loss_mat=-advantages, loss_mask=mask.float(), loss_agg_mode=mode, **info)
    torch.testing.assert_close(ours, theirs.float())
