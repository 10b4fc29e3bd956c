"""The built-in tiny model: a small Llama-style causal LM with a character tokenizer, built offline.

It is warm-started by supervised training on solved problems that the default environment generates, for a fixed
small budget, so that RL starts from a model that is right some of the time (10–60 % when sampling at temperature 1)
and has room to improve. A fraction ``sft_label_noise`` of the demonstrations carry a near-miss answer (off by 1 or
2): the warm-started model then spreads probability over close answers, like a real SFT'd LM, and RL has something to
sharpen within minutes rather than having to teach arithmetic from scratch. The result is an ordinary Hugging Face
model directory in a cache, keyed by the spec, so ``from_pretrained`` serves it exactly like any local or hub model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import string
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

TINY_MODEL_ALIAS = "tiny"
_SPEC_VERSION = 2  # bump when the build procedure changes, so old caches are not reused
RECIPE_VERSIONS = {"digit_sum": 3}  # bump when a recipe's demonstrations change (task defaults, split)


@dataclass(frozen=True)
class TinyModelSpec:
    """Everything that determines the built model (and so its cache key)."""

    hidden_size: int = 128
    num_hidden_layers: int = 3
    num_attention_heads: int = 4
    intermediate_size: int = 384
    max_position_embeddings: int = 512
    env_id: str = "covgym/Arithmetic-v0"
    env_kwargs: tuple[tuple[str, Any], ...] = ()
    sft_steps: int = 1500
    sft_batch_size: int = 64
    sft_learning_rate: float = 3e-3
    sft_label_noise: float = 0.4
    seed: int = 0
    recipe: str = "answer"  # "answer": one gold answer per problem; "digit_sum": the mechanism testbed's tasks

    def key(self) -> str:
        fields = dataclasses.asdict(self)
        if fields["recipe"] == "answer":  # added later: leaving it out keeps the keys of existing caches
            del fields["recipe"]
        else:  # the recipe's own data (its task's defaults, its split) can change: version it
            fields["recipe_version"] = RECIPE_VERSIONS[fields["recipe"]]
        payload = json.dumps({**fields, "version": _SPEC_VERSION}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


#: The mechanism testbed's model (``--model tiny-digits``): the same architecture, warm-started on
#: ``covgym/DigitSum-v0`` and ``covgym/DigitSumFeedback-v0`` demonstrations, a fraction of them near misses.
DIGITS_MODEL_ALIAS = "tiny-digits"
DIGITS_MODEL_SPEC = TinyModelSpec(env_id="covgym/DigitSum-v0", recipe="digit_sum", sft_steps=1500,
                                  sft_label_noise=0.35)

#: A segment of a demonstration: text and whether the loss applies to it; ``None`` text stands for <eos>.
Segment = tuple["str | None", bool]


def cache_root() -> Path:
    """``$COVGYM_CACHE`` or ``~/.cache/covgym``."""
    return Path(os.environ.get("COVGYM_CACHE", Path.home() / ".cache" / "covgym"))


def build_tokenizer():
    """A character-level ``PreTrainedTokenizerFast``: one token per printable ASCII character."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2}
    for char in sorted(set(string.printable)):
        vocab[char] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>",
                                   unk_token="<unk>", bos_token=None, model_max_length=512)


def build_untrained(spec: TinyModelSpec, vocab_size: int, pad_id: int, eos_id: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab_size, hidden_size=spec.hidden_size,
                         num_hidden_layers=spec.num_hidden_layers, num_attention_heads=spec.num_attention_heads,
                         num_key_value_heads=spec.num_attention_heads, intermediate_size=spec.intermediate_size,
                         max_position_embeddings=spec.max_position_embeddings, tie_word_embeddings=True,
                         pad_token_id=pad_id, eos_token_id=eos_id, bos_token_id=None)
    torch.manual_seed(spec.seed)
    return LlamaForCausalLM(config)


def _solved_examples(spec: TinyModelSpec, count: int, seed: int) -> list[list[Segment]]:
    """Demonstrations as segments: the prompt (no loss), then the answer and <eos> (loss)."""
    if spec.recipe == "digit_sum":
        return _digit_sum_examples(spec, count, seed)
    if spec.recipe != "answer":
        raise ValueError(f"unknown tiny-model recipe {spec.recipe!r} (known: answer, digit_sum)")
    import gymnasium as gym

    import covgym.envs  # noqa: F401  (registers ids)

    env = gym.make(spec.env_id, split="train", **dict(spec.env_kwargs)).unwrapped
    rng = np.random.default_rng(seed)
    examples = []
    for index in range(count):
        prompt, info = env.reset(seed=seed * 1_000_003 + index)
        answer = info["answer"]
        if rng.random() < spec.sft_label_noise:  # a near miss: the warm start stays uncertain, as SFT'd LMs are
            answer = str(int(answer) + int(rng.choice([-2, -1, 1, 2])))
        examples.append([(prompt, False), (" " + answer, True), (None, True)])
    return examples


def _digit_sum_examples(spec: TinyModelSpec, count: int, seed: int) -> list[list[Segment]]:
    """Half single-turn DigitSum answers, half DigitSumFeedback transcripts (a wrong first attempt, the checker's
    reply, the repaired attempt). Correct answers are uniform over all solutions, so the warm start is diverse; a
    fraction ``sft_label_noise`` of answers and first attempts are near misses, so it is also often wrong."""
    from covgym.envs.digit_sum import DigitSumEnv, DigitSumFeedbackEnv, check

    single = DigitSumEnv(split="train", **dict(spec.env_kwargs))
    feedback = DigitSumFeedbackEnv(split="train", **dict(spec.env_kwargs))
    rng = np.random.default_rng(seed)
    examples: list[list[Segment]] = []
    for index in range(count):
        env = single if index % 2 == 0 else feedback
        env.reset(seed=seed * 1_000_003 + index)
        problem = env.problem
        noisy = rng.random() < spec.sft_label_noise
        attempt = env.sample_near_miss(problem, rng) if noisy else env.sample_solution(problem, rng)
        if env is single:
            examples.append([(problem.prompt, False), (attempt, True), (None, True)])
            continue
        segments: list[Segment] = [(problem.prompt, False), (attempt + "\n", True)]
        correct, verdict = check(attempt, problem)
        if not correct:
            repaired = DigitSumFeedbackEnv.repair(attempt, problem) or env.sample_solution(problem, rng)
            segments += [(f"{verdict}. Try:", False), (repaired + "\n", True)]
        examples.append(segments)
    return examples


def _encode_example(tokenizer, segments: list[Segment]) -> tuple[list[int], list[int]]:
    """Token ids and labels (-100 where no loss applies) of one demonstration."""
    ids: list[int] = []
    labels: list[int] = []
    for text, trained in segments:
        piece = [tokenizer.eos_token_id] if text is None else tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += piece
        labels += piece if trained else [-100] * len(piece)
    return ids, labels


def supervised_warm_start(model, tokenizer, spec: TinyModelSpec, show_progress: bool = True,
                          examples: list[list[Segment]] | None = None) -> None:
    """Train on the demonstrations with the loss on the policy's own tokens only (answers, attempts, <eos>).

    ``examples``: ``spec.sft_steps * spec.sft_batch_size`` demonstrations to use instead of the spec's recipe's
    (``covgym.train.warmstart`` brings them from any env's ``oracle_action``)."""
    from tqdm.auto import tqdm

    generator = torch.Generator().manual_seed(spec.seed)
    if examples is None:
        examples = _solved_examples(spec, spec.sft_steps * spec.sft_batch_size, spec.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.sft_learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=spec.sft_learning_rate,
                                                   total_steps=spec.sft_steps, pct_start=0.1)
    model.train()
    order = torch.randperm(len(examples), generator=generator).tolist()
    bar = tqdm(range(spec.sft_steps), desc="building tiny model (SFT warm start)", disable=not show_progress)
    for step in bar:
        chunk = [_encode_example(tokenizer, examples[i])
                 for i in order[step * spec.sft_batch_size:(step + 1) * spec.sft_batch_size]]
        length = max(len(ids) for ids, _ in chunk)
        input_ids = torch.full((len(chunk), length), tokenizer.pad_token_id)
        labels = torch.full((len(chunk), length), -100)
        attention = torch.zeros((len(chunk), length), dtype=torch.long)
        for row, (ids, row_labels) in enumerate(chunk):
            input_ids[row, :len(ids)] = torch.tensor(ids)
            labels[row, :len(ids)] = torch.tensor(row_labels)
            attention[row, :len(ids)] = 1
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()


def ensure_tiny_model(spec: TinyModelSpec | None = None, show_progress: bool = True) -> Path:
    """Path of the tiny model directory for ``spec``, building and caching it on first use.

    The build writes to a temporary directory and renames it into place, so an interrupted build never leaves
    a half-written model that a later run would load.
    """
    spec = spec or TinyModelSpec()
    target = cache_root() / "models" / f"tiny-{spec.key()}"
    if (target / "covgym_spec.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    model = build_untrained(spec, len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id)
    from covgym.models.threads import auto_threads, limited_threads

    with limited_threads(auto_threads(sum(p.numel() for p in model.parameters()))):  # a tiny model: one thread
        supervised_warm_start(model, tokenizer, spec, show_progress)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "covgym_spec.json").write_text(json.dumps(dataclasses.asdict(spec), indent=2))
        try:
            staging.rename(target)
        except OSError:  # another process finished first: keep theirs
            if not (target / "covgym_spec.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
