"""What makes the testbed cheap: mini-batches of whole prompt groups, distinct held-out problems, one thread for
small models. Each is checked against its plain definition."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import covgym  # noqa: F401  (registers the envs)
from covgym.models.threads import SMALL_MODEL_PARAMETERS, apply_threads, auto_threads, limited_threads
from covgym.train.evaluation import distinct_problem_seeds
from covgym.train.trainer import minibatch_rows


@settings(max_examples=60, deadline=None)
@given(groups=st.integers(1, 12), group_size=st.integers(1, 6), pieces=st.integers(1, 8), seed=st.integers(0, 99))
def test_minibatches_by_group_hold_whole_groups_and_cover_every_row_once(groups, group_size, pieces, seed):
    rows = groups * group_size
    if pieces > rows:
        return
    cuts = minibatch_rows(rows, group_size, pieces, torch.Generator().manual_seed(seed), by_group=True)
    assert len(cuts) == pieces
    every = torch.cat(cuts)
    assert sorted(every.tolist()) == list(range(rows))  # each row exactly once
    for cut in cuts:
        assert cut.tolist() == sorted(cut.tolist())
        if groups >= pieces:  # whole groups: a row's group is in the piece with all its rows
            found = {int(r) // group_size for r in cut}
            assert sorted(cut.tolist()) == sorted(g * group_size + i for g in found for i in range(group_size))


def test_random_rows_remain_available_and_differ_from_group_cuts():
    generator = torch.Generator().manual_seed(0)
    rows = minibatch_rows(128, 8, 4, generator, by_group=False)
    groups_per_piece = [len({int(r) // 8 for r in cut}) for cut in rows]
    assert max(groups_per_piece) > 4  # random rows spread a mini-batch over many groups
    by_group = minibatch_rows(128, 8, 4, torch.Generator().manual_seed(0))
    assert all(len({int(r) // 8 for r in cut}) == 4 for cut in by_group)


def test_evaluation_problems_are_distinct_and_reproducible():
    env = gym.make("covgym/DigitSum-v0", split="test")
    seeds = distinct_problem_seeds(env, 200, seed=3)
    prompts = [env.reset(seed=s)[0] for s in seeds]
    assert len(set(prompts)) == 200
    assert distinct_problem_seeds(env, 200, seed=3) == seeds


def test_asking_for_more_distinct_problems_than_exist_says_how_many_there_are():
    env = gym.make("covgym/DigitSum-v0", split="test", terms=[2], max_banned=1)
    with pytest.raises(ValueError, match=r"gave only \d+ distinct problems"):
        distinct_problem_seeds(env, 500, seed=0, max_draws_per_problem=4, strict=True)
    with pytest.warns(UserWarning, match="graded about"):
        seeds = distinct_problem_seeds(env, 500, seed=0, max_draws_per_problem=4)
    prompts = [env.reset(seed=s)[0] for s in seeds]
    distinct = len(set(prompts))
    assert len(prompts) == 500 and distinct < 500
    counts = {p: prompts.count(p) for p in set(prompts)}
    assert max(counts.values()) - min(counts.values()) <= 1  # repeated as evenly as possible


def test_small_models_get_one_thread_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert auto_threads(1_000_000) == 1
    assert auto_threads(SMALL_MODEL_PARAMETERS) is None  # large models keep torch's default
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert auto_threads(1_000_000) is None


def test_apply_threads_sets_and_the_context_restores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        assert apply_threads(0, torch.nn.Linear(4, 4)) == 1
        assert apply_threads(2) == 2
        with limited_threads(1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(ValueError, match="threads"):
            apply_threads(-1)
    finally:
        torch.set_num_threads(before)
