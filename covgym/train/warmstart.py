"""``covgym warmstart``: a tiny model for any environment that can answer its own problems (``oracle_action``).

The built-in tiny models are learnable because they are warm-started, by supervised training, on their own
task's solved problems, a fraction of them near misses: RL then starts from a model that is right some of the
time and uncertain where it matters. This module applies that recipe to any registered env, single- or
multi-turn: it plays episodes with the env's ``oracle_action`` (replacing an action by a near miss with
probability ``label_noise``, after which the oracle goes on from the env's reply in a multi-turn task), and
trains the tiny architecture on the transcripts, with the loss on the policy's own tokens only.

It cannot work when the env has no ``oracle_action``, when the oracle's answers are not graded correct by the
env itself (the default ``\\boxed{}`` against an exact-match grader), or when a transcript is longer than the
tiny model's context (``max_position_embeddings`` tokens of one character each).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import shutil
import string
import tempfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from covgym.models.tiny_model import (Segment, TinyModelSpec, build_tokenizer, build_untrained, cache_root,
                                      supervised_warm_start)

_VERSION = 1  # bump when the recipe below changes, so old caches are not reused
SPEC_FILE = "covgym_spec.json"
UNIQUE_EXAMPLES = 20_000  # distinct episodes played; the SFT budget cycles through them


class WarmStartError(ValueError):
    """The env cannot be warm-started from (no oracle, a wrong oracle, transcripts too long)."""


def near_miss(text: str, rng: np.random.Generator) -> str:
    """A plausible wrong answer close to ``text``: an integer off by 1 or 2, else one character edit."""
    stripped = text.strip()
    try:
        return text.replace(stripped, str(int(stripped) + int(rng.choice([-2, -1, 1, 2]))))
    except ValueError:
        pass
    if not stripped:
        return text + "0"
    chars = list(text)
    index = int(rng.integers(len(chars)))
    edit = int(rng.integers(3))
    if edit == 0 and len(chars) > 1:  # swap two neighbours
        other = index + 1 if index + 1 < len(chars) else index - 1
        chars[index], chars[other] = chars[other], chars[index]
    elif edit == 1 and len(chars) > 1:  # drop one
        del chars[index]
    else:  # replace one by another character of the text (or a digit)
        pool = sorted(set(text) - {chars[index]}) or list("0123456789")
        chars[index] = str(rng.choice(pool))
    missed = "".join(chars)
    return missed if missed != text else text + text[-1]


def _miss(action: str, answer: str | None, rng: np.random.Generator) -> str:
    """A near miss of ``action``: its gold answer perturbed in place when it holds it, else the action itself."""
    if answer and answer in action:
        at = action.rfind(answer)
        return action[:at] + near_miss(answer, rng) + action[at + len(answer):]
    return near_miss(action, rng)


def play_episode(env: gym.Env, seed: int, rng: np.random.Generator, label_noise: float
                 ) -> tuple[list[Segment], bool, str]:
    """One oracle transcript as segments (prompt and env replies untrained; actions and <eos> trained).

    Returns (segments, whether the episode ended correct, the grader's reason)."""
    inner = env.unwrapped
    prompt, info = env.reset(seed=seed)
    segments: list[Segment] = [(prompt, False)]
    stops = tuple(getattr(inner, "stop_strings", ()) or ())
    correct, reason = False, ""
    for _ in range(int(getattr(inner, "max_turns", 1) or 1)):
        try:
            action = inner.oracle_action()
        except NotImplementedError:
            raise WarmStartError(f"{inner.spec.id if inner.spec else type(inner).__name__} has no oracle_action, "
                                 f"so there is nothing to warm-start from; define oracle_action() (an optimal "
                                 f"action from the hidden answer; docs/extending.md)") from None
        if label_noise and rng.random() < label_noise:
            action = _miss(action, str(info.get("answer", "")), rng)
        observation, _, terminated, truncated, step_info = env.step(action)
        segments.append((action, True))
        if not any(action.endswith(stop) for stop in stops):
            segments.append((None, True))  # the turn ends with <eos>, as the sampler ends it
        correct, reason = bool(step_info.get("correct", False)), str(step_info.get("reason", ""))
        if terminated or truncated:
            break
        if observation:
            segments.append((observation, False))
    return segments, correct, reason


def demonstrations(env_id: str, env_kwargs: dict[str, Any], count: int, seed: int, label_noise: float,
                   max_tokens: int) -> list[list[Segment]]:
    """``count`` transcripts (cycling through at most ``UNIQUE_EXAMPLES`` distinct ones), after checking that the
    oracle solves its own problems and that every transcript fits the tiny model."""
    from covgym.envs import make_split_env

    env = make_split_env(env_id, env_kwargs, "train")
    rng = np.random.default_rng(seed)
    wrong = [reason for index in range(8)
             for _, correct, reason in [play_episode(env, seed * 7919 + index, rng, 0.0)] if not correct]
    if wrong:
        raise WarmStartError(f"{env_id}'s oracle_action is graded wrong by the env itself on {len(wrong)} of 8 "
                             f"problems (reason: {wrong[0]!r}); a warm start would teach wrong answers. The "
                             f"default oracle_action answers in \\boxed{{}}: override it to answer in the form your "
                             f"grade() accepts")
    unique: list[list[Segment]] = []
    for index in range(min(count, UNIQUE_EXAMPLES)):
        segments, _, _ = play_episode(env, seed * 1_000_003 + index, rng, label_noise)
        length = sum(1 if text is None else len(text) for text, _ in segments)
        if length > max_tokens:
            raise WarmStartError(f"a transcript of {env_id} is {length} characters long, more than the tiny model's "
                                 f"{max_tokens}-token context (one token a character); shorten the prompts or "
                                 f"answers (env kwargs), or bring a real model")
        unique.append(segments)
    outside = {char for segments in unique[:200] for text, _ in segments if text for char in text
               if char not in string.printable}
    if outside:
        import warnings

        warnings.warn(f"{env_id} uses characters the tiny tokenizer lacks ({''.join(sorted(outside))!r}); they "
                      f"become <unk>", stacklevel=2)
    return [unique[index % len(unique)] for index in range(count)]


def _env_source_hash(env_id: str) -> str:
    """A hash of the env class's source file, so that editing the env rebuilds its model."""
    entry = gym.spec(env_id).entry_point
    target = entry if not isinstance(entry, str) else None
    try:
        if target is None:
            module_name, _, attribute = str(entry).partition(":")
            import importlib

            target = getattr(importlib.import_module(module_name), attribute)
        return hashlib.sha256(Path(inspect.getsourcefile(target)).read_bytes()).hexdigest()[:12]
    except (TypeError, OSError, ImportError, AttributeError):
        return ""


def warmstart_key(spec: TinyModelSpec, label_noise: float) -> str:
    fields = {**dataclasses.asdict(spec), "label_noise": label_noise, "version": _VERSION,
              "env_source": _env_source_hash(spec.env_id)}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:12]


def is_warm_started(path: str | Path) -> bool:
    """Whether ``path`` is a model directory built by ``covgym warmstart`` (or a built-in tiny model)."""
    return (Path(path) / SPEC_FILE).is_file()


def build_warmstart(env_id: str, env_kwargs: dict[str, Any] | None = None, out: str | Path | None = None,
                    sft_steps: int = 1500, label_noise: float = 0.4, seed: int = 0, plugins: list[str] | None = None,
                    show_progress: bool = True) -> Path:
    """The tiny model warm-started on ``env_id``: cached by spec (or written to ``out``); returns its directory."""
    import covgym.envs  # noqa: F401  (registers ids)

    env_kwargs = dict(env_kwargs or {})
    if not 0.0 <= label_noise < 1.0:
        raise WarmStartError(f"label_noise must be in [0, 1), got {label_noise}")
    if sft_steps < 1:
        raise WarmStartError(f"sft_steps must be >= 1, got {sft_steps}")
    spec = TinyModelSpec(env_id=env_id, env_kwargs=tuple(sorted(env_kwargs.items())), sft_steps=sft_steps,
                         sft_label_noise=label_noise, seed=seed, recipe="oracle")
    key = warmstart_key(spec, label_noise)
    target = Path(out) if out else cache_root() / "models" / f"warm-{env_id.replace('/', '_')}-{key}"
    if is_warm_started(target):
        recorded = json.loads((target / SPEC_FILE).read_text())
        if recorded.get("key") == key:
            return target
        raise WarmStartError(f"{target} holds a model warm-started with other settings; choose another --out")
    if target.exists() and any(target.iterdir()):
        raise WarmStartError(f"{target} is not empty; choose another --out (nothing is overwritten)")
    examples = demonstrations(env_id, env_kwargs, spec.sft_steps * spec.sft_batch_size, seed, label_noise,
                              spec.max_position_embeddings)
    tokenizer = build_tokenizer()
    model = build_untrained(spec, len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id)
    supervised_warm_start(model, tokenizer, spec, show_progress, examples=examples)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / SPEC_FILE).write_text(json.dumps({**dataclasses.asdict(spec), "key": key,
                                                     "plugins": list(plugins or [])}, indent=2, default=str))
        if target.exists():
            target.rmdir()  # empty: checked above
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
