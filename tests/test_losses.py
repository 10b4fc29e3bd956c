"""Policy and value losses: masking, padding, PPO-clip, Clip-Cov, KL-Cov, entropy bonus, aggregation, numbers."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import covgym.algorithms as algorithms
from covgym.algorithms import functional as F
from covgym.core import metrics as covgym_metrics

SETTINGS = settings(deadline=None, max_examples=40)
SEEDS = st.integers(0, 2**31 - 1)


def random_inputs(seed: int, b: int, t: int, p_mask: float = 0.6, move: float = 0.4, adv_scale: float = 2.0
                  ) -> dict[str, torch.Tensor]:
    """float64 inputs of a policy loss; log_probs and entropy are leaves with gradient."""
    g = torch.Generator().manual_seed(seed)
    old = -3 * torch.rand(b, t, generator=g, dtype=torch.float64)
    return {
        "log_probs": (old + move * torch.randn(b, t, generator=g, dtype=torch.float64)).requires_grad_(True),
        "old_log_probs": old,
        "advantages": adv_scale * torch.randn(b, t, generator=g, dtype=torch.float64),
        "response_mask": (torch.rand(b, t, generator=g, dtype=torch.float64) < p_mask).double(),
        "entropy": (2 * torch.rand(b, t, generator=g, dtype=torch.float64)).requires_grad_(True),
        "ref_log_probs": old + 0.3 * torch.randn(b, t, generator=g, dtype=torch.float64),
    }


def run_loss(algorithm, inputs, generator_seed: int = 0, **kwargs):
    algorithm.set_generator(torch.Generator().manual_seed(generator_seed))
    for name in ("log_probs", "entropy"):
        inputs[name].grad = None
    loss, metrics = algorithm.policy_loss(**inputs, **kwargs)
    loss.backward()
    grads = [torch.zeros_like(inputs[name]) if inputs[name].grad is None else inputs[name].grad.clone()
             for name in ("log_probs", "entropy")]
    return loss.detach(), metrics, grads[0], grads[1]


ALL_TERMS = {"entropy_coeff": 0.05, "use_kl_loss": True, "kl_loss_coef": 0.1}


def build(name: str, **overrides):
    cls = algorithms.get(name)
    fields = {f.name for f in cls.hyperparameters()}
    params = {k: v for k, v in {**ALL_TERMS, **overrides}.items() if k in fields}  # what this algorithm reads
    if name == "clip_cov":
        params.update(clip_cov_ratio=0.2, clip_cov_lb=-0.5, clip_cov_ub=5.0)  # make it select something
    if name == "kl_cov":
        params.update(kl_cov_ratio=0.2)
    return cls(**params)


# ---------------------------------------------------------------------------- masking and padding
@SETTINGS
@given(st.sampled_from(algorithms.names()), st.sampled_from(F.LOSS_AGG_MODES), st.integers(1, 4), st.integers(1, 6),
       st.integers(0, 3), st.integers(0, 3), SEEDS, st.sampled_from([0.0, math.inf, math.nan, -1e30]))
def test_masked_positions_get_zero_gradient_and_padding_changes_nothing(name, mode, b, t, extra_rows, extra_cols,
                                                                          seed, garbage):
    algorithm = build(name, loss_agg_mode=mode, loss_scale_factor=7.0)
    inputs = random_inputs(seed, b, t)
    loss, metrics, grad_lp, grad_h = run_loss(algorithm, inputs)
    masked_out = inputs["response_mask"] == 0
    assert torch.all(grad_lp[masked_out] == 0) and torch.all(grad_h[masked_out] == 0)

    # Insert padding rows and columns (mask 0, garbage values) at random places.
    g = torch.Generator().manual_seed(seed + 1)
    rows = torch.sort(torch.randperm(b + extra_rows, generator=g)[:b]).values
    cols = torch.sort(torch.randperm(t + extra_cols, generator=g)[:t]).values
    padded = {}
    for key, value in inputs.items():
        fill = 0.0 if key == "response_mask" else garbage
        big = torch.full((b + extra_rows, t + extra_cols), fill, dtype=torch.float64)
        big[rows[:, None], cols[None, :]] = value.detach()
        padded[key] = big.requires_grad_(key in ("log_probs", "entropy"))
    padded_loss, padded_metrics, padded_grad_lp, padded_grad_h = run_loss(algorithm, padded)
    torch.testing.assert_close(padded_loss, loss, atol=1e-10, rtol=1e-9)
    torch.testing.assert_close(padded_grad_lp[rows[:, None], cols[None, :]], grad_lp, atol=1e-12, rtol=1e-9)
    torch.testing.assert_close(padded_grad_h[rows[:, None], cols[None, :]], grad_h, atol=1e-12, rtol=1e-9)
    assert torch.count_nonzero(padded_grad_lp) == torch.count_nonzero(grad_lp)
    assert padded_metrics.keys() == metrics.keys()
    for key in metrics:
        assert padded_metrics[key] == pytest.approx(metrics[key], rel=1e-9, abs=1e-10), key


# ---------------------------------------------------------------------------- aggregation
def slow_aggregate(loss: list[list[float]], mask: list[list[float]], mode: str, norm: float) -> float:
    sums = [sum(l * m for l, m in zip(lr, mr)) for lr, mr in zip(loss, mask)]
    counts = [sum(mr) for mr in mask]
    if mode == "token-mean":
        return sum(sums) / max(sum(counts), 1.0)
    live = [(s, c) for s, c in zip(sums, counts) if c > 0]
    if not live:
        return 0.0
    if mode == "seq-mean-token-mean":
        return sum(s / c for s, c in live) / len(live)
    value = sum(s for s, _ in live) / len(live)
    return value / norm if mode == "seq-mean-token-sum-norm" else value


@SETTINGS
@given(st.sampled_from(F.LOSS_AGG_MODES), st.integers(1, 6), st.integers(1, 8), SEEDS)
def test_aggregation_matches_slow_loop(mode, b, t, seed):
    inputs = random_inputs(seed, b, t)
    loss = inputs["advantages"]
    got = F.aggregate_loss(loss, inputs["response_mask"], mode)
    expected = slow_aggregate(loss.tolist(), inputs["response_mask"].tolist(), mode, float(t))
    assert float(got) == pytest.approx(expected, rel=1e-9, abs=1e-12)


@SETTINGS
@given(st.sampled_from(F.LOSS_AGG_MODES), st.integers(2, 6), st.integers(1, 8), SEEDS, st.data())
def test_aggregation_with_global_counts_sums_over_shards(mode, b, t, seed, data):
    inputs = random_inputs(seed, b, t)
    loss, mask = inputs["advantages"], inputs["response_mask"]
    split = data.draw(st.integers(1, b - 1))
    tokens, seqs = float(mask.sum()), float((mask.sum(-1) > 0).sum())
    whole = F.aggregate_loss(loss, mask, mode, loss_scale_factor=5.0)
    shards = sum(F.aggregate_loss(loss[part], mask[part], mode, tokens, seqs, loss_scale_factor=5.0)
                 for part in (slice(0, split), slice(split, b)))
    torch.testing.assert_close(shards, whole)


def test_aggregation_numbers():
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 9.0, 9.0], [7.0, 7.0, 7.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # the empty row never counts
    assert float(F.aggregate_loss(loss, mask, "token-mean")) == pytest.approx(10 / 4)
    assert float(F.aggregate_loss(loss, mask, "seq-mean-token-sum")) == pytest.approx((6 + 4) / 2)
    assert float(F.aggregate_loss(loss, mask, "seq-mean-token-mean")) == pytest.approx((2 + 4) / 2)
    assert float(F.aggregate_loss(loss, mask, "seq-mean-token-sum-norm")) == pytest.approx(5 / 3)
    assert float(F.aggregate_loss(loss, mask, "seq-mean-token-sum-norm", loss_scale_factor=10)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="loss_agg_mode"):
        F.aggregate_loss(loss, mask, "mean")


# ---------------------------------------------------------------------------- PPO-clip
@SETTINGS
@given(st.integers(1, 4), st.integers(1, 8), SEEDS, st.floats(0.05, 0.4), st.floats(0.05, 0.4),
       st.sampled_from([None, 2.0, 3.0]))
def test_ppo_clip_is_minus_a_ratio_unless_clipped_where_the_gradient_vanishes(b, t, seed, low, high, dual):
    inputs = random_inputs(seed, b, t, move=0.6)
    lp, old, adv = inputs["log_probs"], inputs["old_log_probs"], inputs["advantages"]
    loss, maps = F.ppo_clip_token_loss(lp, old, adv, low, high, dual)
    loss.sum().backward()
    ratio = torch.exp(lp.detach() - old)
    clipped = ((adv > 0) & (ratio > 1 + high)) | ((adv < 0) & (ratio < 1 - low))  # by definition
    assert torch.equal(maps["clipped"], clipped)
    # for A < 0 the loss is −A·ratio once ratio > 1 − ε_low, so the dual bound acts exactly where ratio > c
    dual_active = (adv < 0) & (ratio > dual) if dual is not None else torch.zeros_like(clipped)
    assert torch.equal(maps["dual_clipped"], dual_active)
    free = ~clipped & ~dual_active
    torch.testing.assert_close(loss.detach()[free], (-adv * ratio)[free])
    torch.testing.assert_close(lp.grad[free], (-adv * ratio)[free])
    assert torch.all(lp.grad[~free] == 0)
    if dual is not None:
        torch.testing.assert_close(loss.detach()[dual_active], (-adv * dual)[dual_active])


def test_ppo_clip_numbers():
    log_ratio = torch.tensor([[0.5, -0.5, 1.5, 0.1]])
    adv = torch.tensor([[1.0, -1.0, -1.0, 2.0]])
    loss, maps = F.ppo_clip_token_loss(log_ratio, torch.zeros(1, 4), adv, 0.2, 0.2, 3.0)
    # A=1, r=e^.5: max(−1.6487, −1.2) = −1.2; A=−1, r=e^−.5: max(0.6065, 0.8) = 0.8;
    # A=−1, r=e^1.5: max(4.4817, 1.2) = 4.4817, dual-clipped to 3; A=2, r=e^.1: −2.2103 (free)
    expected = torch.tensor([[-1.2, 0.8, 3.0, -2 * math.exp(0.1)]])
    torch.testing.assert_close(loss, expected)
    assert maps["clipped"].tolist() == [[True, True, False, False]]
    assert maps["dual_clipped"].tolist() == [[False, False, True, False]]
    grpo_loss, metrics = algorithms.get("grpo")().policy_loss(log_ratio, torch.zeros(1, 4), adv, torch.ones(1, 4))
    assert float(grpo_loss) == pytest.approx(float(expected.mean()))
    assert metrics["clip_frac"] == pytest.approx(0.5) and metrics["clip_frac_lower"] == pytest.approx(0.25)
    assert metrics["approx_kl"] == pytest.approx(-(0.5 - 0.5 + 1.5 + 0.1) / 4)


def test_clip_higher_uses_asymmetric_bounds():
    algorithm = algorithms.get("clip_higher")()
    assert (algorithm.low, algorithm.high) == (0.2, 0.28)
    log_ratio = torch.log(torch.tensor([[1.25, 1.25, 0.79]]))
    loss, _ = algorithm.policy_loss(log_ratio, torch.zeros(1, 3), torch.tensor([[1.0, 1.0, -1.0]]), torch.ones(1, 3))
    # 1.25 < 1.28 is not clipped (it would be at ε = 0.2); 0.79 < 0.8 is clipped to 0.8
    assert float(loss.detach()) == pytest.approx((-1.25 - 1.25 + 0.8) / 3)


# ---------------------------------------------------------------------------- Clip-Cov
def slow_covariance(log_probs: list[list[float]], adv: list[list[float]], mask: list[list[float]]
                    ) -> list[list[float]]:
    cells = [(i, j) for i, row in enumerate(mask) for j, m in enumerate(row) if m > 0]
    n = max(len(cells), 1)
    mean_a = sum(adv[i][j] for i, j in cells) / n
    mean_l = sum(log_probs[i][j] for i, j in cells) / n
    return [[(adv[i][j] - mean_a) * (log_probs[i][j] - mean_l) if m > 0 else 0.0 for j, m in enumerate(row)]
            for i, row in enumerate(mask)]


@SETTINGS
@given(st.integers(1, 5), st.integers(1, 10), SEEDS, st.floats(0.01, 0.6), st.floats(-1.0, 2.0),
       st.floats(0.2, 6.0))
def test_clip_cov_detaches_the_right_number_of_eligible_tokens(b, t, seed, ratio, lb, width):
    inputs = random_inputs(seed, b, t, move=0.3)
    lp, old, adv, mask = (inputs[k] for k in ("log_probs", "old_log_probs", "advantages", "response_mask"))
    ub = lb + width
    generator = torch.Generator().manual_seed(seed)
    loss, maps = F.clip_cov_token_loss(lp, old, adv, mask, generator, 0.2, 0.2, ratio, lb, ub)
    loss.sum().backward()
    cov = torch.tensor(slow_covariance(lp.tolist(), adv.tolist(), mask.tolist()), dtype=torch.float64)
    torch.testing.assert_close(maps["covariance"], cov)
    ratio_values = torch.exp(lp.detach() - old)
    already_clipped = ((adv > 0) & (ratio_values > 1.2)) | ((adv < 0) & (ratio_values < 0.8))
    eligible = (mask > 0) & ~already_clipped & (cov > lb) & (cov < ub)
    n_tokens = int(mask.sum())
    selected = maps["selected"]
    assert int(selected.sum()) == min(max(int(ratio * n_tokens), 1), int(eligible.sum()))
    assert not torch.any(selected & ~eligible)  # inside (lb, ub), unclipped, in the mask
    ppo, _ = F.ppo_clip_token_loss(lp.detach(), old, adv, 0.2, 0.2, None)
    torch.testing.assert_close(loss.detach(), torch.where(selected, torch.zeros_like(ppo), ppo))
    assert torch.all(lp.grad[selected] == 0)


@SETTINGS
@given(st.sampled_from(F.LOSS_AGG_MODES), st.integers(1, 5), st.integers(1, 8), SEEDS)
def test_clip_cov_equals_ppo_clip_when_no_token_is_eligible(mode, b, t, seed):
    inputs = random_inputs(seed, b, t)
    clip_cov = algorithms.get("clip_cov")(clip_cov_lb=1e6, clip_cov_ub=2e6, clip_cov_ratio=0.5, loss_agg_mode=mode)
    loss, metrics, grad, _ = run_loss(clip_cov, inputs)
    ppo_loss, ppo_metrics, ppo_grad, _ = run_loss(algorithms.get("grpo")(clip_ratio_c=None, loss_agg_mode=mode),
                                                  inputs)
    torch.testing.assert_close(loss, ppo_loss)
    torch.testing.assert_close(grad, ppo_grad)
    assert metrics["clip_cov_detached_frac"] == 0.0 and metrics["clip_frac"] == ppo_metrics["clip_frac"]


def test_clip_cov_draw_is_uniform_and_replayable():
    mask = torch.ones(1, 6)
    adv = torch.tensor([[3.0, 3.0, 3.0, -3.0, -3.0, -3.0]])
    lp = torch.tensor([[-0.1, -0.1, -0.1, -2.1, -2.1, -2.1]])  # every cov = 3·1 = 3 ∈ (1, 5): all eligible
    counts = torch.zeros(6)
    generator = torch.Generator().manual_seed(123)
    for _ in range(3000):
        _, maps = F.clip_cov_token_loss(lp, lp, adv, mask, generator, clip_cov_ratio=2 / 6)
        assert int(maps["selected"].sum()) == 2
        counts += maps["selected"][0]
    assert torch.all((counts / 3000 - 1 / 3).abs() < 0.04)  # each token chosen with probability 2/6
    first = algorithms.get("clip_cov")(clip_cov_ratio=2 / 6)
    second = algorithms.get("clip_cov")(clip_cov_ratio=2 / 6)  # no generator set: seeded by clip_cov_seed
    draws = [[a.token_loss(lp, lp, adv, mask)[1]["selected"] for _ in range(5)] for a in (first, second)]
    assert all(torch.equal(x, y) for x, y in zip(*draws))


def test_clip_cov_numbers_and_metric_names():
    # A = [2, 0, 0, −2], log π = [−0.1, −1, −1, −3]: mean log π = −1.275, cov = [2.35, 0, 0, 3.45].
    # With ub = 3 only token 0 is eligible; ratio 1 so nothing is clipped; its loss −2 is detached.
    adv = torch.tensor([[2.0, 0.0, 0.0, -2.0]])
    lp = torch.tensor([[-0.1, -1.0, -1.0, -3.0]], requires_grad=True)
    algorithm = algorithms.get("clip_cov")(clip_cov_ub=3.0)
    loss, metrics = algorithm.policy_loss(lp, lp.detach(), adv, torch.ones(1, 4))
    loss.backward()
    assert float(loss.detach()) == pytest.approx(2 / 4)  # (0 + 0 + 0 + 2) / 4
    torch.testing.assert_close(lp.grad, torch.tensor([[0.0, 0.0, 0.0, 0.5]]))
    assert metrics["clip_cov_detached_frac"] == pytest.approx(0.25)
    assert metrics["clip_frac"] == 0.0  # the detached fraction is not PPO's clip fraction
    assert metrics["minibatch_cov_topk_mean"] == pytest.approx(2.35)
    assert metrics["minibatch_cov_mean"] == pytest.approx((2.35 + 3.45) / 4)


# ---------------------------------------------------------------------------- KL-Cov
@SETTINGS
@given(st.sampled_from(F.LOSS_AGG_MODES), st.integers(1, 5), st.integers(1, 8), SEEDS, st.floats(0.001, 0.9))
def test_kl_cov_with_zero_beta_is_the_unclipped_policy_gradient(mode, b, t, seed, k):
    inputs = random_inputs(seed, b, t, move=1.0)
    loss, _, grad, _ = run_loss(algorithms.get("kl_cov")(ppo_kl_coef=0.0, kl_cov_ratio=k, loss_agg_mode=mode),
                                inputs)
    lp, old, adv, mask = (inputs[k] for k in ("log_probs", "old_log_probs", "advantages", "response_mask"))
    lp.grad = None
    reference = F.aggregate_loss(-adv * torch.exp(lp - old), mask, mode)
    reference.backward()
    torch.testing.assert_close(loss, reference.detach())
    torch.testing.assert_close(grad, lp.grad)


@SETTINGS
@given(st.integers(1, 5), st.integers(1, 10), SEEDS, st.floats(0.001, 0.9), st.floats(0.0, 3.0))
def test_kl_cov_penalises_exactly_the_top_k_tokens(b, t, seed, k, beta):
    inputs = random_inputs(seed, b, t, move=0.5)
    lp, old, adv, mask = (inputs[key] for key in ("log_probs", "old_log_probs", "advantages", "response_mask"))
    n_tokens = int(mask.sum())
    assume(n_tokens > 0)
    loss, maps = F.kl_cov_token_loss(lp, old, adv, mask, k, beta)
    cov = slow_covariance(lp.tolist(), adv.tolist(), mask.tolist())
    ranked = sorted(((cov[i][j], (i, j)) for i in range(b) for j in range(t) if mask[i, j] > 0), reverse=True)
    n = max(1, int(k * n_tokens))
    got = {tuple(cell) for cell in torch.nonzero(maps["selected"]).tolist()}
    assert len(got) == n
    if n == len(ranked) or ranked[n - 1][0] - ranked[n][0] > 1e-9:
        assert got == {cell for _, cell in ranked[:n]}
    else:  # a tie at the boundary (e.g. N = 2 always ties): any top-n set is right
        chosen = [value for value, cell in ranked if cell in got]
        others = [value for value, cell in ranked if cell not in got]
        assert min(chosen) >= max(others) - 1e-9
    ratio = torch.exp(lp.detach() - old)
    penalty = beta * (lp.detach() - old).abs() * maps["selected"]
    torch.testing.assert_close(loss.detach(), -adv * ratio + penalty)


@SETTINGS
@given(st.integers(1, 4), st.integers(1, 8), SEEDS)
def test_kl_cov_is_a_no_op_on_policy(b, t, seed):
    inputs = random_inputs(seed, b, t)
    inputs["old_log_probs"] = inputs["log_probs"].detach().clone()
    loss, _, grad, _ = run_loss(algorithms.get("kl_cov")(kl_cov_ratio=0.5), inputs)
    plain_loss, _, plain_grad, _ = run_loss(algorithms.get("kl_cov")(kl_cov_ratio=0.5, ppo_kl_coef=0.0), inputs)
    torch.testing.assert_close(loss, plain_loss)
    torch.testing.assert_close(grad, plain_grad)
    assert algorithms.get("kl_cov").needs_off_policy_minibatches


def test_kl_cov_numbers():
    # old = [−0.1, −1, −1, −3], log π = old + [0.2, 0, 0, −0.1] = [0.1, −1, −1, −3.1], mean −1.25;
    # A = [2, 0, 0, −2] → cov = [2.7, 0, 0, 3.7]: top-1 is token 3.
    old = torch.tensor([[-0.1, -1.0, -1.0, -3.0]])
    lp = old + torch.tensor([[0.2, 0.0, 0.0, -0.1]])
    adv = torch.tensor([[2.0, 0.0, 0.0, -2.0]])
    loss, metrics = algorithms.get("kl_cov")().policy_loss(lp, old, adv, torch.ones(1, 4))
    token0, token3 = -2 * math.exp(0.2), 2 * math.exp(-0.1) + 1.0 * 0.1
    assert float(loss.detach()) == pytest.approx((token0 + token3) / 4, rel=1e-5)
    assert metrics["kl_cov_penalized_frac"] == pytest.approx(0.25)
    assert metrics["minibatch_cov_topk_mean"] == pytest.approx(3.7, rel=1e-5)
    assert metrics["abs_kl"] == pytest.approx(0.3 / 4, rel=1e-5)
    loss_two, _ = algorithms.get("kl_cov")(kl_cov_ratio=0.5).policy_loss(lp, old, adv, torch.ones(1, 4))
    assert float(loss_two) == pytest.approx((token0 + 0.2 + token3) / 4, rel=1e-5)


# ---------------------------------------------------------------------------- entropy bonus
@settings(deadline=None, max_examples=30)
@given(st.integers(1, 3), st.integers(1, 5), st.integers(2, 6), SEEDS, st.sampled_from(F.LOSS_AGG_MODES))
def test_entropy_bonus_raises_entropy_relative_to_the_same_update_without_it(b, t, v, seed, mode):
    g = torch.Generator().manual_seed(seed)
    logits0 = 2 * torch.randn(b, t, v, generator=g, dtype=torch.float64)
    tokens = torch.randint(0, v, (b, t), generator=g)
    mask = (torch.rand(b, t, generator=g) < 0.7).double()
    assume(mask.sum() > 0)
    advantages = torch.randn(b, t, generator=g, dtype=torch.float64) * mask

    def entropy_after_one_step(algorithm) -> float:
        logits = logits0.clone().requires_grad_(True)
        log_probs, entropy = covgym_metrics.log_probs_and_entropy(logits, tokens)
        loss, _ = algorithm.policy_loss(log_probs, log_probs.detach(), advantages, mask, entropy=entropy)
        loss.backward()
        with torch.no_grad():
            stepped = logits - 0.01 * logits.grad
            return float(covgym_metrics.masked_mean(covgym_metrics.entropy_from_logits(stepped), mask))

    logits = logits0.clone().requires_grad_(True)
    entropy_gradient = torch.autograd.grad(
        covgym_metrics.masked_mean(covgym_metrics.entropy_from_logits(logits), mask), logits)[0]
    assume(float(entropy_gradient.norm()) > 1e-3)
    with_bonus = entropy_after_one_step(algorithms.get("entropy_bonus")(entropy_coeff=0.1, loss_agg_mode=mode))
    without = entropy_after_one_step(algorithms.get("grpo")(loss_agg_mode=mode))
    assert with_bonus > without
    assert algorithms.get("entropy_bonus")().entropy_coeff == 0.005


def test_entropy_bonus_numbers():
    entropy = torch.tensor([[1.0, 3.0]], requires_grad=True)
    lp = torch.zeros(1, 2)
    loss, metrics = algorithms.get("entropy_bonus")(entropy_coeff=0.5).policy_loss(
        lp, lp, torch.zeros(1, 2), torch.ones(1, 2), entropy=entropy)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(-0.5 * 2.0)
    torch.testing.assert_close(entropy.grad, torch.tensor([[-0.25, -0.25]]))
    assert metrics["entropy"] == pytest.approx(2.0)


# ---------------------------------------------------------------------------- KL to a reference
def test_kl_penalty_numbers_and_straight_through_gradient():
    lp = torch.tensor([-1.0], requires_grad=True)
    ref = torch.tensor([-1.5])
    expected = {"k1": 0.5, "kl": 0.5, "abs": 0.5, "k2": 0.125, "mse": 0.125,
                "k3": math.exp(-0.5) + 0.5 - 1, "low_var_kl": math.exp(-0.5) + 0.5 - 1}
    for kind, value in expected.items():
        assert float(F.kl_penalty(lp.detach(), ref, kind)) == pytest.approx(value), kind
    plus = F.kl_penalty(lp, ref, "k3+")
    assert float(plus.detach()) == pytest.approx(math.exp(-0.5) + 0.5 - 1)
    plus.backward()
    assert float(lp.grad) == pytest.approx(0.5)  # the k2 gradient, logp − ref
    # k3 clamps: ref − logp clamped to ±20 and the value to ≤ 10
    assert float(F.kl_penalty(torch.tensor([0.0]), torch.tensor([-100.0]), "k3")) == pytest.approx(10.0)
    with pytest.raises(ValueError, match="kl_loss_type"):
        F.kl_penalty(lp, ref, "k9")


def test_kl_loss_term_is_added_with_its_coefficient():
    lp, ref = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -2.0]])
    algorithm = algorithms.get("grpo")(use_kl_loss=True, kl_loss_coef=0.2, kl_loss_type="k1")
    loss, metrics = algorithm.policy_loss(lp, lp, torch.zeros(1, 2), torch.ones(1, 2), ref_log_probs=ref)
    assert metrics["kl_loss"] == pytest.approx(0.25) and float(loss.detach()) == pytest.approx(0.2 * 0.25)
    with pytest.raises(ValueError, match="ref_log_probs"):
        algorithm.policy_loss(lp, lp, torch.zeros(1, 2), torch.ones(1, 2))


# ---------------------------------------------------------------------------- value loss
def slow_value_loss(values, old, returns, mask, clip):
    terms, clipped = [], []
    for v, o, r, m in zip(values, old, returns, mask):
        if m > 0:
            vc = min(max(v, o - clip), o + clip)
            terms.append(max((v - r) ** 2, (vc - r) ** 2))
            clipped.append((vc - r) ** 2 > (v - r) ** 2)
    if not terms:
        return 0.0, 0.0
    return 0.5 * sum(terms) / len(terms), sum(clipped) / len(clipped)


def slow_explained_variance(values, returns, mask):
    pairs = [(v, r) for v, r, m in zip(values, returns, mask) if m > 0]

    def var(xs):
        mean = sum(xs) / len(xs)
        return sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)

    return 1 - var([r - v for v, r in pairs]) / (var([r for _, r in pairs]) + 1e-5)


@SETTINGS
@given(st.integers(1, 4), st.integers(1, 8), SEEDS, st.floats(0.05, 1.0))
def test_value_loss_matches_slow_reference(b, t, seed, clip):
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(b, t, generator=g, dtype=torch.float64, requires_grad=True)
    old = values.detach() + 0.8 * torch.randn(b, t, generator=g, dtype=torch.float64)
    returns = torch.randn(b, t, generator=g, dtype=torch.float64)
    mask = (torch.rand(b, t, generator=g) < 0.7).double()
    loss, metrics = algorithms.get("ppo")(cliprange_value=clip).value_loss(values, old, returns, mask)
    flat = [x.reshape(-1).tolist() for x in (values.detach(), old, returns, mask)]
    expected, clip_frac = slow_value_loss(*flat, clip)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert metrics["value_loss"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert metrics["value_clip_frac"] == pytest.approx(clip_frac)
    if mask.sum() > 1:
        assert metrics["explained_variance"] == pytest.approx(
            slow_explained_variance(flat[0], flat[2], flat[3]), rel=1e-7, abs=1e-9)
    loss.backward()
    assert torch.all(values.grad[mask == 0] == 0)


def test_value_loss_numbers():
    values = torch.tensor([[1.0, 0.0, 1.0]])
    old = torch.tensor([[0.2, 1.0, 0.0]])
    returns = torch.tensor([[0.0, 0.8, 0.9]])
    loss, metrics = algorithms.get("ppo")().value_loss(values, old, returns, torch.ones(1, 3))
    # token 0: clip to 0.7, max(1, 0.49) = 1; token 1: clip to 0.5, max(0.64, 0.09) = 0.64;
    # token 2: clip to 0.5, max(0.01, 0.16) = 0.16 (the clipped error wins)
    assert float(loss.detach()) == pytest.approx(0.5 * (1 + 0.64 + 0.16) / 3)
    assert metrics["value_clip_frac"] == pytest.approx(1 / 3)


# ---------------------------------------------------------------------------- metrics
REQUIRED_METRICS = {"pg_loss", "approx_kl", "clip_frac", "clip_frac_lower", "entropy", "kl_loss", "minibatch_cov_mean",
                    "minibatch_cov_topk_mean", "loss"}


@pytest.mark.parametrize("name", algorithms.names())
def test_every_algorithm_reports_the_stable_metrics(name):
    inputs = random_inputs(3, 4, 6)
    _, metrics, _, _ = run_loss(build(name), inputs)
    assert REQUIRED_METRICS <= metrics.keys()
    assert all(isinstance(value, float) and math.isfinite(value) for value in metrics.values())
    selected_metric = algorithms.get(name).selected_metric
    if selected_metric is not None:
        assert selected_metric in metrics


def test_covariance_terms_match_the_metrics_module():
    inputs = random_inputs(5, 3, 7)
    torch.testing.assert_close(F.covariance_terms(inputs["log_probs"], inputs["advantages"], inputs["response_mask"]),
                               covgym_metrics.token_covariance(inputs["log_probs"], inputs["advantages"],
                                                               inputs["response_mask"]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", algorithms.names())
def test_losses_on_cuda_equal_cpu(name):
    inputs = random_inputs(11, 4, 9)
    loss, metrics, grad, _ = run_loss(build(name), inputs)
    on_gpu = {key: value.detach().cuda().requires_grad_(value.requires_grad) for key, value in inputs.items()}
    gpu_loss, gpu_metrics, gpu_grad, _ = run_loss(build(name), on_gpu)
    torch.testing.assert_close(gpu_loss.cpu(), loss)
    torch.testing.assert_close(gpu_grad.cpu(), grad)
    assert gpu_metrics == pytest.approx(metrics)
