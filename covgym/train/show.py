"""``covgym show``: a run's stored samples as text, each token coloured by the policy's entropy where it chose it.

Colour only when the output is a terminal that takes it (``NO_COLOR`` set, ``TERM=dumb`` or a pipe: plain text,
with each response's mean and highest entropy written out instead).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Sequence, TextIO

from covgym.train.samples import load_samples

#: (upper entropy bound in nats, ANSI foreground colour): confident tokens plain, uncertain ones hot.
ENTROPY_COLOURS = ((0.1, ""), (0.5, "\033[36m"), (1.0, "\033[32m"), (2.0, "\033[33m"), (float("inf"), "\033[31m"))
ENVIRONMENT_COLOUR = "\033[2m"  # dim: tokens the environment wrote (tool output, game replies)
RESET = "\033[0m"


def wants_colour(stream: TextIO, choice: str = "auto") -> bool:
    """``always``/``never``, or ``auto``: a terminal, not ``TERM=dumb``, and no ``NO_COLOR``."""
    if choice != "auto":
        return choice == "always"
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return hasattr(stream, "isatty") and stream.isatty()


def _colour_of(entropy: float | None) -> str:
    if entropy is None:
        return ENVIRONMENT_COLOUR
    return next(code for bound, code in ENTROPY_COLOURS if entropy < bound)


def render_tokens(tokens: Sequence[Sequence[Any]], colour: bool) -> str:
    """The response; without colour, the environment's text (tool output, replies) is set off as ``[env: ...]``."""
    out = []
    for index, (token, entropy) in enumerate(tokens):
        if colour:
            code = _colour_of(entropy)
            out.append(f"{code}{token}{RESET}" if code else token)
            continue
        env_before = index > 0 and tokens[index - 1][1] is None
        env_after = index + 1 < len(tokens) and tokens[index + 1][1] is None
        if entropy is None:
            token = ("" if env_before else "[env: ") + token + ("" if env_after else "]")
        out.append(token)
    return "".join(out)


def legend(colour: bool) -> str:
    if not colour:
        return ""
    bounds = ["< 0.1 plain"] + [f"{code}< {bound:g}{RESET}" for bound, code in ENTROPY_COLOURS[1:-1]]
    return f"token entropy (nats): {', '.join(bounds)}, {ENTROPY_COLOURS[-1][1]}>= 2{RESET}; " \
           f"{ENVIRONMENT_COLOUR}environment text{RESET}\n"


def _indent(text: str, width: int) -> str:
    return text.replace("\n", "\n" + " " * width)


def format_record(record: dict[str, Any], colour: bool) -> str:
    policy_entropies = [entropy for _, entropy in record["tokens"] if entropy is not None]
    verdict = "correct" if record.get("correct") else "wrong"
    reason = f" ({record['reason']})" if record.get("reason") else ""
    lines = [f"reward {record['reward']:.3f}  {verdict}{reason}  answer {record.get('answer')!r}  "
             f"extracted {record.get('extracted')!r}",
             f"  prompt:   {_indent(record['prompt'], 12)}",
             f"  response: {_indent(render_tokens(record['tokens'], colour), 12)}"]
    if policy_entropies:
        top = max(range(len(record["tokens"])), key=lambda i: -1 if record["tokens"][i][1] is None
                  else record["tokens"][i][1])
        lines.append(f"  entropy:  mean {sum(policy_entropies) / len(policy_entropies):.3f}, "
                     f"max {record['tokens'][top][1]:.3f} at token {record['tokens'][top][0]!r}, "
                     f"{len(policy_entropies)} policy tokens")
    return "\n".join(lines)


def show(path: str, step: int | None = None, split: str = "all", colour: str = "auto",
         stream: TextIO | None = None) -> int:
    """Print the samples of one step (default: the last stored); returns how many were printed."""
    stream = stream or sys.stdout
    records = [r for r in load_samples(path) if split == "all" or r.get("split") == split]
    if not records:
        raise ValueError(f"no {'' if split == 'all' else split + ' '}samples stored in {path!r}")
    steps = sorted({int(r["step"]) for r in records})
    chosen = steps[-1] if step is None else step
    if chosen not in steps:
        raise ValueError(f"no samples at step {chosen} in {path!r}; steps with samples: {_ranges(steps)}")
    use_colour = wants_colour(stream, colour)
    stream.write(legend(use_colour))
    for name in ("train", "test"):
        chosen_records = [r for r in records if int(r["step"]) == chosen and r.get("split") == name]
        if not chosen_records:
            continue
        title = "training rollouts" if name == "train" else "held-out evaluation"
        mean = sum(r["reward"] for r in chosen_records) / len(chosen_records)
        stream.write(f"== step {chosen}: {title}, {len(chosen_records)} samples, mean reward {mean:.3f} ==\n")
        for record in chosen_records:
            stream.write(format_record(record, use_colour) + "\n\n")
    return sum(int(r["step"]) == chosen for r in records)


def _ranges(steps: Sequence[int]) -> str:
    if len(steps) <= 8:
        return ", ".join(map(str, steps))
    return f"{', '.join(map(str, steps[:4]))}, …, {', '.join(map(str, steps[-3:]))}"
