"""The gymnasium contract for every registered env: check_env, spaces, episode ends, determinism, splits,
oracle reaches the maximum and degenerate policies do not."""

from __future__ import annotations

import statistics
import warnings

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import covgym
from covgym.envs import ENVIRONMENTS, MultiTurnEnv, SingleTurnEnv, describe
from covgym.envs.base import split_of
from covgym.envs.dataset import DATA_DIR
from covgym.envs.testing import always, echo, oracle, run_episode

ENV_IDS = sorted(ENVIRONMENTS)
#: The dataset env over each shipped fixture, on top of the registered defaults.
DATASET_VARIANTS = [("covgym/Dataset-v0", {"path": DATA_DIR / "math_sample.jsonl", "answer_format": "math"}),
                    ("covgym/Dataset-v0", {"path": DATA_DIR / "aime_sample.jsonl", "answer_format": "aime"})]
CASES = [(env_id, {}) for env_id in ENV_IDS] + DATASET_VARIANTS
CASE_IDS = [env_id.split("/")[1] + ("-" + kwargs["answer_format"] if kwargs else "") for env_id, kwargs in CASES]


def make(env_id: str, **kwargs) -> gym.Env:
    return gym.make(env_id, **kwargs)


def test_every_module_entry_is_registered_and_described():
    assert covgym.envs is not None
    assert set(describe()) == set(ENV_IDS)
    for env_id in ENV_IDS:
        assert env_id in gym.registry
        assert env_id.startswith("covgym/") and env_id.endswith("-v0")


@pytest.mark.parametrize("env_id,kwargs", CASES, ids=CASE_IDS)
def test_check_env_without_warnings(env_id, kwargs):
    env = make(env_id, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_documented_like_gymnasium(env_id):
    doc = type(make(env_id).unwrapped).__doc__ or ""
    for section in ("## Description", "## Observation", "## Action", "## Rewards", "## Episode End",
                    "## Version History"):
        assert section in doc, f"{env_id} docstring lacks {section}"


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_random_actions_get_rewards_in_range(env_id):
    env = make(env_id)
    base = env.unwrapped
    low, high = base.reward_range
    env.action_space.seed(0)
    for seed in range(15):
        observation, _ = env.reset(seed=seed)
        assert env.observation_space.contains(observation)
        total, done = 0.0, False
        for _ in range(base.max_turns):
            observation, reward, terminated, truncated, info = env.step(env.action_space.sample())
            assert env.observation_space.contains(observation)
            total += reward
            if isinstance(base, SingleTurnEnv):
                assert (terminated, truncated) == (True, False)
            if terminated or truncated:
                assert isinstance(info["correct"], bool) and "answer" in info
                done = True
                break
        assert done, "an episode must end within max_turns steps"
        assert low <= total <= high


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_stepping_before_reset_or_after_end_is_an_error(env_id):
    base = make(env_id).unwrapped
    with pytest.raises(RuntimeError, match="reset"):
        base.step("1")
    base.reset(seed=0)
    for _ in range(base.max_turns):
        *_, terminated, truncated, _ = base.step("")
        if terminated or truncated:
            break
    if isinstance(base, MultiTurnEnv):
        with pytest.raises(RuntimeError, match="reset"):
            base.step("1")


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_same_seed_same_problem_and_same_episode(env_id):
    first, second = make(env_id), make(env_id)
    actions = ["\\boxed{3}", "R\n", "<calc>2*3</calc>", "50\n", "D"]

    def play(env: gym.Env, seed: int) -> list:
        record = list(env.reset(seed=seed))
        for action in actions[: env.unwrapped.max_turns]:
            step = env.step(action)
            record.append(step)
            if step[2] or step[3]:
                break
        return record

    for seed in range(8):
        assert play(first, seed) == play(second, seed)
    prompts = {repr(first.reset(seed=seed)) for seed in range(20)}
    assert len(prompts) >= 8, "different seeds should give different problems"


@pytest.mark.parametrize("env_id", [env_id for env_id in ENV_IDS if env_id != "covgym/Dataset-v0"])
def test_train_and_test_streams_are_disjoint(env_id):
    train, test = make(env_id, split="train").unwrapped, make(env_id, split="test").unwrapped
    train_keys = set()
    for seed in range(120):
        train.reset(seed=seed)
        train_keys.add(train.split_key(train.problem))
    for seed in range(120):
        test.reset(seed=seed)
        key = test.split_key(test.problem)
        assert key not in train_keys
        assert split_of(key, test.test_fraction) == "test"


def test_dataset_splits_by_question_when_asked():
    train = make("covgym/Dataset-v0", split="train", test_fraction=0.5).unwrapped
    test = make("covgym/Dataset-v0", split="test", test_fraction=0.5).unwrapped
    everything = make("covgym/Dataset-v0").unwrapped
    train_prompts = {problem.prompt for problem in train.problems}
    test_prompts = {problem.prompt for problem in test.problems}
    assert not train_prompts & test_prompts
    assert train_prompts | test_prompts == {problem.prompt for problem in everything.problems}


@pytest.mark.parametrize("env_id,kwargs", CASES, ids=CASE_IDS)
def test_oracle_scores_the_maximum_for_many_seeds(env_id, kwargs):
    env = make(env_id, **kwargs)
    best = env.unwrapped.reward_range[1]
    for seed in range(40):
        episode = run_episode(env, oracle, seed)
        assert episode.terminated and not episode.truncated, (seed, episode.info)
        assert episode.info["correct"] is True, (seed, episode.info)
        assert episode.total_reward == pytest.approx(best)
        assert episode.info["answer"] == env.unwrapped.problem.answer


DEGENERATE = {"empty": always(""), "echo": echo, "same move U": always("U\n"), "same move R": always("R\n"),
              "same guess": always("50\n"), "boxed zero": always("\\boxed{0}"), "one": always("1")}


@pytest.mark.parametrize("env_id,kwargs", CASES, ids=CASE_IDS)
def test_degenerate_policies_do_not_score(env_id, kwargs):
    env = make(env_id, **kwargs)
    best = env.unwrapped.reward_range[1]
    for name, policy in DEGENERATE.items():
        rewards = [run_episode(env, policy, seed).total_reward for seed in range(40)]
        assert statistics.mean(rewards) <= 0.1 * best, f"{name} scores {statistics.mean(rewards)}"


def test_the_same_move_never_solves_a_maze():
    env = make("covgym/Maze-v0")
    for move in "UDLR":
        assert all(run_episode(env, always(move), seed).total_reward == 0 for seed in range(60))


def test_the_worked_example_in_the_docs_runs(tmp_path):
    """The "add an environment" guide's code, run as written."""
    from pathlib import Path

    guide = Path(__file__).resolve().parents[1] / "docs" / "environments.md"
    if not guide.exists():
        pytest.skip("docs not present")
    blocks = guide.read_text().split("```python\n")
    module = next(block for block in blocks if block.startswith("# my_envs/gcd.py")).split("```")[0]
    check = next(block for block in blocks if "check_text_env(env)" in block).split("```")[0]
    namespace: dict = {"__name__": "gcd_example"}
    if "my/GCD-v0" in gym.registry:
        del gym.registry["my/GCD-v0"]
    exec(compile(module + "\nimport gymnasium as gym\n" + check, str(guide), "exec"), namespace)
    env = gym.make("my/GCD-v0", digits=1)
    assert run_episode(env, oracle, 0).total_reward == 1.0
