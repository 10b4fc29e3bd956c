"""check_algorithm's direction properties: each catches the bug class it is for, written as a user would write it
(tests/data/plugins/broken_parts.py), and none raises a false alarm on hand-written correct parts
(tests/data/plugins/correct_parts.py) or on any built-in part."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import covgym.algorithms as algorithms
from covgym.testing import check_algorithm

PLUGINS = Path(__file__).parent / "data" / "plugins"
sys.path.insert(0, str(PLUGINS))
import broken_parts  # noqa: E402,F401  - registers the broken_* parts
import correct_parts  # noqa: E402,F401  - registers the variant_* parts

FAST = {"max_examples": 10}


@pytest.mark.parametrize(("name", "prop", "says"), [
    ("grpo+broken_sign_flip", "improvement", "lowers expected reward"),
    ("grpo+broken_inverted_ratio", "improvement", "lowers expected reward"),
    ("broken_abs_advantage+ppo_clip", "improvement", "expected reward"),
    ("grpo+broken_ratio_self", "gradient_flows", "no token gets any gradient"),
    ("grpo+broken_logp_shaped", "ratio_only", "depends on log π itself"),
    ("grpo+broken_optimistic_clip", "clip", "beyond the clip range"),
    ("grpo+ppo_clip+broken_negative_weights", "token_weights", "< 0: a negative weight flips"),
    ("grpo+ppo_clip+broken_entropy_bonus", "entropy_effect", "declares entropy_effect='raise' but lowers entropy"),
])
def test_each_bug_class_is_caught_by_its_property_with_a_small_counterexample(name, prop, says):
    with pytest.raises(AssertionError) as alone:
        check_algorithm(name, properties=(prop,), **FAST)
    message = str(alone.value)
    assert message.startswith(f"check_algorithm({name!r}): {prop}:") and says in message
    assert "case: " in message or "inputs (" in message
    assert len(message.splitlines()) < 16


@pytest.mark.parametrize("name", [
    "grpo+variant_ppo_clip_higher", "variant_raw_score+variant_reinforce", "grpo+variant_reinforce",
    "variant_median_baseline+ppo_clip", "grpo+ppo_clip+variant_entropy_bonus", "grpo+ppo_clip+variant_positive_weights",
    "variant_median_baseline+variant_ppo_clip_higher+variant_entropy_bonus+variant_positive_weights",
])
def test_correct_hand_written_variants_pass(name):
    assert {"improvement", "gradient_flows", "ratio_only"} <= set(check_algorithm(name, **FAST))


@pytest.mark.slow
@pytest.mark.parametrize("name", [f"grpo+{c}" for c in algorithms.part_names("control") if not c.startswith(
    ("broken_", "variant_"))] + [f"{e}+ppo_clip" for e in ("gae", "quantile_baseline", "gpg", "rloo")]
    + [f"grpo+{loss}" for loss in ("cispo", "gspo", "vanilla_pg", "kl_cov", "clip_cov")])
def test_every_builtin_part_passes_the_direction_properties(name):
    check_algorithm(name, properties=("improvement", "gradient_flows", "ratio_only", "clip", "token_weights",
                                      "entropy_effect"), **FAST)


def test_the_clip_property_runs_only_for_a_token_ratio_clip():
    assert "clip" in check_algorithm("grpo", properties=("clip",), **FAST)
    assert check_algorithm("grpo+cispo", properties=("clip",), **FAST) == []  # CISPO clips a weight, not a gradient


def test_an_ungated_adaptive_bonus_is_caught_above_its_target(monkeypatch):
    """The old adaptive_entropy kept its bonus on above the target after a stretch below it."""
    control = algorithms.part("adaptive_entropy")
    assert check_algorithm("grpo+adaptive_entropy", properties=("entropy_effect",), **FAST) == ["entropy_effect"]
    monkeypatch.setattr(control, "applied_coefficient", lambda self: self.coefficient)
    with pytest.raises(AssertionError, match="declares entropy_effect='target' .* but raises entropy"):
        check_algorithm("grpo+adaptive_entropy", properties=("entropy_effect",), **FAST)


def test_the_command_fails_a_broken_plugin_part_as_a_user_outside_the_repo_runs_it(tmp_path):
    """A fresh process (the plugin registers its parts on import), run from a directory outside the repository."""
    import subprocess

    run = subprocess.run([sys.executable, "-m", "covgym", "check-algorithm", "grpo+broken_sign_flip", "--plugin",
                          str(PLUGINS / "broken_parts.py"), "--max-examples", "5"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 1, run.stderr
    assert "improvement: one small step raises expected reward" in run.stdout + run.stderr
