"""Does the TRL engine compute what covgym's trainer computes? One table, every preset and the compositions.

For each case of ``covgym.adapters.trl_cases`` (every preset but the critic's, then compositions that cover every
estimator, loss and control), ``covgym.adapters.trl_check.EngineComparison`` runs one rollout of the built-in tiny
model (same tokens, rewards, old and reference log-probs) through covgym's ``Trainer`` and through
``CovgymGRPOTrainer`` and reports the largest absolute differences of the loss and of its gradient (over every
model parameter; on-policy and off-policy mini-batch, the larger of the two) and of the advantages.
tests/test_adapters_trl_equality.py asserts the same numbers within float tolerance.

Usage: ``python benchmarks/trl_equality.py [--out benchmarks/results/trl_equality.json]``
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from pathlib import Path

from tqdm.auto import tqdm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "trl_equality.json"))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import torch
    import transformers
    import trl

    from covgym.adapters.trl_cases import case_id, equality_cases
    from covgym.adapters.trl_check import EngineComparison
    from covgym.models.tiny_model import ensure_tiny_model

    comparison = EngineComparison(ensure_tiny_model(show_progress=False))
    rows = []
    try:
        for case in tqdm(equality_cases(), desc="cases"):
            name, hyperparameters, state = case
            found = comparison.compare(name, state=state, **hyperparameters)
            rows.append({"case": case_id(case), "algo": name, "hyperparameters": hyperparameters, "state": state,
                         "max_abs_loss": found.loss, "max_abs_grad": found.grad, "max_abs_advantages": found.advantages,
                         "max_abs_grad_entry": found.grad_scale, "loss_on_policy": found.loss_on_policy,
                         "loss_off_policy": found.loss_off_policy, "grad_on_policy": found.grad_on_policy,
                         "grad_off_policy": found.grad_off_policy})
    finally:
        comparison.close()
    header = f"{'preset / composition':34} {'max|Δloss|':>11} {'max|Δgrad|':>11} {'max|grad|':>10} {'max|Δadv|':>10}"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{row['case']:34} {row['max_abs_loss']:11.2e} {row['max_abs_grad']:11.2e} "
              f"{row['max_abs_grad_entry']:10.2e} {row['max_abs_advantages']:10.2e}")
    result = {"created": time.strftime("%Y-%m-%d %H:%M:%S"), "model": "tiny (built-in)", "env": "covgym/Arithmetic-v0",
              "rollout": f"{comparison.batch.batch_size} rows (4 prompts x 4), off-policy noise 0.15 on log pi_old",
              "versions": {"trl": trl.__version__, "transformers": transformers.__version__,
                           "torch": torch.__version__, "python": platform.python_version()},
              "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
