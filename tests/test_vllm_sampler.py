"""The vLLM generation backend, against a stand-in ``vllm`` module (vLLM itself needs Linux + CUDA).

The stand-in implements the small part of vLLM's API covgym uses (``LLM(...)``, ``LLM.generate`` on token prompts
with one ``SamplingParams`` per request, the engine model's ``load_weights``, ``reset_prefix_cache``) on top of a
``transformers`` model, so the trainer's wiring is exercised for real: the engine must sample from the weights of
the latest update. Where vLLM is installed, the real-engine test below runs too.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from dataclasses import dataclass, field

import pytest
import torch

from covgym.train.config import ModelConfig, OptimConfig, RolloutConfig, TrainConfig


@dataclass
class FakeSamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 16
    stop: list = field(default_factory=list)
    include_stop_str_in_output: bool = False
    seed: int | None = None


class FakeEngineModel:
    def __init__(self, model):
        self.model, self.loads = model, 0

    def load_weights(self, weights):
        state = dict(weights)
        self.model.load_state_dict(state)
        self.loads += 1


class FakeLLM:
    instances: list["FakeLLM"] = []

    def __init__(self, model, dtype="auto", gpu_memory_utilization=0.9, seed=0, enable_prefix_caching=False):
        from transformers import AutoModelForCausalLM

        self.hf = AutoModelForCausalLM.from_pretrained(model)
        self.kwargs = dict(model=model, dtype=dtype, gpu_memory_utilization=gpu_memory_utilization, seed=seed)
        runner = types.SimpleNamespace(model=FakeEngineModel(self.hf))
        self.llm_engine = types.SimpleNamespace(model_executor=types.SimpleNamespace(
            driver_worker=types.SimpleNamespace(model_runner=runner)))
        self.requests: list[tuple[list[int], FakeSamplingParams]] = []
        self.prefix_resets = 0
        FakeLLM.instances.append(self)

    def generate(self, prompts, params, use_tqdm=True):
        outputs = []
        for prompt, p in zip(prompts, params):
            ids = prompt["prompt_token_ids"]
            self.requests.append((ids, p))
            torch.manual_seed(p.seed or 0)
            with torch.no_grad():
                out = self.hf.generate(torch.tensor([ids]), do_sample=True, temperature=p.temperature, top_k=0,
                                       top_p=p.top_p, max_new_tokens=p.max_tokens,
                                       pad_token_id=self.hf.config.pad_token_id)
            completion = types.SimpleNamespace(token_ids=out[0, len(ids):].tolist())
            outputs.append(types.SimpleNamespace(outputs=[completion]))
        return outputs

    def reset_prefix_cache(self):
        self.prefix_resets += 1


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.LLM, module.SamplingParams, module.__version__ = FakeLLM, FakeSamplingParams, "0.0-fake"
    monkeypatch.setitem(sys.modules, "vllm", module)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: types.SimpleNamespace(name="vllm") if name == "vllm" else real_find_spec(name, *a))
    FakeLLM.instances.clear()
    return module


def test_missing_vllm_names_the_extra(monkeypatch, random_model_dir, tmp_path):
    from covgym.train.trainer import Trainer

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real_find_spec(name, *a))
    config = TrainConfig(run_dir=str(tmp_path / "r"), model=ModelConfig(model=str(random_model_dir),
                                                                        generation_backend="vllm"))
    with pytest.raises(ValueError, match=r"needs the vllm package.*pip install 'covgym\[vllm\]'"):
        Trainer(config)


def test_sampling_params_reach_the_engine_and_responses_are_cut(fake_vllm, random_policy):
    from covgym.models.policy import SamplingParams
    from covgym.models.vllm_sampler import VLLMSampler

    random_policy.sampler = VLLMSampler(str(random_policy.source_path), dtype="float32", gpu_memory_utilization=0.2)
    prompts = [random_policy.encode_prompt("1+2="), random_policy.encode_prompt("30-4=")]
    responses = random_policy.generate(prompts, SamplingParams(top_p=0.9, max_new_tokens=5), stop_strings=("\n",),
                                       seed=7)
    engine = FakeLLM.instances[-1]
    assert engine.kwargs["gpu_memory_utilization"] == 0.2
    assert [ids for ids, _ in engine.requests] == prompts
    params = [p for _, p in engine.requests]
    assert {(p.temperature, p.top_p, p.max_tokens, tuple(p.stop), p.include_stop_str_in_output) for p in params} \
        == {(random_policy.temperature, 0.9, 5, ("\n",), True)}
    assert [p.seed for p in params] == [7, 8]  # one distinct seed per request
    eos = random_policy.eos_token_id
    assert all(len(r) <= 5 and (eos not in r or r.index(eos) == len(r) - 1) for r in responses)


def test_unknown_engine_layout_is_a_clear_error(fake_vllm, random_policy):
    from covgym.models.vllm_sampler import VLLMSampler

    sampler = VLLMSampler(str(random_policy.source_path))
    sampler.llm.llm_engine = types.SimpleNamespace()
    with pytest.raises(RuntimeError, match="cannot reach the model inside vLLM 0.0-fake"):
        sampler.load_weights(random_policy.model.state_dict().items())


@pytest.mark.slow
def test_the_engine_samples_from_the_latest_weights(fake_vllm, random_model_dir, tmp_path):
    from covgym.train.trainer import Trainer

    config = TrainConfig(algo="entropy_bonus", algo_params={"entropy_coeff": 1.0}, steps=2, eval_problems=2,
                         eval_samples=1, run_dir=str(tmp_path / "run"), progress=False, tensorboard=False,
                         model=ModelConfig(model=str(random_model_dir), generation_backend="vllm"),
                         rollout=RolloutConfig(prompts_per_step=2, group_size=2, max_new_tokens=4),
                         optim=OptimConfig(lr=1e-2))
    trainer = Trainer(config)
    trainer.train()
    engine = FakeLLM.instances[-1]
    runner_model = engine.llm_engine.model_executor.driver_worker.model_runner.model
    assert runner_model.loads == 2  # before step 2's rollout and before the final evaluation
    assert engine.prefix_resets == 2
    for name, value in trainer.policy.model.state_dict().items():
        assert torch.equal(engine.hf.state_dict()[name], value), f"engine has stale {name}"
    assert len(engine.requests) == 2 * 4 + 2 * 2  # two rollouts of 4 sequences; 2 problems before and after


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None or not torch.cuda.is_available(),
                    reason="vLLM and a CUDA GPU are needed for the real engine")
def test_real_vllm_engine_samples_and_takes_weights(random_model_dir):  # pragma: no cover - GPU machines only
    from covgym.models.policy import Policy, SamplingParams
    from covgym.models.vllm_sampler import VLLMSampler

    policy = Policy.from_pretrained(str(random_model_dir), device="cuda", show_progress=False)
    policy.sampler = VLLMSampler(str(random_model_dir), dtype="float32", gpu_memory_utilization=0.2)
    responses = policy.generate([policy.encode_prompt("1+2=")] * 2, SamplingParams(max_new_tokens=4), seed=0)
    assert len(responses) == 2 and all(1 <= len(r) <= 4 for r in responses)
    policy.sampler.load_weights(policy.model.state_dict().items())
