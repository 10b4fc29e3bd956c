"""Where one policy-update mini-batch spends its time on SmolLM2-135M: FLOP/s against the matmul peak, and ops.

One mini-batch of the speed workload's shape (8 rows, 14 prompt tokens + up to 253 response tokens), forward and
backward of covgym's scoring (log-probs and entropies of the response tokens, their sum as the loss), in three
layouts: ``padded`` (covgym with packing off), ``packed`` (covgym's default: padding not computed) and
``hf-full-logits`` (the Hugging Face forward with ``[tokens, vocab]`` logits and a log-softmax, TRL's way). Two
batches: ``full`` (every row at the full length: nothing to pack) and ``uneven`` (a spread of lengths, as sampling
gives). For each: seconds (best of ``--repeats`` after a warm-up), useful FLOP/s = 6 · parameters · real tokens /
time and computed FLOP/s = 6 · parameters · positions run / time, both against the best float32 2048² matmul
here, and the share of profiled CPU time in matmuls (``aten::mm``/``addmm``/``bmm``), attention (SDPA kernels) and
the rest (norms, activations, elementwise, indexing).

The ceiling: the same batch's matrix products alone (every linear layer's forward and two backward products at
the batch's positions, the output head's at its response positions, on random tensors of those shapes), as a
fraction of the 2048² peak; no layout can beat it without changing the matmul kernel or precision.

Then activation memory on the ``full`` batch, packed layout, each setting in a fresh process: everything kept
(``--activation-budget-mb 0``), covgym's default activation budget (``covgym.models.activation_budget``: the layers it
checkpoints are chosen on the batch), budgets of 1024 and 2048 MiB, every 2nd decoder layer and every layer checkpointed
(``--gradient-checkpointing true [--checkpoint-every-n-layers 2]``; TRL's GRPO default is every layer): seconds (best
of ``--repeats``), layers checkpointed, and the peak RSS the first forward + backward adds over the loaded model
(``ru_maxrss``; gradients included, 513 MiB).

Usage::

    python benchmarks/update_profile.py [--repeats 2] [--out benchmarks/results/update_profile.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from covgym.models.activation_budget import DEFAULT_ACTIVATION_BUDGET_MB, decoder_layers

LENGTHS = {"full": [267] * 8, "uneven": [267, 267, 100, 60, 267, 150, 120, 40]}
PROMPT = 14
MATMUL = ("aten::mm", "aten::addmm", "aten::bmm")


def matmul_peak(size: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = min(_seconds(lambda: a @ b) for _ in range(repeats))
    return 2.0 * size**3 / best


def _seconds(work: Callable[[], Any]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def op_shares(work: Callable[[], None]) -> dict[str, float]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        work()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMUL)
    attention = sum(e.self_cpu_time_total for e in events if "scaled_dot_product" in e.key)
    return {"matmul": matmul / total, "attention": attention / total, "other": 1 - (matmul + attention) / total}


def gemm_ceiling(config: Any, positions: int, head_positions: int, repeats: int) -> dict[str, float]:
    """Seconds and FLOP of a Llama-style model's own matmuls alone, at ``positions`` tokens (the head at
    ``head_positions``): forward ``x·Wᵀ`` and backward ``g·W`` and ``gᵀ·x`` per linear layer, on random tensors."""
    hidden, inter = config.hidden_size, config.intermediate_size
    head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    heads = config.num_attention_heads * head_dim
    kv = getattr(config, "num_key_value_heads", config.num_attention_heads) * head_dim
    layer = [(heads, hidden), (kv, hidden), (kv, hidden), (hidden, heads), (inter, hidden), (inter, hidden),
             (hidden, inter)]  # (out, in): q, k, v, o, gate, up, down
    weights = [torch.randn(o, i) for o, i in layer]
    inputs = {i: torch.randn(positions, i) for i in {i for _, i in layer}}
    grads = {o: torch.randn(positions, o) for o in {o for o, _ in layer}}
    head_w = torch.randn(config.vocab_size, hidden)
    head_x, head_g = torch.randn(head_positions, hidden), torch.randn(head_positions, config.vocab_size)

    def products(w: torch.Tensor, x: torch.Tensor, g: torch.Tensor) -> None:
        x @ w.t(), g @ w, g.t() @ x

    def one_layer() -> None:
        for w in weights:
            products(w, inputs[w.shape[1]], grads[w.shape[0]])

    one_layer(), products(head_w, head_x, head_g)  # warm-up
    seconds = (config.num_hidden_layers * min(_seconds(one_layer) for _ in range(repeats))
               + min(_seconds(lambda: products(head_w, head_x, head_g)) for _ in range(repeats)))
    flop = 6.0 * (config.num_hidden_layers * positions * sum(o * i for o, i in layer)
                  + head_positions * config.vocab_size * hidden)
    return {"seconds": seconds, "flop": flop}


def batch_of(policy: Any, lengths: list[int], generator: torch.Generator
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask, response positions)``: random tokens, right-padded rows of ``lengths``."""
    width = max(lengths)
    ids = torch.full((len(lengths), width), policy.pad_token_id)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for r, n in enumerate(lengths):
        ids[r, :n] = torch.randint(5, policy.model.config.vocab_size, (n,), generator=generator)
        mask[r, :n] = 1
    response = mask.clone()
    response[:, :PROMPT] = 0
    return ids, mask, response


# activation-memory settings compared on the full batch: (label, every n-th layer checkpointed or 0, budget MiB)
MEMORY_SETTINGS = {"none": ("none", 0, 0.0),
                   "budget": (f"budget {DEFAULT_ACTIVATION_BUDGET_MB} MiB (covgym's default)", 0,
                              float(DEFAULT_ACTIVATION_BUDGET_MB)),
                   "budget1024": ("budget 1024 MiB", 0, 1024.0), "budget2048": ("budget 2048 MiB", 0, 2048.0),
                   "every2": ("1 in 2", 2, 0.0),
                   "every1": ("every layer (TRL's GRPO default)", 1, 0.0)}


def checkpointing_worker(setting: str, repeats: int) -> dict[str, Any]:
    """One activation-memory setting in this fresh process: seconds, layers checkpointed, peak RSS a step adds."""
    import resource

    from covgym.models.policy import Policy

    label, every, budget = MEMORY_SETTINGS[setting]
    policy = Policy.from_pretrained("smollm2-135m-instruct", use_chat_template=False, show_progress=False,
                                    gradient_checkpointing=every > 0, checkpoint_every_n_layers=max(every, 1),
                                    activation_budget_mb=budget)
    policy.share_prompts = False
    model = policy.model.train()
    ids, mask, response = batch_of(policy, LENGTHS["full"], torch.Generator().manual_seed(0))

    def step() -> None:
        log_probs, entropies = policy.score(ids, mask, positions=response)
        ((log_probs + entropies) * response).sum().backward()
        model.zero_grad(set_to_none=True)

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step()
    added = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024  # Linux: KiB
    layers = len(decoder_layers(model))
    plan = policy._budget.last if policy._budget is not None else None
    checkpointed = plan.checkpointed_layers if plan is not None else (0 if every == 0 else len(range(0, layers, every)))
    return {"setting": setting, "label": label, "every_n_layers": every, "budget_mb": budget, "layers": layers,
            "checkpointed_layers": checkpointed, "seconds": min(_seconds(step) for _ in range(repeats)),
            "added_peak_bytes": added}


def checkpointing_rows(repeats: int) -> list[dict[str, Any]]:
    rows = []
    for setting in MEMORY_SETTINGS:
        completed = subprocess.run([sys.executable, __file__, "--checkpoint-worker", setting, "--repeats",
                                    str(repeats)], capture_output=True, text=True, check=True)
        row = json.loads(completed.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"activation memory {row['label']:36s} {row['checkpointed_layers']:2d}/{row['layers']} layers "
              f"checkpointed  {row['seconds']:6.2f} s  peak RSS added {row['added_peak_bytes'] / 2**20:,.0f} MiB",
              flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/update_profile.json")
    parser.add_argument("--checkpoint-worker", choices=sorted(MEMORY_SETTINGS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.checkpoint_worker is not None:
        print(json.dumps(checkpointing_worker(args.checkpoint_worker, args.repeats)))
        return 0
    from covgym.models.packing import pack
    from covgym.models.policy import Policy

    load = os.getloadavg()
    # first, while this process is small: a child's ru_maxrss starts at its parent's high-water mark (Linux)
    checkpointing = checkpointing_rows(args.repeats)
    policy = Policy.from_pretrained("smollm2-135m-instruct", use_chat_template=False, show_progress=False)
    model = policy.model.train()
    parameters = sum(p.numel() for p in model.parameters())
    peak = matmul_peak()
    rows: list[dict[str, Any]] = []
    generator = torch.Generator().manual_seed(0)
    for batch, lengths in LENGTHS.items():
        ids, mask, response = batch_of(policy, lengths, generator)
        real = int(mask.sum())
        layout = pack(ids, mask, policy.pad_token_id)

        def covgym_step(packed: bool) -> None:
            policy.share_prompts, policy.pack_sequences = False, packed
            log_probs, entropies = policy.score(ids, mask, positions=response)
            ((log_probs + entropies) * response).sum().backward()
            model.zero_grad(set_to_none=True)

        def full_logits_step() -> None:
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            log_p = torch.log_softmax(logits, -1)
            token = log_p.gather(-1, ids[:, 1:, None])[..., 0]
            entropy = -(log_p.exp() * log_p).sum(-1)
            ((token + entropy) * response[:, 1:]).sum().backward()
            model.zero_grad(set_to_none=True)

        variants = {"padded": (lambda: covgym_step(False), ids.numel()),
                    "packed": (lambda: covgym_step(True), layout.positions if layout is not None else ids.numel()),
                    "hf-full-logits": (full_logits_step, ids.numel())}
        for name, (work, positions) in variants.items():
            work()  # warm-up (and covgym's one-off packing check)
            seconds = min(_seconds(work) for _ in range(args.repeats))
            row = {"batch": batch, "layout": name, "seconds": seconds, "real_tokens": real, "positions": positions,
                   "useful_fraction_of_matmul": 6.0 * parameters * real / seconds / peak,
                   "computed_fraction_of_matmul": 6.0 * parameters * positions / seconds / peak, **op_shares(work)}
            rows.append(row)
            print(f"{batch:7s} {name:15s} {seconds:6.2f} s  positions {positions:5d} (real {real})  useful "
                  f"{100 * row['useful_fraction_of_matmul']:3.0f} %  computed {100 * row['computed_fraction_of_matmul']:3.0f} % "
                  f"of matmul  | time in matmul {100 * row['matmul']:.0f} %, attention {100 * row['attention']:.0f} %, "
                  f"other {100 * row['other']:.0f} %", flush=True)
    ceiling = gemm_ceiling(model.config, sum(LENGTHS["full"]), sum(LENGTHS["full"]) - PROMPT * len(LENGTHS["full"]),
                           args.repeats)
    ceiling["fraction_of_matmul"] = ceiling["flop"] / ceiling["seconds"] / peak
    ceiling["useful_fraction_of_matmul"] = 6.0 * parameters * sum(LENGTHS["full"]) / ceiling["seconds"] / peak
    print(f"GEMMs alone (full batch's shapes) {ceiling['seconds']:.2f} s: {100 * ceiling['fraction_of_matmul']:.0f} % "
          f"of matmul; as useful FLOP/s {100 * ceiling['useful_fraction_of_matmul']:.0f} %", flush=True)
    payload = {"created": time.strftime("%Y-%m-%d %H:%M:%S"), "parameters": parameters, "matmul_flops": peak,
               "torch_threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
               "load_average_at_start": load, "lengths": LENGTHS, "prompt_tokens": PROMPT, "rows": rows,
               "gemm_ceiling": ceiling, "checkpointing": checkpointing,
               "command": "python benchmarks/update_profile.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(payload, indent=2))
    print(f"matmul peak {peak / 1e9:.0f} GFLOP/s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
