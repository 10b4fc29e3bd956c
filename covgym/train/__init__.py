"""The training loop and its data: config, rollouts through the envs, the update, evaluation, and the run directory.

Owns ``Trainer`` and ``TrainConfig``, multi-turn stepping of envs, rollouts, held-out evaluation, checkpoints and
resume, the run directory's files (config.json, metrics.jsonl, samples.jsonl), plugins, warm starts and the
dead-signal monitor. It composes every lower package (core, distributed, envs, algorithms, models, measure) and
is imported only by the benchmark, the adapters and the command line.
"""

MAY_IMPORT: tuple[str, ...] = ("covgym.core", "covgym.distributed", "covgym.envs", "covgym.algorithms",
                               "covgym.models", "covgym.measure")
