"""Policy: sampling cuts, scoring against a slow full-logits reference, padding invariance."""

from __future__ import annotations

import torch

from covgym.policy import Policy, SamplingParams


def reference_scores(policy: Policy, input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """Obviously correct: full logits from the HF forward, log_softmax, gather; entropy by definition."""
    position_ids = (attention_mask.cumsum(-1) - 1).clamp_min(0)
    logits = policy.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
    logits = logits.float() / policy.temperature
    log_p = torch.log_softmax(logits[:, :-1], -1)
    token_lp = log_p.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    entropy = -(log_p.exp() * log_p).sum(-1)
    zeros = torch.zeros(input_ids.shape[0], 1)
    return torch.cat([zeros, token_lp], 1), torch.cat([zeros, entropy], 1)


def test_chunked_scoring_matches_full_logits_reference(random_policy):
    policy = random_policy
    policy.temperature = 0.7
    policy.chunk_size = 5  # force many chunks
    ids = torch.randint(3, 100, (3, 17))
    mask = torch.ones_like(ids)
    mask[1, 12:] = 0
    with torch.no_grad():
        lp, ent = policy.score(ids, mask)
        ref_lp, ref_ent = reference_scores(policy, ids, mask)
    valid = mask.bool()
    assert torch.allclose(lp[valid], ref_lp[valid], atol=1e-5)
    assert torch.allclose(ent[valid], ref_ent[valid], atol=1e-5)


def test_scoring_gradients_match_reference(random_policy):
    policy = random_policy
    policy.chunk_size = 4
    ids = torch.randint(3, 100, (2, 9))
    mask = torch.ones_like(ids)
    lp, _ = policy.score(ids, mask)
    lp.sum().backward()
    chunked = [p.grad.clone() for p in policy.model.parameters()]
    policy.model.zero_grad()
    ref_lp, _ = reference_scores(policy, ids, mask)
    ref_lp.sum().backward()
    for got, want in zip(chunked, [p.grad for p in policy.model.parameters()]):
        assert torch.allclose(got, want, atol=1e-5)


def test_left_and_right_padding_give_the_same_scores(random_policy):
    policy = random_policy
    sequence = torch.randint(3, 100, (1, 10))
    pad = policy.pad_token_id
    right = torch.cat([sequence, torch.full((1, 4), pad)], 1)
    left = torch.cat([torch.full((1, 4), pad), sequence], 1)
    with torch.no_grad():
        lp_right, _ = policy.score(right, (right != pad).long() if pad not in sequence else None)
        lp_left, _ = policy.score(left, torch.cat([torch.zeros(1, 4), torch.ones(1, 10)], 1).long())
    assert torch.allclose(lp_right[0, 1:10], lp_left[0, 5:], atol=1e-5)


def test_generate_stops_at_eos_and_stop_strings(random_policy):
    policy = random_policy
    eos = policy.eos_token_id
    ids = policy.encode_observation("ab</x>cd")
    assert policy._cut_response(ids + [eos] + ids, ()) == ids + [eos]
    cut = policy._cut_response(ids, ("</x>",))
    assert policy.decode(cut) == "ab</x>"


def test_generate_is_reproducible_for_a_seed_and_respects_max_new_tokens(random_policy):
    prompts = [random_policy.encode_prompt("Compute: 1+2\nAnswer:"), random_policy.encode_prompt("Hi")]
    params = SamplingParams(max_new_tokens=6)
    first = random_policy.generate(prompts, params, seed=3)
    second = random_policy.generate(prompts, params, seed=3)
    assert first == second
    assert all(1 <= len(r) <= 6 for r in first)


def test_head_chunks_are_sized_by_bytes_of_logits(random_policy):
    from covgym.policy import DEFAULT_CHUNK_BYTES, chunk_rows

    assert chunk_rows(151_936) == 441  # 441 × 151,936 × 4 B = 255.6 MiB <= 256 MiB < 442 rows
    assert chunk_rows(151_936) * 151_936 * 4 <= DEFAULT_CHUNK_BYTES < (chunk_rows(151_936) + 1) * 151_936 * 4
    assert chunk_rows(10**12) == 1  # never zero rows
    vocab = random_policy.model.get_output_embeddings().weight.shape[0]
    assert random_policy.chunk_size == chunk_rows(vocab)
    assert Policy(random_policy.model, random_policy.tokenizer, chunk_size=7).chunk_size == 7
