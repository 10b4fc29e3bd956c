"""Plugins: --plugin files and modules on every command, config files, entry points, any gymnasium env id."""

from __future__ import annotations

import json
import textwrap

import gymnasium as gym
import pytest

import covgym.algorithms as algorithms
import covgym.train.plugins as plugins
from covgym import cli
from covgym.algorithms import registry

PLUGIN = '''
from dataclasses import dataclass

import gymnasium as gym

import covgym.algorithms as algorithms
from covgym.envs import Problem, SingleTurnEnv


class EchoEnv(SingleTurnEnv):
    """Repeat a number."""

    def generate_problem(self, rng):
        n = int(rng.integers(0, 10))
        return Problem(prompt=f"Say {n}\\nAnswer:", answer=str(n))


gym.register(id="plugtest/Echo-v0", entry_point=EchoEnv)


@algorithms.register
@dataclass
class PlugAlgo(algorithms.GRPO):
    name = "plugtest_algo"
    description = "a GRPO variant from a plugin"
    plugtest_knob: float = 0.5
'''


@pytest.fixture
def forget_plugins():
    """Undo what plugins register (algorithms, parts, gym ids, the loaded-plugin cache) after a test; calling the
    fixture's value forgets them mid-test, as a fresh process would."""
    saved_algorithms = dict(registry._ALGORITHMS)
    saved_parts = {kind: dict(table) for kind, table in registry._PARTS.items()}
    saved_presets = dict(registry._PRESET_RECIPES)
    saved_ids = set(gym.registry)
    saved_loaded = dict(plugins._LOADED)
    saved_entry_points = set(plugins._ENTRY_POINTS_LOADED)

    def forget() -> None:
        registry._ALGORITHMS.clear()
        registry._ALGORITHMS.update(saved_algorithms)
        for kind, table in registry._PARTS.items():
            table.clear()
            table.update(saved_parts[kind])
        registry._PRESET_RECIPES.clear()
        registry._PRESET_RECIPES.update(saved_presets)
        registry._COMPOSED.clear()
        for env_id in set(gym.registry) - saved_ids:
            del gym.registry[env_id]
        plugins._LOADED.clear()
        plugins._LOADED.update(saved_loaded)
        plugins._ENTRY_POINTS_LOADED.clear()
        plugins._ENTRY_POINTS_LOADED.update(saved_entry_points)

    yield forget
    forget()


@pytest.fixture
def plugin_file(tmp_path, forget_plugins):
    path = tmp_path / "plugtest.py"
    path.write_text(PLUGIN)
    return path


def test_a_file_plugin_registers_its_env_and_algorithm_once(plugin_file):
    module = plugins.load_plugin(str(plugin_file))
    assert "plugtest/Echo-v0" in gym.registry and "plugtest_algo" in algorithms.names()
    assert plugins.load_plugin(str(plugin_file)) is module  # idempotent: registering twice would be an error
    assert module.PlugAlgo.__module__ in __import__("sys").modules  # dataclasses and pickle can find it


def test_a_module_plugin_is_imported_by_name(tmp_path, monkeypatch, forget_plugins):
    (tmp_path / "plugtest_module.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins.load_plugin("plugtest_module")
    assert "plugtest_algo" in algorithms.names()


def test_resolve_records_files_as_absolute_paths_and_modules_unchanged(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert plugins.resolve("./mine.py") == str(tmp_path / "mine.py")
    assert plugins.resolve("sub/mine.py", base="/elsewhere") == "/elsewhere/sub/mine.py"
    assert plugins.resolve("my_package.plugin") == "my_package.plugin"


@pytest.mark.parametrize(("content", "spec", "says"), [
    (None, "./missing.py", "does not exist"),
    (None, "no_such_module_xyz", "no module named 'no_such_module_xyz'"),
    ("raise RuntimeError('boom')\n", "./bad.py", "failed to import: RuntimeError: boom"),
    ("def f(:\n", "./bad.py", "SyntaxError"),
    ("import no_such_dependency_xyz\n", "./bad.py", "No module named 'no_such_dependency_xyz'"),
])
def test_a_bad_plugin_is_a_one_line_error_with_exit_2_on_every_command(tmp_path, monkeypatch, capsys, content, spec,
                                                                         says):
    monkeypatch.chdir(tmp_path)
    if content is not None:
        (tmp_path / "bad.py").write_text(content)
    commands = list(cli.build_parser()._subparsers._group_actions[0].choices)
    assert {"train", "eval", "bench", "plot", "algos", "envs", "check-algorithm"} <= set(commands)
    for command in commands:
        assert cli.main([command, "--plugin", spec]) == cli.EXIT_USAGE
        err = capsys.readouterr().err
        assert says in err and err.count("\n") == 1, (command, err)


def test_every_command_accepts_plugin(plugin_file, capsys):
    parser = cli.build_parser()
    for name, sub in parser._subparsers._group_actions[0].choices.items():
        assert any("--plugin" in action.option_strings for action in sub._actions), name
    assert cli.main(["envs", "--plugin", str(plugin_file)]) == 0
    assert "plugtest/Echo-v0" in capsys.readouterr().out
    assert cli.main(["algos", "--plugin", str(plugin_file)]) == 0
    assert "plugtest_algo" in capsys.readouterr().out


def test_a_plugin_algorithms_hyperparameters_become_flags_and_the_config_records_the_plugin(plugin_file, tmp_path,
                                                                                           monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--plugin", "./plugtest.py", "--env", "plugtest/Echo-v0", "--algo", "plugtest_algo",
            "--plugtest-knob", "0.25"]
    cli._preload_plugins(argv)
    config = cli.config_from_args(cli.build_parser().parse_args(argv))
    assert config.plugins == [str(plugin_file)]
    assert config.algo_params == {"plugtest_knob": 0.25}
    from covgym.train.config import validate

    validate(config)  # the plugin's env id and algorithm pass validation


def test_config_file_plugins_are_relative_to_the_file(plugin_file, tmp_path, monkeypatch):
    config_dir = plugin_file.parent
    (config_dir / "run.yaml").write_text("plugins: [plugtest.py]\nalgo: plugtest_algo\nenv:\n  env: plugtest/Echo-v0\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    argv = ["train", "--config", str(config_dir / "run.yaml")]
    cli._preload_plugins(argv)  # imports the file's plugins before the parser (and its flags) exist
    assert "plugtest_algo" in algorithms.names()
    config = cli.config_from_args(cli.build_parser().parse_args(argv))
    assert config.plugins == [str(plugin_file)]


def test_unknown_env_message_points_to_plugins():
    from covgym.train.config import ConfigError, EnvConfig, TrainConfig, validate

    with pytest.raises(ConfigError, match=r"unknown environment 'nope/Task-v0'.*--plugin"):
        validate(TrainConfig(run_dir="r", env=EnvConfig("nope/Task-v0")))


def test_entry_points_register_algorithms_and_envs_and_a_broken_one_only_warns(tmp_path, monkeypatch,
                                                                               forget_plugins):
    site = tmp_path / "site"
    (site / "fake_covgym_ext-0.1.dist-info").mkdir(parents=True)
    (site / "fake_covgym_ext-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fake-covgym-ext\nVersion: 0.1\n")
    (site / "fake_covgym_ext-0.1.dist-info" / "entry_points.txt").write_text(textwrap.dedent("""\
        [covgym.algorithms]
        fake = fake_covgym_ext:FakeAlgo
        [covgym.envs]
        fake_envs = fake_covgym_ext:register_envs
        broken = fake_covgym_ext:no_such_name
    """))
    (site / "fake_covgym_ext.py").write_text(textwrap.dedent("""\
        from dataclasses import dataclass
        import gymnasium as gym
        import covgym.algorithms as algorithms
        from covgym.envs.arithmetic import ArithmeticEnv

        @dataclass
        class FakeAlgo(algorithms.GRPO):
            name = "fake_entry_point_algo"

        def register_envs():
            gym.register(id="fake/Arith-v0", entry_point=ArithmeticEnv)
    """))
    monkeypatch.syspath_prepend(str(site))
    with pytest.warns(UserWarning, match="entry point 'broken'.*failed to load"):
        loaded = plugins.load_entry_points()
    assert {"fake", "fake_envs"} <= set(loaded)
    assert "fake_entry_point_algo" in algorithms.names() and "fake/Arith-v0" in gym.registry
    assert plugins.load_entry_points() == []  # once only


def test_resume_reuses_the_recorded_plugins_and_refuses_others(plugin_file, tmp_path, monkeypatch):
    from covgym.train.config import EnvConfig, TrainConfig

    run = tmp_path / "run"
    run.mkdir()
    recorded = TrainConfig(algo="plugtest_algo", env=EnvConfig("plugtest/Echo-v0"), run_dir=str(run),
                           plugins=[str(plugin_file)])
    (run / "config.json").write_text(json.dumps(recorded.to_dict()))
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--resume", str(run)]
    cli._preload_plugins(argv)  # the recorded plugin is imported before the parser is built
    assert "plugtest_algo" in algorithms.names()
    assert cli.config_from_args(cli.build_parser().parse_args(argv)).plugins == [str(plugin_file)]
    same = cli.build_parser().parse_args(argv + ["--plugin", "./plugtest.py"])
    assert cli.config_from_args(same).plugins == [str(plugin_file)]  # the same file, however it is spelled
    (tmp_path / "other.py").write_text("")
    other = cli.build_parser().parse_args(argv + ["--plugin", "./other.py"])
    with pytest.raises(cli.UsageError, match="--resume uses the plugins recorded"):
        cli.config_from_args(other)


def test_an_env_without_train_test_splits_is_refused_in_one_line(forget_plugins, capsys):
    from covgym.train.config import ConfigError, EnvConfig, TrainConfig, validate

    class Plain(gym.Env):
        def __init__(self, render_mode=None):
            pass

    gym.register(id="plugtest/Plain-v0", entry_point=Plain)
    with pytest.raises(ConfigError, match="does not take split="):
        validate(TrainConfig(run_dir="r", env=EnvConfig("plugtest/Plain-v0")))
    assert cli.main(["eval", "--env", "plugtest/Plain-v0"]) == cli.EXIT_USAGE
    assert "does not take split=" in capsys.readouterr().err
    validate(TrainConfig(run_dir="r", env=EnvConfig("covgym/Arithmetic-v0")))


def test_bench_records_plugins_from_its_config_file_and_flags(plugin_file, tmp_path, monkeypatch):
    from covgym.benchmark.command import spec_from_args

    (plugin_file.parent / "bench.yaml").write_text("plugins: [plugtest.py]\nmethods: [plugtest_algo]\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    (tmp_path / "elsewhere" / "extra.py").write_text("")
    argv = ["bench", "--config", str(plugin_file.parent / "bench.yaml"), "--plugin", "extra.py"]
    cli._preload_plugins(argv)
    spec = spec_from_args(cli.build_parser().parse_args(argv))
    assert spec.plugins == (str(plugin_file), str(tmp_path / "elsewhere" / "extra.py"))
    run = spec.run_config(spec.envs[0], "plugtest_algo", 0, tmp_path / "run")
    assert run.plugins == list(spec.plugins)  # each run's config.json, hence spawned workers and --resume
