"""What sharing each prompt's KV cache across its group saves, phase by phase (``Policy(share_prompts=...)``).

GRPO samples ``group_size`` responses per prompt, so every prompt appears ``group_size`` times in the batch and
(for short answers) makes up most of its tokens. covgym runs each distinct prompt once and gathers its KV cache
for the rows that repeat it (``covgym/models/prefix_sharing.py``). This script times, on the speed benchmark's step-1
batch (tiny model, 16 arithmetic prompts × 8), each phase with sharing off and on:

- generation: ``Policy.generate`` on the 128 prompts (same seed: the draws must be identical);
- scoring (no grad): ``Policy.score`` of the response tokens, as the rollout does;
- training forward + backward: ``Policy.score`` with gradients on one optimizer mini-batch (32 random rows, as
  the trainer cuts them), then ``backward``;

and reports the largest differences of log-probs, entropies and gradients between the two paths.

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

GROUP, NEW_TOKENS, MINI_BATCHES = speed.GROUP, speed.NEW_TOKENS, speed.MINI_BATCHES


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

    from covgym.models.policy import Policy, SamplingParams
    from covgym.models.tiny_model import ensure_tiny_model
    from covgym.train.rollout import Episode, pack_episodes

    policy = Policy.from_pretrained(str(ensure_tiny_model(show_progress=False)), show_progress=False)
    prompts = [policy.encode_prompt(text) for text, _ in speed.step_prompts(1)]
    repeated = [p for p in prompts for _ in range(GROUP)]
    sampling = SamplingParams(max_new_tokens=NEW_TOKENS)
    responses = policy.generate(repeated, sampling, seed=0)
    batch = pack_episodes([Episode(prompt_ids=p, segments=[(r, True)]) for p, r in zip(repeated, responses)],
                          [i // GROUP for i in range(len(repeated))], policy.pad_token_id)
    rows = torch.randperm(batch.batch_size, generator=torch.Generator().manual_seed(0))[:batch.batch_size // MINI_BATCHES]
    mini = batch.select(rows.sort().values)

    def generate() -> list[list[int]]:
        return policy.generate(repeated, sampling, seed=0)

    def score() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            return policy.score(batch.input_ids, batch.attention_mask, batch.prompt_lengths,
                                positions=batch.response_mask)

    def train() -> torch.Tensor:
        policy.model.zero_grad(set_to_none=True)
        log_probs, entropy = policy.score(mini.input_ids, mini.attention_mask, mini.prompt_lengths,
                                          positions=mini.response_mask)
        (log_probs.sum() + 0.1 * entropy.sum()).backward()
        return torch.cat([p.grad.flatten() for p in policy.model.parameters() if p.grad is not None])

    phases = {"generation": generate, "scoring (no grad)": score, "training forward + backward": train}
    times: dict[str, dict[str, float]] = {name: {} for name in phases}
    outputs: dict[bool, dict[str, Any]] = {}
    for share in (False, True):
        policy.share_prompts = share
        outputs[share] = {name: function() for name, function in phases.items()}
        for name, function in phases.items():
            times[name]["off" if not share else "on"] = timed(function, args.repeats)
    (lp_off, ent_off), (lp_on, ent_on) = outputs[False]["scoring (no grad)"], outputs[True]["scoring (no grad)"]
    result = {
        "created": time.strftime("%Y-%m-%d %H:%M:%S"), "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "load_average_at_start": list(os.getloadavg()),
        "command": "python benchmarks/prefix_sharing.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "batch": {"prompts": len(prompts), "group_size": GROUP, "prompt_width": int(batch.prompt_lengths.max()),
                  "sequence_width": int(batch.input_ids.shape[1]), "mini_batch_rows": int(rows.numel()),
                  "mini_batch_distinct_prompts": len({tuple(p) for p in (repeated[i] for i in rows.tolist())})},
        "seconds": times,
        "identical_generations": outputs[False]["generation"] == outputs[True]["generation"],
        "max_abs_difference": {
            "log_prob": float((lp_off - lp_on).abs().max()), "entropy": float((ent_off - ent_on).abs().max()),
            "gradient": float((outputs[False]["training forward + backward"]
                               - outputs[True]["training forward + backward"]).abs().max()),
            "gradient_scale": float(outputs[False]["training forward + backward"].abs().max())},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
