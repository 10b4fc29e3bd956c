"""Peak memory and time of per-token log-prob + entropy scoring at a large vocabulary (Qwen2.5's 151,936).

Random float32 hidden states ``[N, 896]`` (Qwen2.5-0.5B's width) and a random output head ``[151936, 896]``; no
downloads. Variants:

- ``chunked``: covgym's path, as ``Policy.score`` runs it: the head is applied to ``chunk`` rows at a time and
  ``covgym.core.metrics.log_probs_and_entropy`` reduces each chunk to two numbers per token, so ``[N, V]`` logits never
  exist at once. In training (forward + backward) each chunk is recomputed in backward (checkpointing).
- ``full``: the naive path: materialise all ``[N, V]`` float32 logits, then ``log_softmax``, gather and
  ``−Σ p·log p``.

Each (variant, tokens) runs once in a fresh subprocess (the time includes first-touch page faults); its peak is
the kernel high-water mark ``ru_maxrss``, and ``extra`` is that peak minus the resident size just before scoring
(weights and inputs already allocated). The checksums (sums of log-probs and entropies) let a reader confirm that
the variants compute the same numbers.

Usage: ``python benchmarks/memory.py [--tokens 2048,4096] [--train-tokens 2048] [--extra-chunks 256]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

VOCAB, HIDDEN = 151_936, 896


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def max_rss_bytes() -> int:
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value if sys.platform == "darwin" else value * 1024


def worker(variant: str, tokens: int, mode: str, chunk: int) -> dict[str, Any]:
    import torch
    from torch.utils.checkpoint import checkpoint

    from covgym.core.metrics import log_probs_and_entropy

    torch.manual_seed(0)
    train = mode == "train"
    head = (torch.randn(VOCAB, HIDDEN) * 0.02).requires_grad_(train)  # [V, H]
    hidden = torch.randn(tokens, HIDDEN).requires_grad_(train)  # [N, H]
    targets = torch.randint(0, VOCAB, (tokens,))  # [N]

    def chunk_stats(h: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return log_probs_and_entropy(h @ head.T, t, chunk_size=h.shape[0])

    def chunked() -> tuple[torch.Tensor, torch.Tensor]:
        parts = []
        for start in range(0, tokens, chunk):
            h, t = hidden[start:start + chunk], targets[start:start + chunk]
            parts.append(checkpoint(chunk_stats, h, t, use_reentrant=False) if train else chunk_stats(h, t))
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def full() -> tuple[torch.Tensor, torch.Tensor]:
        logits = (hidden @ head.T).float()  # [N, V]
        log_p = torch.log_softmax(logits, dim=-1)  # [N, V]
        entropy = -(log_p.exp() * log_p).sum(-1)  # [N]
        return log_p.gather(-1, targets[:, None]).squeeze(-1), entropy

    run = chunked if variant == "chunked" else full
    baseline = current_rss_bytes()
    started = time.perf_counter()
    with torch.set_grad_enabled(train):
        log_probs, entropy = run()
        if train:
            (log_probs.sum() + entropy.sum()).backward()
    elapsed = time.perf_counter() - started
    return {"variant": variant, "tokens": tokens, "mode": mode, "chunk": chunk if variant == "chunked" else None,
            "threads": torch.get_num_threads(), "baseline_rss_bytes": baseline, "peak_rss_bytes": max_rss_bytes(),
            "extra_bytes": max_rss_bytes() - baseline, "time_s": elapsed,
            "checksum": [float(log_probs.detach().double().sum()), float(entropy.detach().double().sum())]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", default="2048,4096", help="token counts for scoring (no grad), comma-separated")
    parser.add_argument("--train-tokens", default="2048", help="token counts for forward + backward ('' for none)")
    parser.add_argument("--chunk", type=int, default=None, help="rows per chunk (default: covgym's)")
    parser.add_argument("--extra-chunks", default="256", help="also measure these chunk sizes (comma-separated)")
    parser.add_argument("--out", default="benchmarks/results/memory.json")
    parser.add_argument("--worker", nargs=4, metavar=("VARIANT", "TOKENS", "MODE", "CHUNK"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        variant, tokens, mode, chunk = args.worker
        print(json.dumps(worker(variant, int(tokens), mode, int(chunk))))
        return 0

    from covgym.models.policy import DEFAULT_CHUNK_BYTES, chunk_rows

    chunk = args.chunk or chunk_rows(VOCAB, DEFAULT_CHUNK_BYTES)
    chunks = [chunk] + [int(c) for c in args.extra_chunks.split(",") if c.strip() and int(c) != chunk]
    counts = {"score": args.tokens, "train": args.train_tokens}
    cases = [(variant, int(tokens), mode, c) for mode in ("score", "train")
             for tokens in counts[mode].split(",") if tokens.strip()
             for variant, c in [("full", chunk)] + [("chunked", c) for c in chunks]]
    rows = []
    for variant, tokens, mode, c in cases:
        label = f"{mode} {variant}{f' (chunk {c})' if variant == 'chunked' else ''} N={tokens}"
        print(f"memory: {label} ...", file=sys.stderr)
        completed = subprocess.run([sys.executable, __file__, "--worker", variant, str(tokens), mode, str(c)],
                                   capture_output=True, text=True)
        if completed.returncode != 0:
            tail = (completed.stderr.strip().splitlines() or [f"exit code {completed.returncode}"])[-1]
            rows.append({"variant": variant, "tokens": tokens, "mode": mode, "chunk": c, "failed": tail})
            continue
        rows.append(json.loads(completed.stdout.strip().splitlines()[-1]))
    payload = {"created": time.strftime("%Y-%m-%d %H:%M:%S"), "vocab": VOCAB, "hidden": HIDDEN,
               "default_chunk": chunk, "load_average_at_start": os.getloadavg(),
               "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
               "command": "python benchmarks/memory.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2))
    for row in rows:
        if "failed" in row:
            print(f"{row['mode']:6}{row['variant']:9}{row['tokens']:>7}  failed: {row['failed']}")
        else:
            print(f"{row['mode']:6}{row['variant']:9}{str(row['chunk'] or ''):>6}{row['tokens']:>7}"
                  f"{row['peak_rss_bytes'] / 2**20:>10.0f} MiB peak{row['extra_bytes'] / 2**20:>10.0f} MiB extra"
                  f"{row['time_s']:>9.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
