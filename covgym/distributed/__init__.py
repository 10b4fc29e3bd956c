"""Several processes as one trainer: process-group set-up, rank-aware reductions, and FSDP sharding of a model.

Owns ``parallel`` (rank, world size, all-reduce of step statistics, rank-0-only writing) and ``sharding`` (FSDP2
over the transformer layers). The trainer and the rollout use it; it knows nothing about algorithms or envs.
"""

MAY_IMPORT: tuple[str, ...] = ("covgym.core",)
