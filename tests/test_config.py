"""Every invalid config is rejected before any work starts, with a message naming the field."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from covgym.train.config import (ConfigError, EnvConfig, ModelConfig, OptimConfig, RolloutConfig, TrainConfig,
                                 from_dict, load_file, validate)

# field -> (section or None, strategy of invalid values)
INVALID = {
    "steps": (None, st.integers(max_value=0)),
    "save_every": (None, st.integers(max_value=-1)),
    "keep_checkpoints": (None, st.integers(max_value=0)),
    "eval_every": (None, st.integers(max_value=-1)),
    "eval_problems": (None, st.integers(max_value=-2)),
    "eval_samples": (None, st.integers(max_value=0)),
    "prompts_per_step": ("rollout", st.integers(max_value=-1)),
    "group_size": ("rollout", st.integers(max_value=-1)),
    "max_new_tokens": ("rollout", st.integers(max_value=0)),
    "temperature": ("rollout", st.floats(max_value=0.0, allow_nan=False)),
    "top_p": ("rollout", st.one_of(st.floats(max_value=0.0, allow_nan=False), st.floats(min_value=1.0001, allow_nan=False))),
    "max_turns": ("rollout", st.integers(max_value=0)),
    "lr": ("optim", st.floats(max_value=-1e-12, allow_nan=False)),
    "grad_clip": ("optim", st.floats(max_value=-1e-12, allow_nan=False)),
    "ppo_epochs": ("optim", st.integers(max_value=0)),
    "mini_batches": ("optim", st.integers(max_value=-1)),
    "dtype": ("model", st.text(min_size=1).filter(lambda s: s not in ("float32", "bfloat16", "float16"))),
    "chat_template": ("model", st.text().filter(lambda s: s not in ("auto", "on", "off"))),
    "algo": (None, st.text(min_size=1, max_size=12).filter(lambda s: s not in __import__("covgym.algorithms").algorithms.names())),
    "env": ("env", st.text(min_size=1, max_size=20).filter(lambda s: not s.startswith("covgym/"))),
}
SECTIONS = {"rollout": RolloutConfig, "optim": OptimConfig, "model": ModelConfig, "env": EnvConfig}


def with_value(field: str, value) -> TrainConfig:
    section, _ = INVALID[field]
    config = TrainConfig()
    if section is None:
        return config.replace(**{field: value})
    return config.replace(**{section: dataclasses.replace(getattr(config, section), **{field: value})})


@settings(deadline=None, max_examples=60)
@given(data=st.data(), field=st.sampled_from(sorted(INVALID)))
def test_each_invalid_field_is_rejected_by_name(data, field):
    value = data.draw(INVALID[field][1])
    with pytest.raises(ConfigError) as error:
        validate(with_value(field, value))
    assert str(error.value).startswith(f"{field}:")


def test_the_default_config_is_valid():
    validate(TrainConfig())


@pytest.mark.parametrize("params, field", [
    ({"clip_ratio": -0.1}, "clip_ratio"),
    ({"loss_agg_mode": "mean"}, "loss_agg_mode"),
    ({"no_such_parameter": 1}, "no_such_parameter"),
    ({"kl_loss_type": "k9"}, "kl_loss_type"),
])
def test_bad_algorithm_hyperparameters_are_rejected_by_name(params, field):
    with pytest.raises(ConfigError, match=field):
        validate(TrainConfig(algo_params=params))


def test_inconsistent_combinations_are_rejected():
    with pytest.raises(ConfigError, match="group_size"):
        validate(TrainConfig(rollout=RolloutConfig(group_size=1)))
    with pytest.raises(ConfigError, match="mini_batches"):
        validate(TrainConfig(rollout=RolloutConfig(prompts_per_step=1, group_size=2),
                             optim=OptimConfig(mini_batches=3)))


def test_unknown_keys_and_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key"):
        from_dict({"stepz": 3})
    with pytest.raises(ConfigError, match="unknown key\\(s\\) in config section 'rollout': group"):
        from_dict({"rollout": {"group": 3}})
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [1,\n")
    with pytest.raises(ConfigError, match="is not valid yaml"):
        load_file(bad)


def test_yaml_round_trip(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("algo: grpo\nsteps: 7\nrollout:\n  group_size: 4\noptim:\n  lr: 0.0001\n")
    config = from_dict(load_file(path))
    assert config.steps == 7 and config.rollout.group_size == 4 and config.optim.lr == 1e-4
    validate(config)


def test_auto_sizes_follow_the_model_and_explicit_values_win():
    from covgym.train.trainer import resolve_config

    def sizes(config: TrainConfig) -> tuple:
        resolved = resolve_config(config)
        validate(resolved)
        return (resolved.rollout.prompts_per_step, resolved.rollout.group_size, resolved.eval_problems,
                resolved.optim.lr)

    from covgym.train.trainer import AUTO_LR

    assert sizes(TrainConfig(run_dir="r")) == (16, 8, 64, AUTO_LR["tiny"])
    assert resolve_config(TrainConfig(run_dir="r", algo="grpo")).optim.mini_batches == \
        resolve_config(TrainConfig(run_dir="r", algo="kl_cov")).optim.mini_batches  # equal update budgets
    pretrained = ModelConfig(model="HuggingFaceTB/SmolLM2-135M-Instruct")
    assert sizes(TrainConfig(run_dir="r", model=pretrained)) == (8, 4, 16, 1e-6)
    explicit = TrainConfig(run_dir="r", model=pretrained, eval_problems=0, optim=OptimConfig(lr=1e-5),
                           rollout=RolloutConfig(prompts_per_step=2, group_size=3))
    assert sizes(explicit) == (2, 3, 0, 1e-5)


def test_mini_batches_are_checked_against_the_resolved_batch():
    from covgym.train.trainer import resolve_config

    config = TrainConfig(run_dir="r", model=ModelConfig(model="a/b"), optim=OptimConfig(mini_batches=40))
    validate(config)  # the batch is still 'auto' here
    with pytest.raises(ConfigError, match="40 mini-batches cannot be cut from a rollout of 32 sequences"):
        validate(resolve_config(config))


def test_seq_mean_token_sum_norm_gets_a_constant_divisor():
    """Dr. GRPO divides by a constant (the response budget), never by a batch's padded width."""
    from covgym.train.trainer import resolve_config

    rollout = RolloutConfig(max_new_tokens=24)
    dr = resolve_config(TrainConfig(run_dir="r", algo="dr_grpo", rollout=rollout))
    assert dr.algo_params["loss_scale_factor"] == 24.0
    explicit = resolve_config(TrainConfig(run_dir="r", algo="dr_grpo", rollout=rollout,
                                          algo_params={"loss_scale_factor": 100.0}))
    assert explicit.algo_params["loss_scale_factor"] == 100.0
    assert "loss_scale_factor" not in resolve_config(TrainConfig(run_dir="r", algo="grpo")).algo_params
    token_sum = resolve_config(TrainConfig(run_dir="r", algo="grpo", rollout=rollout,
                                           algo_params={"loss_agg_mode": "seq-mean-token-sum-norm"}))
    assert token_sum.algo_params["loss_scale_factor"] == 24.0
