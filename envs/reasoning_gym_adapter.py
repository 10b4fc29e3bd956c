"""reasoning-gym task families as covgym envs (optional: needs ``pip install reasoning-gym``)."""

from __future__ import annotations

import re

import numpy as np

from covgym.envs.base import MAX_OBSERVATION_LENGTH, Problem, SingleTurnEnv, text_space
from covgym.envs.grading import MAX_RESPONSE_CHARS, Grade, extract_boxed

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def extract_tagged_answer(response: str) -> str:
    """The last ``<answer>`` block, else the last ``\\boxed{}``, else the whole response, stripped."""
    tagged = _ANSWER.findall(response)
    if tagged:
        return tagged[-1].strip()
    boxed = extract_boxed(response)
    return (boxed if boxed is not None else response).strip()


class ReasoningGymEnv(SingleTurnEnv):
    """One reasoning-gym task family (``task``, e.g. ``"leg_counting"``), scored by its own verifier.

    ## Description
    ``size`` problems are generated once by ``reasoning_gym.create_dataset(task, size=size, seed=dataset_seed)``
    (``task_config`` is passed on as keyword arguments); ``reset`` picks one with ``self.np_random``.
    reasoning-gym's scorers give partial credit (some to answers that merely contain the gold string, for
    instance), so the choice is explicit here: ``partial_credit=False`` (default) rewards only a full score,
    ``True`` passes the score through.

    ## Observation
    The task's question, ``prompt_suffix`` (default ``"\\nAnswer:"``) and the optional ``instruction``.

    ## Action
    Free text; the answer is the last ``<answer>...</answer>`` block, else the last ``\\boxed{}``, else the
    whole response.

    ## Rewards
    ``partial_credit=False``: 1 for a full score, else 0. ``True``: the task's score in ``[0, 1]``. A scorer
    that raises counts as 0 (reason in ``info``).

    ## Episode End
    Terminates after one step (``terminated=True, truncated=False``).

    ## Version History
    - v0: first version.
    """

    def __init__(self, task: str = "leg_counting", size: int = 1000, dataset_seed: int = 0,
                 partial_credit: bool = False, task_config: dict | None = None, prompt_suffix: str = "\nAnswer:",
                 split: str = "all", **kwargs) -> None:
        super().__init__(split=split, **kwargs)
        try:
            import reasoning_gym
        except ImportError as error:
            raise ValueError("task: reasoning-gym envs need `pip install reasoning-gym`") from error
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        try:
            self.dataset = reasoning_gym.create_dataset(task, size=size, seed=dataset_seed, **(task_config or {}))
        except Exception as error:  # an unknown task or bad config: one clear line
            raise ValueError(f"task: reasoning-gym cannot create {task!r}: {error}") from error
        self.task, self.partial_credit = task, partial_credit
        self.problems: list[Problem] = []
        for index in range(size):
            entry = self.dataset[index]
            prompt = f"{entry['question']}{prompt_suffix}"
            if len(prompt) + len(self.instruction) <= MAX_OBSERVATION_LENGTH and self.in_split(prompt):
                self.problems.append(Problem(prompt=prompt, answer=str(entry["answer"]), metadata={"index": index}))
        if not self.problems:
            raise ValueError(f"size: no {task!r} problems fall in split {split!r}")
        extra = {char for problem in self.problems for char in problem.prompt + self.instruction}
        self.observation_space = text_space(MAX_OBSERVATION_LENGTH, frozenset(extra))
        self.score = 0.0

    def draw_problem(self, rng: np.random.Generator) -> Problem:
        return self.problems[int(rng.integers(0, len(self.problems)))]

    def oracle_action(self) -> str:
        return f"<answer>{self.problem.answer}</answer>"  # type: ignore[union-attr]

    def grade(self, response: str, problem: Problem) -> Grade:
        self.score = 0.0
        if len(response) > MAX_RESPONSE_CHARS:
            return Grade(False, None, f"response longer than {MAX_RESPONSE_CHARS} characters")
        answer = extract_tagged_answer(response)
        try:
            score = float(self.dataset.score_answer(answer=answer, entry=self.dataset[problem.metadata["index"]]))
        except Exception as error:  # a third-party scorer must not take training down
            return Grade(False, answer, f"reasoning-gym scorer raised {type(error).__name__}")
        self.score = min(max(score, 0.0), 1.0) if score == score else 0.0
        return Grade(self.score >= 1.0, answer, f"reasoning-gym score {self.score:g}", bool(_ANSWER.search(response)))

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        observation, reward, terminated, truncated, info = super().step(action)
        if self.partial_credit:
            reward = self.score
        info["score"] = self.score
        return observation, reward, terminated, truncated, info
