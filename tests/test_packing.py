"""Packed scoring (no padding computed) must give the padded batch's log-probs, entropies and gradients."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from covgym.models.packing import first_fit_decreasing, pack, packing_is_exact
from covgym.models.policy import Policy
from tests.test_policy import reference_scores


@given(lengths=st.lists(st.integers(1, 20), min_size=1, max_size=12), extra=st.integers(0, 10))
def test_first_fit_decreasing_places_every_item_once_within_capacity(lengths, extra):
    capacity = max(lengths) + extra
    bins = first_fit_decreasing(lengths, capacity)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= capacity for b in bins)
    assert len(bins) <= len(lengths)
    assert len(bins) >= -(-sum(lengths) // capacity)


def _right_padded(lengths: list[int], width: int, pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.full((len(lengths), width), pad)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for r, n in enumerate(lengths):
        ids[r, :n] = torch.arange(1, n + 1) + 100 * r
        mask[r, :n] = 1
    return ids, mask


@given(lengths=st.lists(st.integers(1, 12), min_size=2, max_size=10), extra=st.integers(0, 4))
def test_pack_keeps_every_token_at_its_position(lengths, extra):
    ids, mask = _right_padded(lengths, max(lengths) + extra)
    layout = pack(ids, mask, pad_token_id=0)
    if layout is None:  # only when packing would not save a position
        assert len(first_fit_decreasing(lengths, max(lengths))) * max(lengths) >= ids.numel()
        return
    rows, columns = mask.nonzero(as_tuple=True)
    packed_rows, packed_columns = layout.locate(rows, columns)
    assert torch.equal(layout.input_ids[packed_rows, packed_columns], ids[rows, columns])
    assert torch.equal(layout.position_ids[packed_rows, packed_columns], columns)  # positions restart per row
    assert layout.positions < ids.numel()
    occupied = torch.zeros_like(layout.input_ids, dtype=torch.bool)
    occupied[packed_rows, packed_columns] = True
    assert int(occupied.sum()) == int(mask.sum())  # no two tokens share a packed slot


def test_pack_refuses_padding_holes_and_batches_it_cannot_shrink():
    ids, mask = _right_padded([4, 2, 2], 4)
    holed = mask.clone()
    holed[0, 1] = 0
    assert pack(ids, holed, 0) is None
    assert pack(*_right_padded([4, 4], 4), 0) is None
    assert pack(ids, mask, 0) is not None


def test_a_trunk_that_leaks_across_packed_rows_is_caught():
    """A stand-in for an architecture that ignores position ids: a running sum over the row."""
    def padded_trunk(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (ids.float() * mask).cumsum(-1)[..., None]

    def leaky(ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return ids.float().cumsum(-1)[..., None]

    def honest(ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        starts = (positions == 0).long().cumsum(-1)  # which packed sequence each column belongs to
        out = torch.zeros_like(ids, dtype=torch.float)
        for s in starts.unique():
            inside = starts == s
            out += torch.where(inside, (ids.float() * inside).cumsum(-1), torch.zeros_like(out))
        return out[..., None]

    assert not packing_is_exact(leaky, padded_trunk, 50, torch.device("cpu"), pad_token_id=0)
    assert packing_is_exact(honest, padded_trunk, 50, torch.device("cpu"), pad_token_id=0)


def assert_scores_and_gradients_match_reference(policy: Policy, ids: torch.Tensor, mask: torch.Tensor,
                                                weights: torch.Tensor) -> None:
    """``policy.score`` (whatever layout it picks) against the full-logits reference: values and the gradients of
    a weighted sum of log-probs and entropies."""
    policy.model.zero_grad()
    lp, ent = policy.score(ids, mask, positions=mask)
    ((lp * weights).sum() + 0.3 * (ent * weights).sum()).backward()
    grads = [p.grad.clone() for p in policy.model.parameters()]
    policy.model.zero_grad()
    ref_lp, ref_ent = reference_scores(policy, ids, mask)
    ((ref_lp * weights).sum() + 0.3 * (ref_ent * weights).sum()).backward()
    scored = mask.bool().clone()
    scored[:, 0] = False
    torch.testing.assert_close(lp.detach()[scored], ref_lp.detach()[scored], atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(ent.detach()[scored], ref_ent.detach()[scored], atol=2e-5, rtol=1e-5)
    for got, want in zip(grads, [p.grad for p in policy.model.parameters()]):
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
    policy.model.zero_grad()


def _policy(random_model_dir) -> Policy:
    torch.manual_seed(0)
    return Policy.from_pretrained(str(random_model_dir), show_progress=False)


@pytest.fixture(scope="module")
def packing_policy(random_model_dir):
    return _policy(random_model_dir)


def test_the_llama_trunk_honours_packed_rows(packing_policy):
    assert packing_policy._packing_works()


@settings(deadline=None, max_examples=20)
@given(data=st.data())
def test_packed_scores_and_gradients_equal_the_full_logits_reference(packing_policy, data):
    policy = packing_policy
    policy.share_prompts, policy.pack_sequences, policy.chunk_size = False, True, 7
    policy.temperature = data.draw(st.sampled_from([1.0, 0.7]))
    lengths = data.draw(st.lists(st.integers(2, 14), min_size=2, max_size=6))
    width = max(lengths) + data.draw(st.integers(0, 3))
    ids = torch.randint(3, len(policy.tokenizer), (len(lengths), width),
                        generator=torch.Generator().manual_seed(data.draw(st.integers(0, 99))))
    mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()
    ids = torch.where(mask > 0, ids, torch.full_like(ids, policy.pad_token_id))
    weights = torch.randn(ids.shape, generator=torch.Generator().manual_seed(1)) * mask

    assert_scores_and_gradients_match_reference(policy, ids, mask, weights)


def test_scoring_packs_uneven_rows_and_shares_repeated_long_prompts(packing_policy, monkeypatch):
    """The layout chosen is the one that computes fewer positions."""
    policy = packing_policy
    policy.share_prompts, policy.pack_sequences = True, True
    assert policy._packing_works()  # the one-off check runs a packed pass of its own: not counted below
    calls: list[str] = []
    monkeypatch.setattr(policy, "_packed_trunk", lambda *a, f=policy._packed_trunk: calls.append("packed") or f(*a))
    monkeypatch.setattr(policy, "_trunk_with_cache",
                        lambda *a, f=policy._trunk_with_cache: calls.append("shared") or f(*a))
    uneven = torch.randint(3, 50, (4, 20))
    mask = (torch.arange(20)[None, :] < torch.tensor([20, 4, 6, 9])[:, None]).long()
    prompts = torch.tensor([2, 2, 2, 2])  # distinct short prompts: sharing saves nothing
    with torch.no_grad():
        policy.score(uneven, mask, prompts, positions=mask)
    assert calls == ["packed"]
    calls.clear()
    long_prompt = torch.randint(3, 50, (1, 16)).expand(4, 16)
    repeated = torch.cat([long_prompt, torch.randint(3, 50, (4, 4))], dim=1)
    mask = (torch.arange(20)[None, :] < torch.tensor([20, 18, 19, 17])[:, None]).long()
    with torch.no_grad():
        policy.score(repeated, mask, torch.full((4,), 16), positions=mask)
    assert calls == ["shared", "shared"]  # the prompt once, then the continuations on its cache


@pytest.mark.parametrize("kind", ["gemma2_sliding_window", "qwen3_next_linear_attention"])
def test_other_architectures_pack_exactly_or_are_refused(kind, random_model_dir):
    """A sliding window is masked per packed sequence; a recurrent (linear-attention) state runs across the packed
    row, so the one-off check must refuse packing there. Either way the scores are the padded batch's."""
    from tests.test_prefix_sharing import _tiny

    tokenizer = Policy.from_pretrained(str(random_model_dir), show_progress=False).tokenizer
    torch.manual_seed(0)
    policy = Policy(_tiny(kind, tokenizer).eval(), tokenizer, share_prompts=False)
    lengths = [9, 3, 5, 2]
    ids = torch.randint(4, len(tokenizer), (4, 9))
    mask = (torch.arange(9)[None, :] < torch.tensor(lengths)[:, None]).long()
    with torch.no_grad():
        policy.pack_sequences = False
        padded = policy.score(ids, mask, positions=mask)
        policy.pack_sequences = True
        packed = policy.score(ids, mask, positions=mask)
    assert policy._packing_exact is (kind == "gemma2_sliding_window")
    for a, b in zip(padded, packed):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5)


def test_grouped_heads_run_without_key_value_copies_only_inside_covgym_passes(packing_policy, monkeypatch):
    """``covgym.models.attention``: the switch is on during a CPU trunk pass and gone afterwards; a user's own wins."""
    import os

    import transformers.integrations.sdpa_attention as sdpa

    from covgym.models.attention import grouped_heads_without_copies

    monkeypatch.delenv("TRANSFORMERS_SDPA_FORCE_GQA", raising=False)
    with grouped_heads_without_copies(torch.device("cpu")):
        assert sdpa.use_gqa_in_sdpa(torch.ones(1, 1, 2, 2, dtype=torch.bool), torch.zeros(1, 1, 2, 8),
                                    torch.zeros(1, 1, 2, 8))
    assert "TRANSFORMERS_SDPA_FORCE_GQA" not in os.environ
    with grouped_heads_without_copies(torch.device("cuda")):
        assert "TRANSFORMERS_SDPA_FORCE_GQA" not in os.environ
    monkeypatch.setenv("TRANSFORMERS_SDPA_FORCE_GQA", "0")
    with grouped_heads_without_copies(torch.device("cpu")):
        assert os.environ["TRANSFORMERS_SDPA_FORCE_GQA"] == "0"
    assert os.environ["TRANSFORMERS_SDPA_FORCE_GQA"] == "0"


@pytest.mark.parametrize("layout", ["packed", "padded"])
def test_grouped_query_attention_scores_and_gradients_equal_the_full_logits_reference(layout, random_model_dir):
    """A Llama with 2 key/value heads for 4 query heads (SmolLM2's kind): covgym's passes run grouped heads without
    copies, the reference is the plain HF forward (which repeats them)."""
    import transformers

    tokenizer = Policy.from_pretrained(str(random_model_dir), show_progress=False).tokenizer
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    policy = Policy(transformers.LlamaForCausalLM(config).train(), tokenizer, share_prompts=False,
                    pack_sequences=layout == "packed", chunk_size=5)
    lengths = [11, 4, 6, 3]
    ids = torch.randint(4, len(tokenizer), (4, 11))
    mask = (torch.arange(11)[None, :] < torch.tensor(lengths)[:, None]).long()
    weights = torch.randn(ids.shape) * mask
    assert_scores_and_gradients_match_reference(policy, ids, mask, weights)
    assert policy._packing_exact is (True if layout == "packed" else None)
