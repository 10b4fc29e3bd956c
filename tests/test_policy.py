"""Policy: sampling cuts, scoring against a slow full-logits reference, padding invariance."""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from covgym.models.policy import Policy, SamplingParams


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


def test_entropy_and_log_prob_gradients_match_reference(random_policy):
    """The fused head (log-prob and entropy with gradients, temperature, several chunks) against full logits."""
    policy = random_policy
    policy.chunk_size, policy.temperature = 3, 0.8
    ids = torch.randint(3, 100, (2, 9))
    mask = torch.ones_like(ids)
    weights = torch.linspace(-1, 1, 9)
    lp, ent = policy.score(ids, mask)
    ((lp * weights).sum() + 0.3 * (ent * weights.flip(0)).sum()).backward()
    chunked = [p.grad.clone() for p in policy.model.parameters()]
    policy.model.zero_grad()
    ref_lp, ref_ent = reference_scores(policy, ids, mask)
    ((ref_lp * weights).sum() + 0.3 * (ref_ent * weights.flip(0)).sum()).backward()
    torch.testing.assert_close(lp.detach(), ref_lp.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent.detach(), ref_ent.detach(), atol=1e-5, rtol=1e-5)
    for got, want in zip(chunked, [p.grad for p in policy.model.parameters()]):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


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
    from covgym.models.policy import DEFAULT_CHUNK_BYTES, chunk_rows

    assert chunk_rows(151_936) == 110  # 110 × 151,936 × 4 B = 63.8 MiB <= 64 MiB < 111 rows
    assert chunk_rows(151_936) * 151_936 * 4 <= DEFAULT_CHUNK_BYTES < (chunk_rows(151_936) + 1) * 151_936 * 4
    assert chunk_rows(10**12) == 1  # never zero rows
    vocab = random_policy.model.get_output_embeddings().weight.shape[0]
    assert random_policy.chunk_size == chunk_rows(vocab)
    assert Policy(random_policy.model, random_policy.tokenizer, chunk_size=7).chunk_size == 7


# ------------------------------------------------------------------ covgym's own decode loop (issue 15)
def reference_decode(policy: Policy, prompts: list[list[int]], max_new_tokens: int, top_p: float, seed: int):
    """Obviously correct: no cache, the whole left-padded sequence through the HF model at every step."""
    from covgym.models.policy import draw_from_probs
    from covgym.models.prefix_sharing import left_pad

    generator = torch.Generator().manual_seed(seed)
    ids, mask = left_pad(prompts, policy.pad_token_id)
    done = torch.zeros(len(prompts), dtype=torch.bool)
    steps = []
    for _ in range(max_new_tokens):
        position_ids = (mask.cumsum(-1) - 1).clamp_min(0)
        logits = policy.model(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits[:, -1]
        log_p = torch.log_softmax(logits.float() / policy.temperature, -1)
        token = draw_from_probs(log_p.exp(), top_p, generator)
        token = torch.where(done, torch.full_like(token, policy.pad_token_id), token)
        steps.append((token, log_p.gather(-1, token[:, None])[:, 0], -(log_p.exp() * log_p).sum(-1)))
        done |= token == policy.eos_token_id
        if bool(done.all()):
            break
        ids, mask = torch.cat([ids, token[:, None]], 1), torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    return [[step[k][row].item() for step in steps] for k in range(3) for row in range(len(prompts))]


def test_decode_loop_matches_an_uncached_full_logits_reference(random_policy):
    """Draws, log-probs and entropies of the KV-cache loop equal a full forward per step with the same uniforms."""
    policy = random_policy
    policy.temperature = 0.8
    prompts = [policy.encode_prompt(t) for t in ("12+3=", "7*8-1=", "12+3=", "9=")]
    for share, top_p in ((False, 1.0), (True, 1.0), (True, 0.9)):
        policy.share_prompts = share
        with torch.no_grad():
            got = policy.sample(prompts, SamplingParams(0.8, top_p, 7), seed=5)
            flat = reference_decode(policy, prompts, 7, top_p, seed=5)
        n = len(prompts)
        want_tokens, want_lp, want_ent = flat[:n], flat[n:2 * n], flat[2 * n:]
        for row, response in enumerate(got):
            length = len(response.ids)
            assert response.ids == policy._cut_response([int(t) for t in want_tokens[row]], ())
            torch.testing.assert_close(torch.tensor(response.log_probs), torch.tensor(want_lp[row][:length]),
                                       atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(torch.tensor(response.entropies), torch.tensor(want_ent[row][:length]),
                                       atol=1e-5, rtol=1e-5)


def test_sampled_scores_equal_scoring_of_the_finished_batch(random_policy):
    """What the loop reads off while sampling is what ``score`` (chunked, shared prompts) gives afterwards."""
    from covgym.train.rollout import Episode, pack_episodes

    policy = random_policy
    prompts = [policy.encode_prompt(t) for t in ("1+1=", "1+1=", "22*3=")]
    with torch.no_grad():
        responses = policy.sample(prompts, SamplingParams(max_new_tokens=9), seed=2)
        batch = pack_episodes([Episode(p, [(r.ids, True)]) for p, r in zip(prompts, responses)], [0, 0, 1],
                              policy.pad_token_id)
        lp, ent = policy.score(batch.input_ids, batch.attention_mask, batch.prompt_lengths,
                               positions=batch.response_mask)
    for row, response in enumerate(responses):
        start = len(prompts[row])
        span = slice(start, start + len(response.ids))
        torch.testing.assert_close(lp[row, span], torch.tensor(response.log_probs), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ent[row, span], torch.tensor(response.entropies), atol=1e-5, rtol=1e-5)


def test_sampled_scores_are_withheld_under_reduced_precision(random_policy):
    random_policy.autocast_bf16 = True
    response = random_policy.sample([random_policy.encode_prompt("5=")], SamplingParams(max_new_tokens=3), seed=0)[0]
    assert response.ids and response.log_probs is None and response.entropies is None


def test_inverse_cdf_draws_follow_the_distribution():
    from covgym.models.policy import draw_from_probs

    probs = torch.tensor([[0.5, 0.0, 0.3, 0.2]]).expand(20000, 4)
    draws = draw_from_probs(probs, 1.0, torch.Generator().manual_seed(0))
    frequencies = torch.bincount(draws, minlength=4).float() / draws.numel()
    torch.testing.assert_close(frequencies, probs[0], atol=0.015, rtol=0)
    assert frequencies[1] == 0  # a token of probability 0 is never drawn


@given(logits=st.lists(st.integers(-40, 40), min_size=2, max_size=12, unique=True), top_p=st.floats(0.05, 0.99))
@settings(max_examples=60, deadline=None)
def test_top_p_nucleus_is_the_one_transformers_keeps(logits, top_p):
    """The support of our draws equals the tokens transformers' TopPLogitsWarper leaves finite."""
    from transformers.generation.logits_process import TopPLogitsWarper

    from covgym.models.policy import draw_from_probs

    scores = torch.tensor([logits]) / 10.0  # distinct in float32: no ties
    sorted_mass = torch.softmax(scores, -1)[0].sort(descending=True).values
    assume(bool(((sorted_mass.cumsum(0) - top_p).abs() > 1e-4).all()))  # no mass right at the boundary
    kept = torch.isfinite(TopPLogitsWarper(top_p)(None, scores.clone()))[0]
    probs = torch.softmax(scores, -1).expand(4000, -1)
    drawn = torch.zeros_like(kept)
    drawn[draw_from_probs(probs, top_p, torch.Generator().manual_seed(1))] = True
    assert not (drawn & ~kept).any()  # never outside the nucleus
    mass = torch.softmax(scores, -1)[0]
    assert drawn[kept & (mass > 0.01)].all()  # every kept token with real mass shows up in 4000 draws


def test_decode_loop_stops_rows_at_a_stop_string(random_policy):
    policy = random_policy
    prompts = [policy.encode_prompt(t) for t in ("1+1=", "22*3=")]
    every_character = tuple(policy.decode([i]) for i in range(len(policy.tokenizer)) if policy.decode([i]))
    responses = policy.sample(prompts, SamplingParams(max_new_tokens=8), stop_strings=every_character, seed=4)
    assert all(len(r.ids) == 1 and len(r.log_probs) == 1 for r in responses)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_scores_and_sampled_scores_on_cuda_equal_cpu(random_model_dir):
    """The chunked scorer and the decode loop on CUDA: the CPU's scores, and sampled scores equal to scoring."""
    from covgym.train.rollout import Episode, pack_episodes

    cpu = Policy.from_pretrained(str(random_model_dir), show_progress=False)
    gpu = Policy.from_pretrained(str(random_model_dir), device="cuda", show_progress=False)
    ids = torch.randint(3, 100, (3, 17))
    with torch.no_grad():
        on_cpu, on_gpu = cpu.score(ids, torch.ones_like(ids)), gpu.score(ids, torch.ones_like(ids))
        for want, got in zip(on_cpu, on_gpu):
            torch.testing.assert_close(got.cpu(), want, atol=1e-3, rtol=1e-3)  # TF32 matmuls may round
        prompts = [gpu.encode_prompt(t) for t in ("1+1=", "1+1=", "22*3=")]
        responses = gpu.sample(prompts, SamplingParams(max_new_tokens=9), seed=2)
        batch = pack_episodes([Episode(p, [(r.ids, True)]) for p, r in zip(prompts, responses)], [0, 0, 1],
                              gpu.pad_token_id)
        lp, _ = gpu.score(batch.input_ids, batch.attention_mask, batch.prompt_lengths, positions=batch.response_mask)
    for row, response in enumerate(responses):
        span = slice(len(prompts[row]), len(prompts[row]) + len(response.ids))
        torch.testing.assert_close(lp[row, span].cpu(), torch.tensor(response.log_probs), atol=1e-3, rtol=1e-3)
