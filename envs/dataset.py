"""Problems from local files: JSONL/JSON, Parquet (with pyarrow) or a ``datasets`` dataset saved to disk."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from covgym.envs.base import MAX_OBSERVATION_LENGTH, Problem, SingleTurnEnv, text_space
from covgym.envs.grading import MAX_ANSWER_CHARS, extract_boxed

DATA_DIR = Path(__file__).with_name("data")
ANSWER_FORMATS = ("auto", "gsm8k", "math", "aime", "plain")
_QUESTION_FIELDS = ("question", "problem", "prompt", "input")
_ANSWER_FIELDS = ("answer", "solution", "output", "target")
_GSM8K_ANSWER = re.compile(r"####\s*(.+?)\s*$", re.DOTALL)


def gold_answer(raw: Any, answer_format: str) -> str | None:
    """The gold answer inside a dataset's answer field, or None when it has none.

    - ``gsm8k``: the text after ``####`` (thousands separators dropped: ``1,000`` -> ``1000``);
    - ``math``: the last ``\\boxed{...}`` of the solution;
    - ``aime``: an integer (``"042"`` -> ``42``);
    - ``plain``: the field as it is;
    - ``auto``: the first of gsm8k, math, aime that applies, else plain.
    """
    text = str(raw).strip()
    if answer_format == "auto":
        for name in ("gsm8k", "math", "aime"):
            found = gold_answer(text, name)
            if found is not None:
                return found
        return text or None
    if answer_format == "gsm8k":
        match = _GSM8K_ANSWER.search(text)
        return match.group(1).replace(",", "").strip() if match else None
    if answer_format == "math":
        boxed = extract_boxed(text)
        return boxed.strip() if boxed else None
    if answer_format == "aime":
        return str(int(text)) if re.fullmatch(r"-?\d+", text) else None
    return text or None


def read_records(path: str | Path) -> list[dict]:
    """Rows of a ``.jsonl``, ``.json`` (a list of objects), ``.parquet`` file or a ``datasets`` directory."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"path: no such file or directory: {path}")
    try:
        if path.is_dir():
            try:
                import datasets
            except ImportError as error:
                raise ValueError(f"path: {path} is a directory; reading a saved dataset needs `pip install "
                                 f"datasets`") from error
            dataset = datasets.load_from_disk(str(path))
            return [dict(row) for row in (dataset["train"] if hasattr(dataset, "keys") else dataset)]
        if path.suffix == ".parquet":
            try:
                import pyarrow.parquet as parquet
            except ImportError as error:
                raise ValueError(f"path: reading {path.name} needs `pip install pyarrow`") from error
            return parquet.read_table(path).to_pylist()
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            rows = json.loads(text)
        else:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"path: cannot read {path}: {error}") from error
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise ValueError(f"path: {path} must hold a list of JSON objects")
    return rows


def _field(rows: Iterable[dict], wanted: str | None, candidates: tuple[str, ...], role: str) -> str:
    first = next(iter(rows), {})
    if wanted is not None:
        if wanted not in first:
            raise ValueError(f"{role}_field: {wanted!r} is not a column (columns: {sorted(first)})")
        return wanted
    for name in candidates:
        if name in first:
            return name
    raise ValueError(f"{role}_field: none of {candidates} is a column (columns: {sorted(first)}); name it")


class DatasetEnv(SingleTurnEnv):
    """Questions and gold answers read from a local file, graded like the math envs.

    ## Description
    Reads ``path`` (default: a small generated GSM8K-style fixture shipped with covgym) once at construction.
    ``answer_format`` says where the gold answer is in the answer column (``gsm8k``: ``#### 72``; ``math``:
    ``\\boxed{}`` in the solution; ``aime``: an integer; ``plain``; ``auto``). Columns are found by name
    (``question``/``problem``/``prompt`` and ``answer``/``solution``) or given as ``question_field`` and
    ``answer_field``. Rows without an extractable answer or too long to show are skipped (counted in
    ``skipped``). ``split="all"`` (default) serves every row, for files that already are a train or test split;
    ``"train"``/``"test"`` split the rows by a hash of the question.

    ## Observation
    The question followed by ``prompt_suffix`` (default ``"\\nAnswer:"``) and the optional ``instruction``. The
    observation charset is the shared one plus every character of the file's questions.

    ## Action
    Free text; the final answer is the last ``\\boxed{}`` or else the last number, compared exactly for
    numbers and with math-verify (bounded, in a worker process) otherwise.

    ## Rewards
    1 if correct, else ``format_reward`` if a ``\\boxed{}`` answer is present, else 0.

    ## Episode End
    Terminates after one step (``terminated=True, truncated=False``).

    ## Version History
    - v0: first version.
    """

    def __init__(self, path: str | Path | None = None, answer_format: str = "auto",
                 question_field: str | None = None, answer_field: str | None = None,
                 prompt_suffix: str = "\nAnswer:", split: str = "all", **kwargs) -> None:
        super().__init__(split=split, **kwargs)
        if answer_format not in ANSWER_FORMATS:
            raise ValueError(f"answer_format must be one of {ANSWER_FORMATS}, got {answer_format!r}")
        self.path = Path(path) if path is not None else DATA_DIR / "gsm8k_sample.jsonl"
        rows = read_records(self.path)
        if not rows:
            raise ValueError(f"path: {self.path} has no rows")
        question_column = _field(rows, question_field, _QUESTION_FIELDS, "question")
        answer_column = _field(rows, answer_field, _ANSWER_FIELDS, "answer")
        self.problems: list[Problem] = []
        self.skipped = 0
        for index, row in enumerate(rows):
            question, raw_answer = row.get(question_column), row.get(answer_column)
            answer = gold_answer(raw_answer, answer_format) if raw_answer is not None else None
            prompt = f"{str(question).strip()}{prompt_suffix}"
            if (question is None or answer is None or len(answer) > MAX_ANSWER_CHARS
                    or len(prompt) + len(self.instruction) > MAX_OBSERVATION_LENGTH or not self.in_split(prompt)):
                self.skipped += 1
                continue
            self.problems.append(Problem(prompt=prompt, answer=answer, metadata={"index": index}))
        if not self.problems:
            raise ValueError(f"path: no usable rows in {self.path} for split {split!r} "
                             f"(answer_format={answer_format!r}, {self.skipped} skipped)")
        extra = {char for problem in self.problems for char in problem.prompt + self.instruction}
        self.observation_space = text_space(MAX_OBSERVATION_LENGTH, frozenset(extra))

    def draw_problem(self, rng: np.random.Generator) -> Problem:
        return self.problems[int(rng.integers(0, len(self.problems)))]
