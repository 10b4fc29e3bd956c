"""What sharing each prompt's KV cache across its group would save (a measured opportunity, not covgym's path yet).

GRPO samples ``group_size`` responses per prompt, so every prompt appears ``group_size`` times in the batch and
(for short answers) makes up most of its tokens. This script times, on the speed benchmark's step-1 batch (tiny
model, 16 arithmetic prompts × 8), two phases both ways:

- generation: ``Policy.generate`` on the 128 repeated prompts, against prefilling the 16 distinct prompts once,
  repeating the KV cache 8× (``Cache.batch_repeat_interleave``) and decoding from it with ``model.generate``;
- scoring (no grad): ``Policy.score`` on the 128 full sequences, against one forward pass over the 16 prompts plus
  one over the 128 responses on the repeated cache; the per-token log-probs and entropies are compared.

Usage: ``python benchmarks/prefix_sharing.py [--repeats 10] [--out benchmarks/results/prefix_sharing.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed  # noqa: E402  (the same prompts as the speed benchmark)

GROUP, NEW_TOKENS = speed.GROUP, speed.NEW_TOKENS


def left_padded(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad)  # [P, W]
    mask = torch.zeros_like(ids)
    for index, row in enumerate(rows):
        ids[index, width - len(row):] = torch.tensor(row)
        mask[index, width - len(row):] = 1
    return ids, mask


def right_padded(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad)  # [B, L]
    mask = torch.zeros_like(ids)
    for index, row in enumerate(rows):
        ids[index, :len(row)] = torch.tensor(row)
        mask[index, :len(row)] = 1
    return ids, mask


@torch.no_grad()
def prefill(policy: Any, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """Logits ``[P, T, V]`` and the KV cache of the distinct prompts, then the cache repeated for each group."""
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    output = policy.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
    output.past_key_values.batch_repeat_interleave(GROUP)
    return output.logits, output.past_key_values


@torch.no_grad()
def shared_generate(policy: Any, ids: torch.Tensor, mask: torch.Tensor, seed: int) -> torch.Tensor:
    _, cache = prefill(policy, ids[:, :-1], mask[:, :-1])  # generate feeds the last prompt token itself
    torch.manual_seed(seed)
    return policy.model.generate(input_ids=ids.repeat_interleave(GROUP, 0), attention_mask=mask.repeat_interleave(
        GROUP, 0), past_key_values=cache, do_sample=True, temperature=policy.temperature, top_k=0, top_p=1.0,
        max_new_tokens=NEW_TOKENS, pad_token_id=policy.pad_token_id, eos_token_id=policy.eos_token_id)


@torch.no_grad()
def shared_score(policy: Any, ids: torch.Tensor, mask: torch.Tensor, responses: torch.Tensor,
                 response_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    from covgym.metrics import log_probs_and_entropy

    logits, cache = prefill(policy, ids, mask)
    first = logits[:, -1].repeat_interleave(GROUP, 0)  # [B, V]: predicts each response's first token
    start = (mask.sum(-1, keepdim=True) - 1).repeat_interleave(GROUP, 0) + 1  # [B, 1] first response position
    positions = start + torch.arange(responses.shape[1])  # [B, L]
    later = policy.model(input_ids=responses, attention_mask=torch.cat([mask.repeat_interleave(GROUP, 0),
                                                                        response_mask], 1),
                         position_ids=positions, past_key_values=cache).logits  # [B, L, V]
    stacked = torch.cat([first[:, None], later[:, :-1]], 1).float() / policy.temperature  # [B, L, V]
    return log_probs_and_entropy(stacked, responses)


def timed(function: Callable[[], Any], repeats: int) -> float:
    function()  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - started) / repeats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default="benchmarks/results/prefix_sharing.json")
    args = parser.parse_args(argv)

    from covgym.policy import Policy, SamplingParams
    from covgym.tiny_model import ensure_tiny_model

    policy = Policy.from_pretrained(str(ensure_tiny_model(show_progress=False)), show_progress=False)
    prompts = [policy.encode_prompt(text) for text, _ in speed.step_prompts(1)]
    repeated = [p for p in prompts for _ in range(GROUP)]
    sampling = SamplingParams(max_new_tokens=NEW_TOKENS)
    ids, mask = left_padded(prompts, policy.pad_token_id)
    responses, response_mask = right_padded(policy.generate(repeated, sampling, seed=0), policy.pad_token_id)
    sequences = torch.cat([ids.repeat_interleave(GROUP, 0), responses], 1)  # [B, W + L]
    sequence_mask = torch.cat([mask.repeat_interleave(GROUP, 0), response_mask], 1)

    def full_score() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            log_probs, entropy = policy.score(sequences, sequence_mask)
        return log_probs[:, ids.shape[1]:], entropy[:, ids.shape[1]:]

    reference, shared = full_score(), shared_score(policy, ids, mask, responses, response_mask)
    result = {
        "created": time.strftime("%Y-%m-%d %H:%M:%S"), "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "load_average_at_start": list(os.getloadavg()),
        "command": "python benchmarks/prefix_sharing.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "batch": {"prompts": len(prompts), "group_size": GROUP, "prompt_width": ids.shape[1],
                  "response_width": responses.shape[1]},
        "generate_s": {"repeated prompts (Policy.generate)": timed(lambda: policy.generate(repeated, sampling, 0),
                                                                   args.repeats),
                       "shared prompt cache": timed(lambda: shared_generate(policy, ids, mask, 0), args.repeats)},
        "score_s": {"full sequences (Policy.score)": timed(full_score, args.repeats),
                    "shared prompt cache": timed(lambda: shared_score(policy, ids, mask, responses, response_mask),
                                                 args.repeats)},
        "max_abs_difference": {
            "log_prob": float(((reference[0] - shared[0]) * response_mask).abs().max()),
            "entropy": float(((reference[1] - shared[1]) * response_mask).abs().max())},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
