"""TRL adapter: a covgym env as a prompt dataset and a reward function for TRL's GRPOTrainer.

The end-to-end test trains a few GRPO steps through TRL on the built-in tiny model; it is skipped (with the
install command) where TRL is not installed. The rest needs only ``datasets`` for the dataset tests.
"""

from __future__ import annotations

import importlib.util
import re
import sys

import gymnasium as gym
import pytest
import torch

from covgym.adapters.common import completion_text
from covgym.adapters.trl import EnvReward, prompt_dataset, reward_function

HAS_DATASETS = importlib.util.find_spec("datasets") is not None
HAS_TRL = importlib.util.find_spec("trl") is not None
needs_datasets = pytest.mark.skipif(not HAS_DATASETS, reason="datasets not installed: pip install 'covgym[trl]'")


def arithmetic_value(prompt: str) -> int:
    """Reference: the value of ``Compute: 7+8-2`` (``+``/``-`` only, the env's default), from the prompt text."""
    expression = re.search(r"Compute: ([0-9+\-]+)", prompt).group(1)
    terms = re.findall(r"[+-]?\d+", expression)
    return sum(int(term) for term in terms)


@needs_datasets
def test_prompt_dataset_is_the_envs_problems_and_reproducible():
    data = prompt_dataset("covgym/Arithmetic-v0", num_prompts=6, seed=4)
    assert data.column_names == ["prompt", "answer", "env_seed"]
    assert data.to_list() == prompt_dataset("covgym/Arithmetic-v0", num_prompts=6, seed=4).to_list()
    assert data.to_list() != prompt_dataset("covgym/Arithmetic-v0", num_prompts=6, seed=5).to_list()
    env = gym.make("covgym/Arithmetic-v0", split="train").unwrapped
    for row in data:
        prompt, info = env.reset(seed=row["env_seed"])
        assert row["prompt"] == prompt and row["answer"] == str(info["answer"])
        assert int(row["answer"]) == arithmetic_value(row["prompt"])
    chat = prompt_dataset("covgym/Arithmetic-v0", num_prompts=2, seed=4, conversational=True)
    assert chat[0]["prompt"] == [{"role": "user", "content": data[0]["prompt"]}]


@needs_datasets
def test_reward_grades_plain_and_conversational_completions():
    data = prompt_dataset("covgym/Arithmetic-v0", num_prompts=4, seed=1)
    reward = reward_function("covgym/Arithmetic-v0")
    right = [f" {answer}" for answer in data["answer"]]
    wrong = [f" {int(answer) + 1}" for answer in data["answer"]]
    chat = [[{"role": "assistant", "content": f"so \\boxed{{{answer}}}"}] for answer in data["answer"]]
    columns = {"env_seed": data["env_seed"], "answer": data["answer"]}
    assert reward(data["prompt"], right, **columns) == [1.0] * 4
    assert reward(data["prompt"], wrong, **columns) == [0.0] * 4
    assert reward(data["prompt"], chat, **columns, trainer_state=None) == [1.0] * 4  # TRL's extra kwargs ignored
    assert reward(data["prompt"], right, answer=data["answer"]) == [1.0] * 4  # answer column alone
    assert reward.__name__ == "covgym_arithmetic"


@needs_datasets
def test_reward_uses_the_envs_own_rule_and_problem():
    kwargs = {"format_reward": 0.25}
    data = prompt_dataset("covgym/Countdown-v0", num_prompts=3, seed=2, env_kwargs=kwargs)
    reward = reward_function("covgym/Countdown-v0", env_kwargs=kwargs)
    env = gym.make("covgym/Countdown-v0", split="train").unwrapped
    solutions = []
    for env_seed in data["env_seed"]:
        env.reset(seed=env_seed)
        solutions.append(env.oracle_action())
    assert reward(data["prompt"], solutions, env_seed=data["env_seed"]) == [1.0] * 3
    assert reward(data["prompt"], ["0 * 0"] * 3, env_seed=data["env_seed"]) == [0.25] * 3  # parsed, wrong
    with pytest.raises(ValueError, match="env_seed"):  # Countdown's grader needs the problem, not just the answer
        reward(data["prompt"], solutions, answer=data["answer"])


@needs_datasets
def test_reward_refuses_inconsistent_inputs():
    data = prompt_dataset("covgym/Arithmetic-v0", num_prompts=2, seed=3)
    with pytest.raises(ValueError, match="2 entries for 3 completions"):
        reward_function()(["p"] * 3, ["1"] * 3, env_seed=data["env_seed"])
    with pytest.raises(ValueError, match="'env_seed' or an 'answer' column"):
        reward_function()(["p"], ["1"])
    with pytest.raises(ValueError, match="same env_id and env_kwargs"):
        reward_function(env_kwargs={"num_terms": 5})(data["prompt"], ["1", "2"], env_seed=data["env_seed"],
                                                      answer=data["answer"])
    with pytest.raises(ValueError, match="SingleTurnEnv"):
        EnvReward("covgym/Calculator-v0")


def test_completion_text_reads_every_completion_shape():
    assert completion_text("plain") == "plain"
    assert completion_text([{"role": "assistant", "content": "a"}, {"role": "tool", "content": "x"},
                            {"role": "assistant", "content": [{"type": "text", "text": "b"}]}]) == "ab"
    assert completion_text({"role": "assistant", "content": "c"}) == "c"
    assert completion_text(None) == "" and completion_text([1, 2]) == ""


def test_missing_datasets_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ImportError, match=r"pip install 'covgym\[trl\]'"):
        prompt_dataset(num_prompts=1)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.skipif(not HAS_TRL, reason="TRL not installed (optional extra): pip install 'covgym[trl]'")
def test_grpo_trainer_trains_through_the_adapter(tiny_model_path, tmp_path):
    from trl import GRPOConfig, GRPOTrainer

    reward = reward_function("covgym/Arithmetic-v0")
    calls: list[tuple[list[str], list[str], list[float]]] = []

    def recorded(prompts, completions, **columns):
        rewards = reward(prompts, completions, **columns)
        calls.append((list(prompts), [completion_text(c) for c in completions], rewards))
        return rewards

    recorded.__name__ = reward.__name__
    steps = 3
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=4,
                      max_completion_length=6, max_steps=steps, learning_rate=1e-3, logging_steps=1,
                      report_to="none", save_strategy="no", use_cpu=True, bf16=False, seed=0, disable_tqdm=True)
    trainer = GRPOTrainer(model=str(tiny_model_path), reward_funcs=recorded, args=args,
                          train_dataset=prompt_dataset("covgym/Arithmetic-v0", num_prompts=16, seed=0))
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()

    assert calls, "TRL never called the reward function"
    for prompts, texts, rewards in calls:  # every reward agrees with a reference computed from the prompt
        for prompt, text, value in zip(prompts, texts, rewards):
            numbers = re.findall(r"-?\d+", text)
            expected = 1.0 if numbers and int(numbers[-1]) == arithmetic_value(prompt) else 0.0
            assert value == expected, (prompt, text, value)
    logged = [entry[f"rewards/{reward.__name__}/mean"] for entry in trainer.state.log_history
              if f"rewards/{reward.__name__}/mean" in entry]
    assert len(logged) == steps
    recorded_mean = sum(sum(r) for _, _, r in calls) / sum(len(r) for _, _, r in calls)
    assert sum(logged) / len(logged) == pytest.approx(recorded_mean, abs=1e-6)
    assert any(0.0 < sum(r) < len(r) for _, _, r in calls), "no group with a reward signal: nothing to learn from"
    assert any(not torch.equal(before[name], p.detach()) for name, p in trainer.model.named_parameters())
