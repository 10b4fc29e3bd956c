"""Sharing a repeated prompt's KV cache must not change what the policy samples or scores, nor the gradients."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from covgym.models.policy import Policy, SamplingParams, enable_activation_checkpointing
from covgym.models.prefix_sharing import group_prefixes, left_pad
from covgym.train.rollout import Episode, pack_episodes


@pytest.fixture(autouse=True)
def share_whenever_it_saves_a_position(monkeypatch):
    """These tests check the shared path itself: take it whenever it computes fewer positions, however few (by
    default it must save a third of them to pay for its second pass)."""
    monkeypatch.setattr("covgym.models.policy.SHARING_PAYS", 1.0)


@pytest.fixture(scope="module")
def shared_policy(random_model_dir):
    """Read-only across hypothesis examples (each example sets ``share_prompts`` itself)."""
    return Policy.from_pretrained(str(random_model_dir), show_progress=False)


def _batch(policy, prompts: list[list[int]], responses: list[list[int]]):
    episodes = [Episode(prompt_ids=p, segments=[(r, True)]) for p, r in zip(prompts, responses)]
    return pack_episodes(episodes, list(range(len(prompts))), policy.pad_token_id)


def _score(policy, batch, share: bool, grad: bool = False):
    policy.share_prompts = share
    with torch.set_grad_enabled(grad):
        return policy.score(batch.input_ids, batch.attention_mask, batch.prompt_lengths,
                            positions=batch.response_mask)


def test_group_prefixes_keeps_first_appearance_order_and_maps_every_row():
    groups = group_prefixes([[1, 2], [3], [1, 2], [], [3]])
    assert groups.prefixes == [(1, 2), (3,), ()]
    assert groups.index.tolist() == [0, 1, 0, 2, 1]
    assert groups.saves_work
    assert not group_prefixes([[1], [2]]).saves_work


def test_left_pad_aligns_rows_to_the_right_edge():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_token_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_shared_generation_draws_the_same_tokens(random_policy):
    texts = ["12+3=", "7*8-1=", "12+3=", "9=", "7*8-1=", "12+3="]  # repeats, not adjacent, several lengths
    prompts = [random_policy.encode_prompt(t) for t in texts]
    params = SamplingParams(max_new_tokens=6)
    random_policy.share_prompts = False
    plain = random_policy.generate(prompts, params, seed=11)
    random_policy.share_prompts = True
    shared = random_policy.generate(prompts, params, seed=11)
    assert shared == plain
    assert any(len(r) > 1 for r in plain)


@settings(deadline=None, max_examples=25)
@given(data=st.data())
def test_shared_scoring_matches_full_sequences(shared_policy, data):
    random_policy = shared_policy
    vocab = len(random_policy.tokenizer)
    token = st.integers(4, vocab - 1)
    distinct = data.draw(st.lists(st.lists(token, min_size=1, max_size=6), min_size=1, max_size=3))
    which = data.draw(st.lists(st.integers(0, len(distinct) - 1), min_size=2, max_size=7))
    prompts = [distinct[i] for i in which]
    responses = [data.draw(st.lists(token, min_size=0, max_size=5)) for _ in prompts]
    batch = _batch(random_policy, prompts, responses)
    full = _score(random_policy, batch, share=False)
    shared = _score(random_policy, batch, share=True)
    for a, b in zip(full, shared):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5)
    assert (full[0] * (1 - batch.response_mask)).abs().max() == 0  # only the asked-for positions are scored


def test_positions_limit_scoring_to_the_asked_for_tokens(random_policy):
    prompts = [random_policy.encode_prompt("3+4=")] * 2
    batch = _batch(random_policy, prompts, [[10, 11, 12], [13]])
    random_policy.share_prompts = False
    with torch.no_grad():
        everything = random_policy.score(batch.input_ids, batch.attention_mask)
        some = random_policy.score(batch.input_ids, batch.attention_mask, positions=batch.response_mask)
    for a, b in zip(everything, some):
        torch.testing.assert_close(a * batch.response_mask, b)
    assert everything[0][:, 1:][batch.attention_mask[:, 1:] > 0].abs().min() > 0  # prompt tokens scored there


def test_shared_scoring_gives_the_same_gradients(random_policy):
    texts = ["12+3=", "12+3=", "12+3=", "4-1=", "4-1="]
    prompts = [random_policy.encode_prompt(t) for t in texts]
    batch = _batch(random_policy, prompts, [[20, 21, 22], [23], [24, 25], [26, 27, 28, 29], []])
    weights = torch.randn(batch.response_mask.shape, generator=torch.Generator().manual_seed(0))
    gradients = []
    for share in (False, True):
        random_policy.model.zero_grad()
        log_probs, entropy = _score(random_policy, batch, share, grad=True)
        ((log_probs + entropy) * weights * batch.response_mask).sum().backward()
        gradients.append(torch.cat([p.grad.flatten() for p in random_policy.model.parameters()]))
    assert gradients[0].abs().max() > 0
    torch.testing.assert_close(gradients[1], gradients[0], atol=1e-5, rtol=1e-4)


def test_nothing_to_score_still_backpropagates_zero(random_policy):
    prompts = [random_policy.encode_prompt("1+1=")] * 2
    batch = _batch(random_policy, prompts, [[10], [11]])
    log_probs, entropy = random_policy.score(batch.input_ids, batch.attention_mask, batch.prompt_lengths,
                                             positions=torch.zeros_like(batch.response_mask))
    (log_probs.sum() + entropy.sum()).backward()  # a rank whose mini-batch share is empty must still step
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in random_policy.model.parameters())


def test_activation_checkpointing_turns_sharing_off_under_grad(random_policy):
    prompts = [random_policy.encode_prompt("5+5=")] * 3
    batch = _batch(random_policy, prompts, [[10, 11], [12], [13, 14]])
    assert random_policy._shared_prompts(batch.input_ids, batch.prompt_lengths) is not None
    model = random_policy.model
    enable_activation_checkpointing(model)  # the way Policy.from_pretrained turns it on
    random_policy.model.train()
    try:
        with torch.enable_grad():
            assert random_policy._shared_prompts(batch.input_ids, batch.prompt_lengths) is None
            log_probs, _ = random_policy.score(batch.input_ids, batch.attention_mask, batch.prompt_lengths,
                                               positions=batch.response_mask)
        with torch.no_grad():
            assert random_policy._shared_prompts(batch.input_ids, batch.prompt_lengths) is not None
            reference, _ = random_policy.score(batch.input_ids, batch.attention_mask, positions=batch.response_mask)
        torch.testing.assert_close(log_probs.detach(), reference, atol=2e-5, rtol=1e-5)
    finally:
        (getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable)()


def _tiny(kind: str, tokenizer):
    import transformers

    common = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    if kind == "gemma2_sliding_window":
        return transformers.Gemma2ForCausalLM(transformers.Gemma2Config(
            **common, num_key_value_heads=1, head_dim=16, sliding_window=3))
    return transformers.Qwen3NextForCausalLM(transformers.Qwen3NextConfig(  # linear attention: recurrent state
        **common, num_key_value_heads=1, head_dim=16, layer_types=["linear_attention", "full_attention"],
        linear_num_value_heads=2, linear_num_key_heads=1, linear_key_head_dim=8, linear_value_head_dim=8,
        num_experts=2, num_experts_per_tok=1, moe_intermediate_size=16, shared_expert_intermediate_size=16))


@pytest.mark.parametrize("kind", ["gemma2_sliding_window", "qwen3_next_linear_attention", "preset_static_cache"])
def test_other_cache_layouts_share_or_fall_back_without_changing_results(kind, random_policy):
    """Sliding windows share (the gather keeps them); recurrent states and a preset cache fall back to full passes."""
    tokenizer = random_policy.tokenizer
    torch.manual_seed(0)
    model = random_policy.model if kind == "preset_static_cache" else _tiny(kind, tokenizer).eval()
    if kind == "preset_static_cache":
        model.generation_config.cache_implementation = "static"
    policy = Policy(model, tokenizer)
    texts = ["12+3=", "7*8-1=", "12+3=", "9=", "7*8-1=", "12+3="]
    prompts = [policy.encode_prompt(t) for t in texts]
    batch = _batch(policy, prompts, [[10, 11, 12, 13], [13], [20, 21], [22, 23, 24, 25, 26], [], [30, 31]])
    full, shared = _score(policy, batch, share=False), _score(policy, batch, share=True)
    for a, b in zip(full, shared):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5)
    draws = []
    for share in (False, True):
        policy.share_prompts = share
        draws.append(policy.generate(prompts, SamplingParams(max_new_tokens=6), seed=3))
    assert draws[0] == draws[1]


def test_leading_prefix_lengths_are_the_longest_prefix_shared_with_another_row():
    from covgym.models.prefix_sharing import leading_prefix_lengths

    rows = [[1, 2, 3, 9], [1, 2, 4], [1, 2, 3, 8, 7], [5, 6], [5, 6]]
    assert leading_prefix_lengths(rows) == [3, 2, 3, 1, 1]  # capped at len − 1: the last token is the row's own
    slow = [max((next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                 for j, b in enumerate(rows) if j != i), default=0) for i, a in enumerate(rows)]
    assert leading_prefix_lengths(rows) == [min(s, len(r) - 1) for s, r in zip(slow, rows)]


def test_later_turns_share_their_common_prompt_and_sample_the_same_tokens(random_policy):
    """A second turn's contexts: one prompt, different first attempts and replies (no full context repeats)."""
    texts = ["12+3=7 no. Try:", "12+3=15 no!", "12+3=1 ok. Try:", "9*2=4 no. Try:", "9*2=18!"]
    prompts = [random_policy.encode_prompt(t) for t in texts]
    assert random_policy._share_in_sampling(prompts) is None  # exact-prompt sharing finds nothing here
    params = SamplingParams(max_new_tokens=6)
    random_policy.share_prompts = False
    plain = random_policy.sample(prompts, params, seed=5)
    random_policy.share_prompts = True
    assert random_policy._share_leading_prefixes(prompts) is not None
    shared = random_policy.sample(prompts, params, seed=5)
    assert [s.ids for s in shared] == [p.ids for p in plain]
    for a, b in zip(shared, plain):
        assert torch.allclose(torch.tensor(a.log_probs), torch.tensor(b.log_probs), atol=1e-4)
