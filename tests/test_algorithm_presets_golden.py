"""Every preset ``--algo`` name gives bit-identical advantages, losses, gradients and metrics to the code before
algorithms became compositions of parts.

Bit-identical on a CPU like the one that wrote the golden file; on another (AVX2 against AVX-512) torch's
vectorised reductions add in a different order, so there the values may differ in their last bits: allowed up to
``ULPS`` units in the last place of the values' scale, far below any change of formula.

The golden file ``tests/data/algorithm_presets_golden.pt`` was written by ``python tests/test_algorithm_presets_golden.py``
on commit ee10748+ (the monolithic classes, before the refactor). Regenerate it only for an intended change.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import covgym.algorithms as algorithms
from covgym.core.batch import RolloutBatch

GOLDEN = Path(__file__).parent / "data" / "algorithm_presets_golden.pt"

#: (preset name, hyperparameters): defaults, and settings that make every term of the loss act.
CASES: list[tuple[str, dict]] = [
    ("grpo", {}), ("grpo", {"clip_ratio": 0.1, "clip_ratio_c": None, "loss_agg_mode": "seq-mean-token-mean"}),
    ("grpo", {"use_kl_loss": True, "kl_loss_coef": 0.1, "kl_loss_type": "k3+"}),
    ("grpo", {"norm_adv_by_std_in_grpo": False, "loss_agg_mode": "seq-mean-token-sum"}),
    ("dr_grpo", {}), ("dr_grpo", {"loss_scale_factor": 11.0}),
    ("rloo", {}), ("reinforce_pp", {"clip_ratio_low": 0.1, "clip_ratio_high": 0.3}),
    ("ppo", {}), ("ppo", {"gamma": 0.9, "lam": 0.8, "cliprange_value": 0.2}),
    ("clip_higher", {}), ("clip_cov", {}), ("clip_cov", {"clip_cov_ratio": 0.2, "clip_cov_lb": -0.5}),
    ("kl_cov", {}), ("kl_cov", {"kl_cov_ratio": 0.2, "ppo_kl_coef": 0.5}),
    ("entropy_bonus", {}), ("entropy_bonus", {"entropy_coeff": 0.05, "use_kl_loss": True}),
    ("gpg", {}), ("gpg", {"f_norm": 2.0, "loss_agg_mode": "seq-mean-token-sum-norm"}),
]
DTYPES = (torch.float32, torch.float64)


def _batch(seed: int) -> RolloutBatch:
    g = torch.Generator().manual_seed(seed)
    b, t = 9, 7
    mask = (torch.rand(b, t, generator=g) < 0.7).float()
    mask[:, 0] = 0.0
    return RolloutBatch(
        input_ids=torch.randint(0, 50, (b, t), generator=g), attention_mask=torch.ones(b, t, dtype=torch.long),
        response_mask=mask, old_log_probs=-3 * torch.rand(b, t, generator=g) * mask,
        rewards=torch.randint(0, 3, (b,), generator=g).float() - 0.5 * (torch.rand(b, generator=g) < 0.3).float(),
        group_ids=torch.arange(b) // 3, entropies=2 * torch.rand(b, t, generator=g) * mask,
        values=torch.randn(b, t, generator=g) * mask, ref_log_probs=-3 * torch.rand(b, t, generator=g) * mask)


def _outputs(name: str, params: dict, dtype: torch.dtype) -> dict[str, object]:
    """Advantages, loss, gradients (log-probs, entropy) and metrics of one case on fixed inputs."""
    batch = _batch(0)
    algorithm = algorithms.get(name)(**params)
    algorithm.set_generator(torch.Generator().manual_seed(5))
    out: dict[str, object] = {}
    advantages = algorithm.advantages(batch)
    out["advantages"] = advantages
    g = torch.Generator().manual_seed(1)
    mask = batch.response_mask.to(dtype)
    old = batch.old_log_probs.to(dtype)
    log_probs = (old + 0.4 * torch.randn(old.shape, generator=g).to(dtype)).requires_grad_(True)
    entropy = (2 * torch.rand(old.shape, generator=g).to(dtype)).requires_grad_(True)
    loss, metrics = algorithm.policy_loss(log_probs, old, advantages.to(dtype), mask, entropy=entropy,
                                          ref_log_probs=batch.ref_log_probs.to(dtype))
    loss.backward()
    out["loss"] = loss.detach()
    out["grad_log_probs"] = log_probs.grad
    out["grad_entropy"] = torch.zeros_like(entropy) if entropy.grad is None else entropy.grad
    out["metrics"] = dict(metrics)
    # a second mini-batch through the same instance (Clip-Cov's generator advances), with global counts
    loss2, metrics2 = algorithm.policy_loss(log_probs.detach()[:4], old[:4], advantages.to(dtype)[:4], mask[:4],
                                            entropy=entropy.detach()[:4], ref_log_probs=batch.ref_log_probs[:4].to(dtype),
                                            global_token_count=float(mask.sum()), global_seq_count=9.0)
    out["loss2"] = loss2.detach()
    out["metrics2"] = dict(metrics2)
    if name == "ppo":
        advantages, returns = algorithm.advantages_and_returns(batch)
        values = (batch.values + 0.3).to(dtype).requires_grad_(True)
        value_loss, value_metrics = algorithm.value_loss(values, batch.values.to(dtype), returns.to(dtype), mask)
        value_loss.backward()
        out.update(returns=returns, value_loss=value_loss.detach(), value_grad=values.grad,
                   value_metrics=value_metrics)
    return out


def compute_all() -> dict[str, dict[str, object]]:
    return {f"{name}|{sorted(params.items())}|{dtype}": _outputs(name, params, dtype)
            for name, params in CASES for dtype in DTYPES}


ULPS = 16


def _assert_identical(got: object, want: object, where: str) -> None:
    if isinstance(want, torch.Tensor):
        assert isinstance(got, torch.Tensor) and got.dtype == want.dtype and got.shape == want.shape, where
        if torch.equal(got, want) or not want.is_floating_point():
            assert torch.equal(got, want), where
            return
        eps = torch.finfo(want.dtype).eps
        scale = max(float(want.abs().max()), 1e-30) if want.numel() else 1.0
        finite = ~want.isnan()
        diff = float((got.double() - want.double())[finite].abs().max()) if finite.any() else 0.0
        assert torch.equal(got.isnan(), want.isnan()) and diff <= ULPS * eps * scale, f"{where}: max |diff| {diff}"
    elif isinstance(want, dict):
        assert isinstance(got, dict), where
        missing = set(want) - set(got)
        assert not missing, f"{where}: metrics {sorted(missing)} are gone"
        for key, value in want.items():
            _assert_identical(got[key], value, f"{where}.{key}")
    else:
        same = got == want or (isinstance(want, float) and want != want and got != got)  # nan == nan here
        if not same and isinstance(want, float) and isinstance(got, float):  # a metric summed on another CPU
            same = abs(got - want) <= ULPS * torch.finfo(torch.float64).eps * max(abs(want), 1e-300)
        assert same, f"{where}: {got!r} != {want!r}"


@pytest.mark.parametrize("name, params", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_presets_are_bit_identical_to_the_monolithic_classes(name, params, dtype):
    golden = torch.load(GOLDEN, weights_only=False)
    key = f"{name}|{sorted(params.items())}|{dtype}"
    _assert_identical(_outputs(name, params, dtype), golden[key], key)


if __name__ == "__main__":
    GOLDEN.parent.mkdir(exist_ok=True)
    torch.save(compute_all(), GOLDEN)
    print(f"wrote {GOLDEN}")
