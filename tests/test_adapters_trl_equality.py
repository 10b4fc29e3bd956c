"""The TRL engine computes what covgym's trainer computes: advantages, loss and gradient, for every algorithm.

One rollout of the built-in tiny model (same tokens, same rewards, same old and reference log-probs) goes through
covgym's ``Trainer`` (``advantages_and_returns``, ``_optimizer_step``) and through ``CovgymGRPOTrainer``
(``covgym_rollout``, ``compute_loss``) in TRL's own layout (left-padded prompt, right-padded completion), for the
first (on-policy) and a later (off-policy) mini-batch. Each preset and composition is its own test case, so a drift
in any one of them fails by name; the differences are printed (``-s``) and recorded by
benchmarks/trl_equality.py. Also here: what the engine refuses, its state in checkpoints, and one end-to-end
``covgym train --engine trl`` run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.skipif(importlib.util.find_spec("trl") is None,
                                 reason="TRL not installed (optional extra): pip install 'covgym[trl]'"),
              pytest.mark.filterwarnings("ignore::FutureWarning"), pytest.mark.filterwarnings("ignore::UserWarning")]

from covgym.adapters.trl_cases import case_id, equality_cases  # noqa: E402

LOSS_TOLERANCE = 1e-5  # absolute, on losses of order 0.1-1
GRAD_TOLERANCE = 2e-5  # absolute, on gradients whose largest entry is of order 0.1
ADVANTAGE_TOLERANCE = 2e-5  # advantages that read the rollout log-probs (OPEFO) see two scoring passes


@pytest.fixture(scope="module")
def engines(tiny_model_path):
    from covgym.adapters.trl_check import EngineComparison

    comparison = EngineComparison(tiny_model_path)
    yield comparison
    comparison.close()


@pytest.mark.parametrize("case", equality_cases(), ids=case_id)
def test_trl_engine_equals_covgym_trainer(engines, case):
    name, hyperparameters, state = case
    found = engines.compare(name, state=state, **hyperparameters)
    print(f"\n{case_id(case)}: max|Δloss| {found.loss:.2e}  max|Δgrad| {found.grad:.2e} "
          f"(of max|grad| {found.grad_scale:.2e})  max|Δadv| {found.advantages:.2e}")
    assert found.grad_scale > 1e-4, "the gradient vanished: the comparison would pass for any loss"
    assert found.advantages <= ADVANTAGE_TOLERANCE
    assert found.loss_on_policy <= LOSS_TOLERANCE and found.loss_off_policy <= LOSS_TOLERANCE
    assert found.grad_on_policy <= GRAD_TOLERANCE and found.grad_off_policy <= GRAD_TOLERANCE


def test_comparison_detects_a_different_loss(engines):
    """The check can fail: the TRL side clipping at 0.1 instead of 0.2 (off-policy ratios reach the clip) is caught,
    and so is an estimator that differs (RLOO's advantages against GRPO's)."""
    same = engines.compare("grpo")
    clipped = engines.compare("grpo", trl_overrides={"clip_ratio": 0.05})
    other_estimator = engines.compare("grpo", trl_overrides={"norm_adv_by_std_in_grpo": False})
    assert same.loss_off_policy <= LOSS_TOLERANCE and same.grad_off_policy <= GRAD_TOLERANCE
    assert clipped.grad_off_policy > 50 * GRAD_TOLERANCE
    assert other_estimator.advantages > 50 * ADVANTAGE_TOLERANCE


def test_critic_and_unsupported_settings_are_refused_in_one_line():
    import covgym.algorithms as algorithms
    from covgym.adapters.trl_run import unsupported
    from covgym.adapters.trl_trainer import check_trl_version, refusal
    from covgym.train.config import ModelConfig, TrainConfig

    message = refusal(algorithms.get("ppo")(), "ppo")
    assert "critic" in message and "--engine covgym" in message and "\n" not in message
    assert refusal(algorithms.get("gae+ppo_clip")(), "gae+ppo_clip") is not None
    assert refusal(algorithms.get("kl_cov")(), "kl_cov") is None
    assert unsupported(TrainConfig()) is None
    assert "dtype" in unsupported(TrainConfig(model=ModelConfig(dtype="bfloat16")))
    with pytest.raises(ImportError, match="trl>=1.16,<1.17"):
        check_trl_version("0.19.1")
    check_trl_version("1.16.0")


def _cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRL_EXPERIMENTAL_SILENCE": "1"}
    return subprocess.run([sys.executable, "-m", "covgym", *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=600)


def test_cli_refuses_what_trl_cannot_do(tmp_path):
    common = ["train", "--engine", "trl", "--model", "tiny", "--steps", "1", "--run-dir", str(tmp_path / "r")]
    for extra, expected in ((["--algo", "ppo"], "critic"), (["--autocast-bf16", "true"], "autocast-bf16"),
                            (["--max-total-tokens", "64"], "max-total-tokens"),
                            (["--env", "covgym/Nope-v0"], "unknown environment")):
        result = _cli(*common, *extra)
        assert result.returncode == 2, result.stderr
        lines = [line for line in result.stderr.splitlines() if line.startswith("covgym: error")]
        assert len(lines) == 1 and expected in lines[0] and "Traceback" not in result.stderr, result.stderr


def test_algorithm_state_survives_a_trl_checkpoint(engines, tmp_path):
    """A control's adapted state is written into TRL's checkpoint and read back on resume."""
    import covgym.algorithms as algorithms
    from covgym.adapters.trl_trainer import STATE_FILE

    trainer = engines.trl
    original, original_dir = trainer.algorithm, trainer.args.output_dir
    algorithm = algorithms.get("grpo+entropy_target")(entropy_target_value=0.55)
    for entropy in (0.7, 0.6, 0.5):
        algorithm.end_of_step({"entropy_mean": entropy, "reward_mean": 0.3, "step": 1})
    saved = algorithm.state_dict()
    assert saved["entropy_target"]["step"] == 3
    trainer.algorithm = algorithm
    trainer.args.output_dir = str(tmp_path)
    try:
        trainer.state.global_step = 7
        if trainer.optimizer is None:
            trainer.create_optimizer_and_scheduler(num_training_steps=2)
        trainer._save_checkpoint(trainer.model, None)
        folder = tmp_path / "checkpoint-7"
        assert json.loads((folder / STATE_FILE).read_text())["algorithm"] == json.loads(json.dumps(saved))
        trainer.algorithm = algorithms.get("grpo+entropy_target")(entropy_target_value=0.55)
        assert trainer.algorithm.state_dict() != saved
        trainer._load_optimizer_and_scheduler(str(folder))
        assert json.dumps(trainer.algorithm.state_dict(), sort_keys=True) == json.dumps(saved, sort_keys=True)
    finally:
        trainer.algorithm, trainer.args.output_dir = original, original_dir
        trainer.state.global_step = 0


@pytest.mark.slow
def test_cli_trains_two_steps_through_trl_into_a_covgym_run_dir(tmp_path):
    run_dir = tmp_path / "run"
    result = _cli("train", "--engine", "trl", "--model", "tiny", "--env", "covgym/Arithmetic-v0",
                  "--algo", "rloo+kl_cov+entropy_target", "--kl-cov-ratio", "0.2", "--steps", "2", "--seed", "3",
                  "--prompts-per-step", "4", "--group-size", "4", "--mini-batches", "2", "--eval-problems", "8",
                  "--eval-samples", "2", "--save-every", "1", "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["algo"] == "rloo+kl_cov+entropy_target" and config["steps"] == 2
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    for key in ("reward_mean", "entropy_mean", "entropy_p50", "cov_mean", "abs_kl", "pg_loss", "dH_predicted_mean",
                "dH_actual_mean", "polarity_contract_frac", "entropy_target_target", "grad_norm"):
        assert key in records[0], key
    assert "eval_accuracy" in records[-1] and "eval_pass@2" in records[-1]
    assert (run_dir / "final_model" / "config.json").exists()
    engine = json.loads((run_dir / "trl.json").read_text())
    assert engine["engine"] == "trl" and "accuracy" in engine["eval_before"]
    checkpoint = run_dir / "trl" / "checkpoint-4"  # 2 steps × 2 mini-batches
    state = json.loads((checkpoint / "covgym_state.json").read_text())
    assert state["algorithm"]["entropy_target"]["step"] == 2  # end_of_step ran once per covgym step
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    train = [s for s in samples if s["split"] == "train"]
    assert sorted({s["step"] for s in train}) == [1, 2] and len(train) == 8  # 4 prompts a step, one row each
    assert len({(s["step"], s["group"]) for s in train}) == 8  # spread over distinct prompts
    assert sorted({s["step"] for s in samples if s["split"] == "test"}) == [0, 2]  # before training, last step
    for sample in train:  # TRL's left-padded rows read as covgym's: the prompt, then tokens the policy chose
        assert sample["prompt"].strip() and "pad" not in sample["prompt"].lower()
        assert sample["tokens"] and all(entropy is not None and entropy >= 0 for _, entropy in sample["tokens"])
        assert sample["answer"] is not None and sample["reason"] != "" or sample["correct"]
    shown = _cli("show", str(run_dir), "--split", "train", "--color", "never")
    last = [s for s in train if s["step"] == 2]  # show prints the last stored step
    assert shown.returncode == 0 and all(s["prompt"].strip().splitlines()[0] in shown.stdout for s in last)
    plot = _cli("plot", str(run_dir))
    assert plot.returncode == 0, plot.stderr[-2000:]
    evaluated = _cli("eval", "--model", str(run_dir / "final_model"), "--env", "covgym/Arithmetic-v0",
                     "--problems", "4", "--samples", "2")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
