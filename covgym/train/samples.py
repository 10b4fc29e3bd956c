"""Readable samples: a few rollouts per step, stored in the run directory as ``samples.jsonl``.

A reward curve alone cannot tell a wrong answer format from a wrong grader from a model that is too weak; the
text can. Each line is one episode: the step, the split (``train`` for rollouts, ``test`` for held-out
evaluation, whose step is the training step it followed, 0 before training), the prompt, the reward, the
grader's verdict (``correct``, ``reason``, ``extracted``, ``answer``) and the response as tokens with the
policy's entropy at each (``None`` on tokens the environment wrote). The file is capped in size (``max_mb``):
once full, later samples are dropped with one warning, so a long run never fills a disk with text.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterable, Sequence

SAMPLES_FILE = "samples.jsonl"

logger = logging.getLogger("covgym")


def spread_rows(group_ids: Sequence[int], count: int) -> list[int]:
    """Up to ``count`` rows, the first response of as many distinct groups (prompts) as possible."""
    rows, seen = [], set()
    for row, group in enumerate(group_ids):
        if group not in seen:
            seen.add(group)
            rows.append(row)
    extra = [row for row in range(len(group_ids)) if row not in set(rows)]
    return (rows + extra)[:count]


def first_sample_rows(batch_size: int, samples_per_problem: int, count: int) -> list[int]:
    """Up to ``count`` rows of an evaluation batch (problem-major, ``samples_per_problem`` rows a problem): each
    problem's first."""
    return list(range(0, batch_size, samples_per_problem))[:count]


def episode_records(batch: Any, decode_token: Any, rows: Iterable[int], step: int, split: str,
                    decode: Any = None) -> list[dict[str, Any]]:
    """One record per row of a scored ``RolloutBatch``.

    ``decode_token(id) -> str`` renders one token; ``decode(ids) -> str`` the prompt (default: joined tokens).
    Rows may be padded on the left too (TRL's layout); without ``batch.prompt_lengths`` the prompt is what comes
    before the first policy token.
    """
    records = []
    for row in rows:
        real = batch.attention_mask[row].nonzero().flatten()  # [T_row]: padding may sit on either side
        ids = batch.input_ids[row, real].tolist()
        policy_token = batch.response_mask[row, real].tolist()
        entropies = batch.entropies[row, real].tolist()
        length = len(ids)
        if batch.prompt_lengths is not None:
            prompt_length = int(batch.prompt_lengths[row])
        else:  # the prompt ends where the policy first speaks
            prompt_length = next((i for i, flag in enumerate(policy_token) if flag), length)
        tokens = [[decode_token(ids[i]), round(entropies[i], 4) if policy_token[i] else None]
                  for i in range(prompt_length, length)]
        info = batch.info[row] if batch.info else {}
        prompt_ids = ids[:prompt_length]
        records.append({
            "step": step, "split": split, "row": int(row), "group": int(batch.group_ids[row]),
            "prompt": decode(prompt_ids) if decode else "".join(decode_token(i) for i in prompt_ids),
            "reward": float(batch.rewards[row]), "correct": bool(info.get("correct", False)),
            "reason": str(info.get("reason", "")), "extracted": _plain(info.get("extracted")),
            "answer": _plain(info.get("answer")), "tokens": tokens,
        })
    return records


def _plain(value: Any) -> Any:
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


class SampleWriter:
    """Appends records to ``run_dir/samples.jsonl`` up to ``max_mb`` MiB; on resume, drops lines past the step."""

    def __init__(self, run_dir: str | Path, max_mb: float, resume_step: int | None = None) -> None:
        self.path = Path(run_dir) / SAMPLES_FILE
        self.max_bytes = int(max_mb * 2**20)
        self.full_warned = False
        if resume_step is not None and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines() if _step_of(line) <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        self.size = self.path.stat().st_size if self.path.exists() else 0

    def write(self, records: Sequence[dict[str, Any]]) -> int:
        """Append what fits under the cap; returns how many records were written."""
        written = 0
        with open(self.path, "a", encoding="utf-8") as handle:
            for record in records:
                line = json.dumps(record, ensure_ascii=False) + "\n"
                size = len(line.encode())
                if self.size + size > self.max_bytes:
                    if not self.full_warned:
                        logger.warning("%s reached its cap of %.1f MiB; later samples are not stored (raise "
                                       "--samples-max-mb to keep more)", self.path, self.max_bytes / 2**20)
                        self.full_warned = True
                    break
                handle.write(line)
                self.size += size
                written += 1
        return written


def _step_of(line: str) -> float:
    try:
        return float(json.loads(line).get("step", float("inf")))
    except (json.JSONDecodeError, AttributeError):
        return float("inf")  # a line cut short by a crash


def load_samples(path: str | Path) -> list[dict[str, Any]]:
    """The records of a run directory's ``samples.jsonl`` (or of that file itself); unreadable lines skipped."""
    path = Path(path)
    if path.is_dir():
        path = path / SAMPLES_FILE
    if not path.exists():
        raise ValueError(f"{str(path)!r} does not exist: samples are stored by `covgym train` (in the run "
                         f"directory) and by `covgym eval --samples-file FILE`")
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "tokens" in record:
            records.append(record)
    return records


def markdown(records: Sequence[dict[str, Any]]) -> str:
    """Records as Markdown (TensorBoard's text plugin renders it)."""
    parts = []
    for record in records:
        response = "".join(token for token, _ in record["tokens"])
        parts.append(f"**reward {record['reward']:.3f}** ({'correct' if record['correct'] else 'wrong'}"
                     f"{': ' + record['reason'] if record['reason'] else ''}; answer {record['answer']!r})\n\n"
                     f"    {record['prompt']!r}\n\n    {response!r}")
    return "\n\n---\n\n".join(parts)
