"""The fused head + log-prob + entropy equals plain autograd through full logits, values and gradients."""

from __future__ import annotations

import pytest
import torch

from covgym.models.head_stats import head_token_stats


def reference(hidden, weight, tokens, temperature):
    log_p = torch.log_softmax((hidden @ weight.t()).double() / temperature, -1)
    return log_p.gather(-1, tokens[:, None])[:, 0], -(log_p.exp() * log_p).sum(-1)


@pytest.mark.parametrize("chunk_rows", [None, 3, 1])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("uses", ["log_prob", "entropy", "both"])
def test_values_and_gradients_equal_autograd_through_full_logits(temperature, uses, chunk_rows):
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(7, 5, generator=generator, dtype=torch.float64).float().requires_grad_()
    weight = (torch.randn(40, 5, generator=generator) * 2).requires_grad_()
    tokens = torch.randint(0, 40, (7,), generator=generator)
    coef_lp, coef_h = torch.randn(7, generator=generator), torch.randn(7, generator=generator)
    results = []
    for fn in (lambda *a: head_token_stats(*a, chunk_rows=chunk_rows), reference):
        hidden.grad = weight.grad = None
        lp, ent = fn(hidden, weight, tokens, temperature)
        loss = {"log_prob": (coef_lp * lp).sum(), "entropy": (coef_h * ent).sum(),
                "both": (coef_lp * lp).sum() + (coef_h * ent).sum()}[uses]
        loss.backward()
        results.append((lp.detach().double(), ent.detach().double(), hidden.grad.clone(), weight.grad.clone()))
    for got, want in zip(*results):
        torch.testing.assert_close(got.double(), want.double(), atol=2e-5, rtol=2e-5)


def test_an_unused_output_costs_nothing_and_no_output_gives_no_gradient():
    hidden = torch.randn(3, 4, requires_grad=True)
    weight = torch.randn(9, 4, requires_grad=True)
    lp, _ = head_token_stats(hidden, weight, torch.tensor([1, 2, 3]))
    lp.sum().backward()  # the entropy's gradient is None inside backward: the branch without it runs
    assert hidden.grad is not None and torch.isfinite(weight.grad).all()


def test_no_positions_give_empty_outputs_and_a_zero_gradient():
    hidden = torch.randn(0, 4, requires_grad=True)
    lp, ent = head_token_stats(hidden, torch.randn(9, 4), torch.zeros(0, dtype=torch.long), chunk_rows=2)
    (lp.sum() + ent.sum()).backward()
    assert lp.shape == ent.shape == (0,) and hidden.grad is not None


def test_a_bad_chunk_size_is_refused():
    with pytest.raises(ValueError, match="chunk_rows"):
        head_token_stats(torch.randn(2, 4), torch.randn(9, 4), torch.tensor([0, 1]), chunk_rows=0)
