"""Config files: section keys are accepted flat (``lr:`` at the top) or nested, and a misplaced key says where it
belongs."""

from __future__ import annotations

import pytest

from covgym.cli import build_parser, config_from_args, main
from covgym.train.config import ConfigError, from_dict, nest_flat_keys


def from_cli(tmp_path, text: str, *flags: str):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return config_from_args(build_parser().parse_args(["train", "--config", str(path), *flags]))


def test_flat_and_nested_files_give_the_same_config(tmp_path):
    flat = from_cli(tmp_path, "algo: rloo\nlr: 0.0005\nmodel: tiny\ndevice: cpu\ngroup_size: 4\nenv: covgym/Countdown-v0\n")
    nested = from_cli(tmp_path, "algo: rloo\noptim: {lr: 0.0005}\nmodel: {model: tiny, device: cpu}\n"
                                "rollout: {group_size: 4}\nenv: {env: covgym/Countdown-v0}\n")
    assert flat == nested
    assert flat.optim.lr == 0.0005 and flat.model.device == "cpu" and flat.env.env == "covgym/Countdown-v0"


def test_a_flat_mapping_valued_key_is_nested_too():
    config = from_dict({"env": "covgym/Countdown-v0", "env_kwargs": {"split": "test"}})
    assert config.env.env == "covgym/Countdown-v0" and config.env.env_kwargs == {"split": "test"}


def test_flags_override_flat_keys_of_the_file(tmp_path):
    assert from_cli(tmp_path, "lr: 0.5\nmini_batches: 2\n", "--lr", "0.1").optim.lr == 0.1


def test_a_key_given_flat_and_nested_must_agree():
    assert nest_flat_keys({"lr": 0.1, "optim": {"lr": 0.1, "ppo_epochs": 2}}) == {"optim": {"lr": 0.1,
                                                                                           "ppo_epochs": 2}}
    with pytest.raises(ConfigError, match="lr is given twice"):
        from_dict({"lr": 0.1, "optim": {"lr": 0.2}})


@pytest.mark.parametrize("data, hint", [
    ({"rollout": {"lr": 1e-4}}, "lr (it belongs under optim"),
    ({"optim": {"steps": 3}}, "steps (it belongs at the top level)"),
    ({"clip_ratio": 0.3}, "put it under algo_params"),
    ({"optim": {"kl_cov_ratio": 0.3}}, "hyperparameter of kl_cov"),
    ({"stepz": 3}, "did you mean 'steps'"),
])
def test_a_misplaced_key_says_where_it_belongs(data, hint):
    with pytest.raises(ConfigError) as error:
        from_dict(data)
    assert hint in str(error.value)
    assert "\n" not in str(error.value)


def test_the_cli_reports_it_in_one_line(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("rollout:\n  lr: 0.001\n")
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "belongs under optim" in err[0]
