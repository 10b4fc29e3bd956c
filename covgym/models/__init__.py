"""The model engine: from a name to a policy that samples, scores and reports per-token statistics.

Owns where a model comes from (built-in tiny models, local directories, GGUF files, hub ids, aliases), the
``Policy`` wrapper (sampling with prefix sharing, packed scoring under an activation budget, head statistics,
attention and dropout settings), the critic, the optional vLLM sampler and CPU thread defaults. It may import the
shared data (``covgym.core``) and the envs (the built-in tiny models are warm-started on envs' solved problems,
``tiny_model``), never an algorithm, the trainer, the measurements or the benchmark.
"""

MAY_IMPORT: tuple[str, ...] = ("covgym.core", "covgym.envs")

#: Default activation budget of an update forward, in MiB (``activation_budget``); here, torch-free, so that the
#: CLI's config can show it without importing torch.
DEFAULT_ACTIVATION_BUDGET_MB = 512
