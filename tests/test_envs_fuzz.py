"""Every env's ``step`` on arbitrary and hostile text: no exception, bounded time, reward in range, nothing run."""

from __future__ import annotations

import time

import gymnasium as gym
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import covgym  # noqa: F401  (registers the envs)
from covgym.envs import ENVIRONMENTS, verify_pool
from covgym.envs.dataset import DATA_DIR

ENV_IDS = sorted(ENVIRONMENTS)
TIMEOUT_S = 1.0
#: Per step: the grader's timeout, plus possibly starting a math-verify worker after a kill.
STEP_BOUND_S = TIMEOUT_S + 8.0


@pytest.fixture(autouse=True)
def short_verify_timeout(monkeypatch):
    monkeypatch.setattr(verify_pool, "DEFAULT_TIMEOUT_S", TIMEOUT_S)


def hostile_corpus(marker: str) -> list[str]:
    """Model outputs that would create ``marker`` if anything evaluated them, and outputs built to hang or
    exhaust a naive grader or tool."""
    touch = f"__import__('os').system('touch {marker}')"
    write = f"open('{marker}', 'w').write('x')"
    code = [touch, write, f"exec(\"{write}\")", f"eval(\"{touch}\")", f"(lambda: {touch})()",
            f"[c for c in ().__class__.__base__.__subclasses__()]; {write}", f"import os; os.system('touch {marker}')"]
    wrapped = [wrap.format(text) for text in code for wrap in
               ("\\boxed{{{}}}", "<calc>{}</calc>", "<answer>{}</answer>", "{}\n", "x = {0}, y = {0}")]
    heavy = ["\\boxed{9^{9^{9^9}}}", "<calc>9^9^9^9</calc>", "<calc>9**9**9**9</calc>", "<calc>10^64^64</calc>",
             "<calc>" + "(" * 5000 + "1" + ")" * 5000 + "</calc>", "<calc>" + "9" * 10_000 + "</calc>",
             "<calc>1/0</calc>", "<calc>2^-9999</calc>", "\\boxed{" + "\\frac{" * 300 + "1" + "}{2}" * 300 + "}",
             "\\boxed{" + "{" * 10_000, "<answer>" * 2000, "<calc>" * 2000 + "</calc>" * 2000,
             "\\boxed{10^{10^{10^{10}}}!}", "\\boxed{\\def\\x{\\x}\\x}", "\\boxed{" + "9" * 5000 + "}",
             "9" * 100_000, "R" * 100_000, "\x00" * 1000, "\ud800\udfff", "𝟙𝟚𝟛 \u202e ٣", "", " ", "\n" * 500]
    return code + wrapped + heavy


def cases() -> list[tuple[str, dict]]:
    extra = [("covgym/Dataset-v0", {"path": DATA_DIR / "math_sample.jsonl", "answer_format": "math"})]
    return [(env_id, {}) for env_id in ENV_IDS] + extra


@pytest.mark.parametrize("env_id,kwargs", cases(), ids=[c[0].split("/")[1] + str(i) for i, c in enumerate(cases())])
def test_hostile_corpus_through_every_env(env_id, kwargs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative marker: no digits of a temporary path can make an answer right
    marker = tmp_path / "executed"
    env = gym.make(env_id, **kwargs)
    low, high = env.unwrapped.reward_range
    for index, action in enumerate(hostile_corpus(marker.name)):
        env.reset(seed=index)
        total, done, turns = 0.0, False, 0
        while not done:
            start = time.perf_counter()
            observation, reward, terminated, truncated, info = env.step(action)
            elapsed = time.perf_counter() - start
            assert elapsed < STEP_BOUND_S, f"{env_id}: {action[:60]!r} took {elapsed:.1f}s"
            assert env.observation_space.contains(observation), f"{env_id}: observation outside the space"
            total, done, turns = total + reward, terminated or truncated, turns + 1
            assert turns <= env.unwrapped.max_turns
        assert low <= total <= high
        assert info["correct"] is False
    assert not marker.exists(), "a model output was executed"


@pytest.mark.parametrize("env_id", ENV_IDS)
@given(data=st.data())
@settings(deadline=None, max_examples=20, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_step_is_total_on_arbitrary_text(env_id, data):
    env = gym.make(env_id)
    low, high = env.unwrapped.reward_range
    seed = data.draw(st.integers(0, 2**31 - 1))
    env.reset(seed=seed)
    texts = st.text(max_size=200) | st.binary(max_size=200).map(lambda raw: raw.decode("latin-1")) | \
        st.sampled_from(["\\boxed{", "<calc>", "</calc>", "<answer>", "U", "50", "x=", "(", "^", "9" * 40]).flatmap(
            lambda piece: st.lists(st.sampled_from([piece, "1", "+", "}", " ", "</answer>", "\n"]), max_size=30)
            .map("".join))
    total, done = 0.0, False
    while not done:
        action = data.draw(texts)
        start = time.perf_counter()
        observation, reward, terminated, truncated, info = env.step(action)
        assert time.perf_counter() - start < STEP_BOUND_S
        assert env.observation_space.contains(observation)
        total, done = total + reward, terminated or truncated
    assert low <= total <= high
    assert isinstance(info["correct"], bool)
