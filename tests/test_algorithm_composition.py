"""Algorithms as compositions of parts: names, presets, user subclasses, new parts, needs, knobs, state, e2e."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import covgym.algorithms as algorithms
from covgym.algorithms import registry
from covgym.cli import main

ROOT = Path(__file__).resolve().parents[1]


def loss_and_grad(algorithm, seed: int = 0, b: int = 5, t: int = 6):
    """Loss and d loss / d log_probs of one off-policy mini-batch (float64, some tokens masked)."""
    g = torch.Generator().manual_seed(seed)
    old = -3 * torch.rand(b, t, generator=g, dtype=torch.float64)
    log_probs = (old + 0.3 * torch.randn(b, t, generator=g, dtype=torch.float64)).requires_grad_(True)
    advantages = torch.randn(b, t, generator=g, dtype=torch.float64)
    mask = (torch.rand(b, t, generator=g) < 0.7).double()
    entropy = 2 * torch.rand(b, t, generator=g, dtype=torch.float64)
    algorithm.set_generator(torch.Generator().manual_seed(3))
    loss, metrics = algorithm.policy_loss(log_probs, old, advantages, mask, entropy=entropy)
    loss.backward()
    return loss.detach(), log_probs.grad, metrics


# ---------------------------------------------------------------------------------------------- names
@pytest.mark.parametrize("name", algorithms.names())
def test_every_preset_equals_its_explicit_composition(name):
    recipe = algorithms.preset_parts(name)
    assert recipe is not None, f"{name} is not a preset"
    parts, defaults = recipe
    preset = algorithms.get(name)()
    explicit = algorithms.get("+".join(parts))(**defaults)
    assert preset.to_dict() == explicit.to_dict()
    want, want_grad, want_metrics = loss_and_grad(preset)
    got, got_grad, got_metrics = loss_and_grad(explicit)
    assert torch.equal(got, want) and torch.equal(got_grad, want_grad) and got_metrics == want_metrics


def test_composed_names_resolve_to_their_parts():
    rloo_kl_cov = algorithms.get("rloo+kl_cov")(kl_cov_ratio=2e-3)
    assert (rloo_kl_cov.estimator.name, rloo_kl_cov.loss.name, rloo_kl_cov.kl_cov_ratio) == ("rloo", "kl_cov", 2e-3)
    adaptive = algorithms.get("grpo+ppo_clip+adaptive_entropy")()
    assert [c.name for c in adaptive.controls] == ["adaptive_entropy"]
    completed = algorithms.get("grpo+adaptive_entropy")()  # the loss defaults to ppo_clip
    assert completed.loss.name == "ppo_clip" and algorithms.get("gspo")().estimator.name == "grpo"
    expanded = algorithms.get("clip_higher+polarity_aware")()  # a preset in a '+' list brings its defaults
    assert (expanded.clip_ratio_low, expanded.clip_ratio_high) == (0.2, 0.28)
    assert algorithms.get("rloo+kl_cov") is algorithms.get("rloo+kl_cov")  # built once
    for bad, message in (("rloo+grpo", "one estimator"), ("grpo+kl_cov+gspo", "one loss"),
                         ("grpo+nope", "unknown algorithm 'nope'"), ("grpo+grpo", "twice"), ("grpo+", "unknown")):
        with pytest.raises(KeyError, match=message):
            algorithms.get(bad)


def test_parts_that_declare_the_same_hyperparameter_cannot_be_combined():
    @dataclass
    class Twin(algorithms.Control):
        name = "twin"
        entropy_coeff: float = algorithms.hyperparameter(0.1, "clashes with entropy_bonus")

    with pytest.raises(ValueError, match="entropy_coeff"):
        algorithms.compose("x", algorithms.part("grpo"), algorithms.part("ppo_clip"),
                           (algorithms.part("entropy_bonus"), Twin))


def test_user_subclass_of_grpo_registered_the_old_way_keeps_working():
    from covgym.algorithms import GRPO, hyperparameter, register
    from covgym.algorithms.functional import ppo_clip_token_loss

    @register
    @dataclass
    class ScaledGRPO(GRPO):
        name = "test_scaled_grpo"
        description = "GRPO with advantages times a factor"
        source = "a test"
        factor: float = hyperparameter(2.0, "advantage factor")

        def compute_advantages(self, batch):
            return super().compute_advantages(batch) * self.factor

        def token_loss(self, log_probs, old_log_probs, advantages, response_mask):
            return ppo_clip_token_loss(log_probs, old_log_probs, advantages, self.low, self.high, None)

    try:
        cls = algorithms.get("test_scaled_grpo")
        mine = cls(factor=3.0, clip_ratio=0.1)
        assert {"factor", "clip_ratio", "norm_adv_by_std_in_grpo"} <= {f.name for f in dataclasses.fields(cls)}
        from covgym.measure.theory import _one_token_batch

        batch = _one_token_batch(torch.zeros(2, 3), torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]]),
                                 torch.tensor([[0, 1, 2, 0], [1, 1, 0, 2]]))
        assert torch.allclose(mine.advantages(batch), 3.0 * algorithms.get("grpo")().advantages(batch))
        loss, _, metrics = loss_and_grad(mine)
        assert torch.isfinite(loss) and metrics["clip_frac_lower"] == 0.0  # its own token_loss: no dual-clip
        assert algorithms.unread_hyperparameters("test_scaled_grpo", ["factor", "clip_ratio"]) is None
    finally:
        registry._ALGORITHMS.pop("test_scaled_grpo", None)


def test_a_new_part_is_one_registration_with_no_edit_of_the_package():
    from covgym.algorithms import Control, register

    @register
    @dataclass
    class HalveAdvantages(Control):
        name = "test_halve"
        description = "halves the advantages"

        def transform_advantages(self, advantages, batch):
            return advantages * 0.5

    try:
        assert "test_halve" in algorithms.part_names("control")
        from covgym.measure.theory import _one_token_batch

        batch = _one_token_batch(torch.zeros(1, 3), torch.tensor([[1.0, 0.0, 0.5]]), torch.tensor([[0, 1, 2, 1]]))
        halved = algorithms.get("rloo+test_halve")().advantages(batch)
        assert torch.allclose(halved, 0.5 * algorithms.get("rloo")().advantages(batch))
    finally:
        registry._PARTS["control"].pop("test_halve", None)
        registry._COMPOSED.clear()


def test_the_registry_imports_every_module_of_the_part_folders():
    for folder, kind in (("estimators", "estimator"), ("losses", "loss"), ("controls", "control")):
        modules = {p.stem for p in (ROOT / "algorithms" / folder).glob("*.py") if not p.stem.startswith("_")}
        owners = {Path(sys.modules[cls.__module__].__file__).stem for cls in registry._PARTS[kind].values()
                  if cls.__module__.startswith(f"covgym.algorithms.{folder}.")}
        assert modules == owners, f"{folder}: modules that register no {kind}: {sorted(modules - owners)}"


def test_covgym_algorithms_is_reachable_after_import_covgym_without_loading_torch():
    code = ("import sys, covgym; assert 'torch' not in sys.modules; "
            "assert covgym.algorithms.get('rloo+kl_cov')().loss.name == 'kl_cov'; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


# ---------------------------------------------------------------------------------------------- needs and knobs
def test_needs_are_declared_by_the_parts():
    assert "critic" in algorithms.get("ppo")().needs
    assert "off_policy_minibatches" in algorithms.get("rloo+kl_cov")().needs
    assert "token_entropy" in algorithms.get("grpo+high_entropy_tokens")().needs
    assert "reference_model" in algorithms.get("grpo")(use_kl_loss=True).needs
    assert algorithms.get("grpo")().needs == frozenset()
    assert set(algorithms.NEEDS) >= {n for name in algorithms.part_names() for n in algorithms.part(name).needs}


def test_the_trainer_reads_declared_needs_and_never_probes_the_algorithm():
    source = (ROOT / "covgym" / "train" / "trainer.py").read_text()
    for probe in ("hasattr(self.algorithm", "getattr(self.algorithm", "algorithm_class.needs_",
                  "self.algorithm.needs_critic", "use_kl_loss"):
        assert probe not in source, probe


def test_a_need_the_trainer_cannot_meet_is_refused_before_any_model_loads(tmp_path):
    from covgym.algorithms import Control, register
    from covgym.train.config import TrainConfig
    from covgym.train.trainer import PROVIDED_NEEDS, Trainer

    @register
    @dataclass
    class WantsLogits(Control):
        name = "test_wants_logits"
        needs = frozenset({"full_vocab_logits"})

    try:
        assert set(algorithms.NEEDS) - PROVIDED_NEEDS == {"full_vocab_logits"}
        with pytest.raises(ValueError, match="needs full_vocab_logits"):
            Trainer(TrainConfig(algo="grpo+test_wants_logits", model=ModelConfigForMissing(), run_dir=str(tmp_path)))
    finally:
        registry._PARTS["control"].pop("test_wants_logits", None)
        registry._COMPOSED.clear()


def ModelConfigForMissing():  # noqa: N802 - a model path that would fail to load, proving the check comes first
    from covgym.train.config import ModelConfig

    return ModelConfig(model="/nonexistent/model")


def test_a_one_class_algorithm_subclassing_algorithm_still_works():
    from covgym.algorithms import Algorithm, register

    @register
    @dataclass
    class Constant(Algorithm):
        name = "test_constant_advantage"
        description = "every token advantage 1"

        def compute_advantages(self, batch):
            return torch.ones_like(batch.response_mask)

    try:
        algorithm = algorithms.get("test_constant_advantage")(entropy_coeff=0.1, clip_ratio=0.3)
        assert algorithm.needs == {"token_entropy"} and algorithm.high == 0.3
        loss, _, metrics = loss_and_grad(algorithm)
        assert torch.isfinite(loss) and "entropy" in metrics
        assert algorithms.unread_hyperparameters("test_constant_advantage", ["entropy_coeff", "clip_ratio_c"]) is None
    finally:
        registry._ALGORITHMS.pop("test_constant_advantage", None)


def test_a_knob_no_chosen_part_reads_is_an_error_naming_the_parts_that_do():
    message = algorithms.unread_hyperparameters("kl_cov", ["clip_ratio", "kl_cov_ratio"])
    assert message.startswith("clip_ratio not read by --algo kl_cov (grpo + kl_cov)")
    assert all(name in message for name in ("ppo_clip", "clip_cov", "gspo", "cispo"))
    assert algorithms.unread_hyperparameters("rloo+kl_cov", ["kl_cov_ratio", "use_kl_loss"]) is None


def test_a_config_file_key_no_part_reads_is_one_line_and_exit_2(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("algo: grpo+adaptive_entropy\nalgo_params:\n  adaptive_entropy_target: 0.5\n  kl_cov_ratio: 0.1\n")
    code = main(["train", "--config", str(config), "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "kl_cov_ratio not read by --algo grpo+adaptive_entropy" in err and "kl_cov" in err
    assert not (tmp_path / "run").exists()


def test_algos_lists_parts_by_kind(capsys):
    assert main(["algos"]) == 0
    out = capsys.readouterr().out
    sections = ["advantage estimators:", "policy losses:", "entropy controls:", "presets"]
    assert all(section in out for section in sections)
    positions = [out.index(section) for section in sections]
    assert positions == sorted(positions)
    for name in ("quantile_baseline", "gspo", "cispo", "high_entropy_tokens", "entropy_target"):
        assert name in out


# ---------------------------------------------------------------------------------------------- state
def test_adapted_state_survives_a_state_dict_round_trip():
    algorithm = algorithms.get("grpo+adaptive_entropy+entropy_target")(adaptive_entropy_target=0.5,
                                                                      adaptive_entropy_coeff_step=0.01,
                                                                      adaptive_entropy_coeff_max=0.05)
    for entropy in (0.2, 0.3, 0.4):
        extra = algorithm.end_of_step({"entropy_mean": entropy})
    assert extra["adaptive_entropy_coeff_next"] == pytest.approx(0.03)
    state = algorithm.state_dict()
    fresh = type(algorithm)(**algorithm.to_dict())
    fresh.load_state_dict(state)
    assert fresh.state_dict() == state and fresh.controls[0].coefficient == pytest.approx(0.03)
    with pytest.raises(ValueError, match="kl_cov"):
        algorithms.get("grpo")().load_state_dict({"kl_cov": {}})


# ---------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_compositions_train_end_to_end_and_resume_their_control_state(tmp_path, tiny_model_path):
    import json

    from covgym.train.config import ModelConfig, OptimConfig, RolloutConfig, TrainConfig
    from covgym.train.trainer import Trainer

    runs = {"rloo+kl_cov": {}, "grpo+ppo_clip+polarity_aware": {},
            "grpo+adaptive_entropy": {"adaptive_entropy_target": 5.0, "adaptive_entropy_coeff_step": 0.01,
                                      "adaptive_entropy_coeff_max": 0.05},
            "grpo+entropy_target+high_entropy_tokens": {"entropy_target_value": 0.4}}
    for algo, params in runs.items():
        config = TrainConfig(algo=algo, algo_params=params, steps=2, run_dir=str(tmp_path / algo), eval_problems=0,
                             progress=False, save_every=1, model=ModelConfig(model=str(tiny_model_path)),
                             rollout=RolloutConfig(prompts_per_step=4, group_size=4, max_new_tokens=6),
                             optim=OptimConfig(lr=1e-4, mini_batches=2))
        result = Trainer(config).train()
        assert len(result.history) == 2, algo
        if algo == "grpo+adaptive_entropy":  # below its target: the coefficient rose once per step
            assert [r["adaptive_entropy_coeff_next"] for r in result.history] == pytest.approx([0.01, 0.02])
            resumed = Trainer(config.replace(steps=3), resume=True)
            resumed.train()
            lines = [json.loads(line) for line in (tmp_path / algo / "metrics.jsonl").read_text().splitlines()]
            assert lines[-1]["step"] == 3 and lines[-1]["adaptive_entropy_coeff"] == pytest.approx(0.02)
        if algo.startswith("grpo+entropy_target"):
            assert "entropy_target_predicted" in result.history[-1] and "high_entropy_tokens_frac" in result.history[-1]
