"""Gymnasium environments with verifiable rewards, registered as ``covgym/<Name>-v0``.

Importing ``covgym`` registers them; then ``gymnasium.make("covgym/Arithmetic-v0")``. Owns the text-env base
classes (single- and multi-turn), the graders (math-verify and sympy, run under a deadline) and the procedurally
generated tasks, the mechanism testbed DigitSum among them. Envs import nothing else from covgym: any trainer,
including another engine's, can drive them.
"""

from __future__ import annotations

import importlib.util

import gymnasium as gym

from covgym.envs.base import MultiTurnEnv, Problem, SingleTurnEnv, TextEnv, Turn, text_space
from covgym.envs.grading import Grade, grade_math

#: covgym packages this package may import: envs stand alone: text in, text and a verifiable reward out (checked by
#: tests/test_layout.py).
MAY_IMPORT: tuple[str, ...] = ()

#: id -> (entry point, one-line description). Add an environment: one module, one line here.
ENVIRONMENTS: dict[str, tuple[str, str]] = {
    "covgym/Arithmetic-v0": ("covgym.envs.arithmetic:ArithmeticEnv",
                             "integer arithmetic (+, -, *), digits/terms knobs"),
    "covgym/Fractions-v0": ("covgym.envs.rational:FractionsEnv", "exact fraction arithmetic, denominator/terms knobs"),
    "covgym/Decimals-v0": ("covgym.envs.rational:DecimalsEnv", "exact decimal arithmetic, places/digits knobs"),
    "covgym/LinearEquations-v0": ("covgym.envs.linear:LinearEquationEnv", "solve ax+b=cx+d (sympy), range knobs"),
    "covgym/LinearSystems-v0": ("covgym.envs.linear:LinearSystemEnv", "2x2 or 3x3 integer linear systems (sympy)"),
    "covgym/Countdown-v0": ("covgym.envs.countdown:CountdownEnv", "reach a target with given numbers and + - * /"),
    "covgym/WordProblems-v0": ("covgym.envs.word_problems:WordProblemEnv", "templated multi-step word problems"),
    "covgym/Dataset-v0": ("covgym.envs.dataset:DatasetEnv", "local JSONL/Parquet problems: GSM8K, MATH, AIME formats"),
    "covgym/Calculator-v0": ("covgym.envs.calculator:CalculatorEnv", "multi-turn tool use: <calc> calls, <answer>"),
    "covgym/Maze-v0": ("covgym.envs.maze:MazeEnv", "multi-turn grid navigation with walls and a step limit"),
    "covgym/DigitSum-v0": ("covgym.envs.digit_sum:DigitSumEnv",
                           "digits that add up to a target: many correct answers (mechanism testbed)"),
    "covgym/DigitSumFeedback-v0": ("covgym.envs.digit_sum:DigitSumFeedbackEnv",
                                   "multi-turn DigitSum with a checker's feedback (mechanism testbed)"),
    "covgym/NumberGuess-v0": ("covgym.envs.guessing:NumberGuessEnv", "multi-turn number guessing, higher/lower"),
}

if importlib.util.find_spec("reasoning_gym") is not None:  # optional extra: listed only when installed
    ENVIRONMENTS["covgym/ReasoningGym-v0"] = ("covgym.envs.reasoning_gym_adapter:ReasoningGymEnv",
                                              "any reasoning-gym task (task=...), partial_credit explicit")


#: Ids gymnasium itself (and packages it loads) registered before covgym: not listed by ``describe``.
_PREEXISTING_IDS = frozenset(gym.registry)


def register_all() -> None:
    """Register every id of ``ENVIRONMENTS`` with gymnasium (its passive env checker stays on)."""
    for env_id, (entry_point, _) in ENVIRONMENTS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point)


def is_registered(env_id: str) -> bool:
    """Whether ``gymnasium.make(env_id)`` knows the id: covgym's own or any registered by user code (plugins)."""
    return env_id in gym.registry


def unknown_environment_message(env_id: str) -> str:
    """One line for an id nobody registered, saying how a user's own environment gets in."""
    return (f"unknown environment {env_id!r}; known: {', '.join(describe())} (or any id registered with "
            f"gymnasium.register in a module loaded with --plugin)")


def split_support_error(env_id: str) -> str | None:
    """None when ``env_id``'s constructor takes ``split=`` (covgym's always do), else a one-line error.

    The trainer makes its envs with ``split="train"`` and evaluation with ``split="test"`` so that held-out
    problems are never trained on; an env without the argument would fail deep inside the trainer instead.
    """
    if env_id in ENVIRONMENTS or env_id not in gym.registry:
        return None
    import inspect

    from gymnasium.envs.registration import load_env_creator

    entry_point = gym.registry[env_id].entry_point
    try:
        creator = load_env_creator(entry_point) if isinstance(entry_point, str) else entry_point
        parameters = inspect.signature(creator).parameters.values()
    except (TypeError, ValueError):  # a signature Python cannot read: let gymnasium.make decide
        return None
    except Exception as error:  # noqa: BLE001 - the user's module failed to import
        return f"environment {env_id!r} cannot be loaded: {type(error).__name__}: {error}"
    if any(p.name == "split" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return (f"environment {env_id!r} does not take split= (train/test problem streams): subclass "
            f"covgym.envs.SingleTurnEnv or MultiTurnEnv, or accept a split argument")


def make_split_env(env_id: str, env_kwargs: dict, split: str, check: bool = True) -> gym.Env:
    """``gymnasium.make(env_id, **env_kwargs, split=split)``; keyword arguments the env does not take are a
    ``ValueError`` in one line (exit code 2 on the command line), not a traceback. ``check=False`` skips
    Gymnasium's passive env checker (for the second and later of many copies of one env)."""
    try:
        return gym.make(env_id, **{**env_kwargs, "split": split}, **({} if check else {"disable_env_checker": True}))
    except TypeError as error:
        message = str(error).split(" was raised from the environment creator")[0]
        raise ValueError(f"env_kwargs {env_kwargs!r} do not fit {env_id}: {message}") from None


def _first_docstring_line(entry_point: object) -> str:
    if callable(entry_point):
        return ((entry_point.__doc__ or "").strip().splitlines() or [""])[0]
    return str(entry_point)


def describe() -> dict[str, str]:
    """covgym's env ids, then ids registered since by user code, each with a one-line description."""
    described = {env_id: description for env_id, (_, description) in sorted(ENVIRONMENTS.items())}
    for env_id in sorted(set(gym.registry) - _PREEXISTING_IDS - set(described)):
        described[env_id] = _first_docstring_line(gym.registry[env_id].entry_point)
    return described


register_all()

__all__ = ["ENVIRONMENTS", "Grade", "MultiTurnEnv", "Problem", "SingleTurnEnv", "TextEnv", "Turn", "describe",
           "grade_math", "is_registered", "make_split_env", "register_all", "split_support_error", "text_space",
           "unknown_environment_message"]
