"""covgym.testing.check_algorithm: every built-in algorithm passes; each kind of broken algorithm is caught with a
readable counterexample (so every property can fail)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import covgym.algorithms as algorithms
from covgym.algorithms import functional as F
from covgym.testing import PROPERTIES, check_algorithm

FAST = {"max_examples": 10}


@pytest.mark.parametrize("name", algorithms.names())
def test_every_builtin_algorithm_passes(name):
    checked = check_algorithm(name, **FAST)
    assert {"masked_gradient", "padding", "extreme_inputs", "metrics", "advantages_masked", "entropy_law"} <= set(
        checked)


def test_accepts_a_name_a_class_or_an_instance_and_a_composition():
    assert check_algorithm(algorithms.GRPO, **FAST) == check_algorithm(algorithms.get("grpo")(clip_ratio=0.1), **FAST)
    check_algorithm("rloo+kl_cov", **FAST)
    with pytest.raises(KeyError, match="unknown algorithm"):
        check_algorithm("nope")
    with pytest.raises(TypeError, match="not an algorithm"):
        check_algorithm(object())
    with pytest.raises(ValueError, match="unknown properties"):
        check_algorithm("grpo", properties=("nope",))


# ---------------------------------------------------------------------------- broken algorithms
class Loss:
    """A minimal user algorithm (no covgym base class): GRPO's advantages and a plain policy-gradient loss."""

    name = "plain"

    def advantages(self, batch):
        return algorithms.get("grpo")().advantages(batch)

    def token_loss(self, log_probs, old_log_probs, advantages, mask):
        return -advantages * log_probs * mask

    def policy_loss(self, log_probs, old_log_probs, advantages, response_mask, entropy=None):
        mask = response_mask
        safe = torch.where(mask > 0, log_probs, torch.zeros_like(log_probs))
        adv = torch.where(mask > 0, advantages, torch.zeros_like(advantages))
        loss = self.token_loss(safe, old_log_probs, adv, mask).sum() / mask.sum().clamp_min(1.0)
        return loss, {"pg_loss": float(loss.detach())}


class Leaky(Loss):
    name = "leaky"

    def policy_loss(self, log_probs, old_log_probs, advantages, response_mask, entropy=None):
        loss = -(advantages * log_probs).mean()  # forgets the mask: prompt and padding tokens are trained on
        return loss, {"pg_loss": float(loss.detach())}


class MeanOverPadding(Loss):
    name = "mean_over_padding"

    def policy_loss(self, log_probs, old_log_probs, advantages, response_mask, entropy=None):
        loss = -(advantages * log_probs * response_mask).sum() / response_mask.numel()  # counts padding
        return loss, {"pg_loss": float(loss.detach())}


class LogEntropyBonus(Loss):
    name = "log_entropy_bonus"

    def policy_loss(self, log_probs, old_log_probs, advantages, response_mask, entropy=None):
        loss, metrics = super().policy_loss(log_probs, old_log_probs, advantages, response_mask, entropy)
        mask = response_mask
        safe = torch.where(mask > 0, entropy, torch.ones_like(entropy))
        bonus = (torch.log(safe) * mask).sum() / mask.sum().clamp_min(1.0)  # −inf for a peaked policy (H = 0)
        return loss - 0.01 * bonus, metrics


class TensorMetrics(Loss):
    name = "tensor_metrics"

    def policy_loss(self, log_probs, old_log_probs, advantages, response_mask, entropy=None):
        loss, _ = super().policy_loss(log_probs, old_log_probs, advantages, response_mask, entropy)
        return loss, {"pg_loss": loss}  # a tensor, not a float: breaks JSON logging and keeps the graph alive


class RawRewardAdvantages(Loss):
    name = "raw_rewards"

    def advantages(self, batch):
        return batch.rewards[:, None].expand_as(batch.response_mask).clone()  # not masked


class FalselyDeclared(Loss):
    name = "falsely_declared"
    advantage_invariants = ("zero_mean_per_group", "shift_invariant")

    def advantages(self, batch):
        return F.broadcast_over_response(batch.rewards, batch.response_mask)  # no baseline at all


class CorrectlyDeclared(Loss):
    name = "correctly_declared"
    advantage_invariants = ("zero_mean_per_group", "shift_invariant")

    def advantages(self, batch):
        centered = batch.rewards.double() - F.group_mean(batch.rewards, batch.group_ids)
        return F.broadcast_over_response(centered.float(), batch.response_mask)


class SingletonMeanDeclared(CorrectlyDeclared):
    name = "rloo_claiming_zero_mean"

    def advantages(self, batch):  # RLOO: n/(n-1)·(r − mean): zero mean per group, so both claims hold
        return F.broadcast_over_response(F.rloo_advantages(batch.rewards, batch.group_ids), batch.response_mask)


@pytest.mark.parametrize(("algorithm", "prop", "says"), [
    (Leaky(), "masked_gradient", "but response_mask"),
    (MeanOverPadding(), "padding", "with padding, expected"),
    (LogEntropyBonus(), "extreme_inputs", "loss = "),
    (TensorMetrics(), "metrics", "not a float"),
    (RawRewardAdvantages(), "advantages_masked", "but response_mask"),
    (FalselyDeclared(), "group_invariants", "declared"),
])
def test_each_property_catches_its_violation_with_a_counterexample(algorithm, prop, says):
    with pytest.raises(AssertionError) as caught:
        check_algorithm(algorithm, **FAST)
    message = str(caught.value)
    assert message.startswith(f"check_algorithm({algorithm.name!r}): {prop}:")
    assert says in message
    assert "replay: covgym.testing.check_algorithm" in message
    assert ("inputs (" in message) or ("batch: " in message)  # the counterexample itself


def test_a_leak_is_shrunk_to_a_small_readable_counterexample():
    with pytest.raises(AssertionError) as caught:
        check_algorithm(Leaky(), properties=("masked_gradient",), **FAST)
    message = str(caught.value)
    assert "response_mask = [[0.0]]" in message  # shrunk to one masked token
    assert len(message.splitlines()) < 15


def test_declared_invariants_that_hold_pass_and_only_then_run():
    assert "group_invariants" in check_algorithm(CorrectlyDeclared(), **FAST)
    assert "group_invariants" in check_algorithm(SingletonMeanDeclared(), **FAST)
    assert "group_invariants" not in check_algorithm(Loss(), **FAST)


def test_the_entropy_law_runs_the_step_on_an_exact_policy_and_catches_a_non_finite_one():
    """Normalising by the advantages' spread divides by zero when a group's rewards are all equal (A = 0)."""

    class SpreadNormalised(Loss):
        name = "spread_normalised"

        def token_loss(self, log_probs, old_log_probs, advantages, mask):
            return -advantages / advantages.abs().sum() * log_probs * mask

    with pytest.raises(AssertionError, match=r"entropy_law: .*\n  d loss / d logits = \[\[nan"):
        check_algorithm(SpreadNormalised(), properties=("entropy_law",), **FAST)
    assert check_algorithm(Loss(), properties=("entropy_law",), **FAST) == ["entropy_law"]


def test_same_seed_replays_the_same_result():
    first = second = None
    for attempt in range(2):
        try:
            check_algorithm(Leaky(), seed=3, **FAST)
        except AssertionError as error:
            first, second = (str(error), second) if attempt == 0 else (first, str(error))
    assert first == second is not None


def test_property_names_are_unique():
    assert len({p.name for p in PROPERTIES}) == len(PROPERTIES)


@pytest.mark.parametrize(("estimator", "invariants"), [
    ("grpo", ("zero_mean_per_group", "shift_invariant")),
    ("dr_grpo", ("zero_mean_per_group", "shift_invariant")),
    ("rloo", ("zero_mean_per_group", "shift_invariant")),
    ("reinforce_pp", ("shift_invariant",)),  # whitened over the whole batch: a group's mean is not zero
    ("gpg", ("zero_mean_per_group",)),  # α counts the non-zero scores: a shift changes it
])
def test_builtin_group_estimators_satisfy_the_invariants_they_can_declare(monkeypatch, estimator, invariants):
    monkeypatch.setattr(algorithms.part(estimator), "advantage_invariants", invariants, raising=False)
    assert check_algorithm(estimator, properties=("group_invariants",), **FAST) == ["group_invariants"]
    wrong = tuple(i for i in ("zero_mean_per_group", "shift_invariant") if i not in invariants)
    if wrong:  # and the check tells a false declaration apart
        monkeypatch.setattr(algorithms.part(estimator), "advantage_invariants", wrong)
        with pytest.raises(AssertionError, match=f"declared {wrong[0]}"):
            check_algorithm(estimator, properties=("group_invariants",), **FAST)


def test_the_command_passes_fails_and_rejects_bad_input_in_one_line(capsys):
    from covgym import cli

    assert cli.main(["check-algorithm", "kl_cov", "--params", '{"kl_cov_ratio": 0.2}', "--max-examples", "5"]) == 0
    assert "kl_cov: passed" in capsys.readouterr().out
    for argv in (["check-algorithm", "nope"], ["check-algorithm", "grpo", "--params", '{"nope": 1}'],
                 ["check-algorithm", "grpo", "--max-examples", "0"]):
        assert cli.main(argv) == cli.EXIT_USAGE, argv
        err = capsys.readouterr().err
        assert err.startswith("covgym: error:") and err.count("\n") == 1, err
