"""Run configuration: a tree of frozen dataclasses, loadable from YAML/JSON and overridable from the CLI.

Every field carries its help text (``metadata["help"]``); the CLI builds one flag per field from it, so each
default lives in exactly one place. ``validate`` rejects bad values before any work starts, naming the field.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from covgym.models import DEFAULT_ACTIVATION_BUDGET_MB


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and the fix."""


def option(default: Any, help: str, **kwargs: Any) -> Any:  # noqa: A002
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **kwargs})
    return field(default=default, metadata={"help": help, **kwargs})


@dataclass(frozen=True)
class ModelConfig:
    model: str = option("tiny", "model: local directory, hub id, .gguf file, or alias ('tiny')")
    device: str = option("auto", "device: auto, cpu, cuda, cuda:N")
    dtype: str = option("float32", "parameter dtype: float32, bfloat16, float16")
    autocast_bf16: bool = option(False, "run forward passes under bf16 autocast (log-probs/losses stay float32)")
    gradient_checkpointing: bool = option(False, "recompute activations in backward to save memory (TRL's "
                                                 "default; 1.1-1.3x the update's time on CPU)")
    checkpoint_every_n_layers: int = option(1, "with gradient_checkpointing, recompute only every n-th decoder "
                                               "layer (1: all); the others keep their activations, trading "
                                               "memory back for speed")
    activation_budget_mb: int = option(
        DEFAULT_ACTIVATION_BUDGET_MB, "without gradient_checkpointing: activations an update forward may keep, in "
                                      "MiB; a longer mini-batch checkpoints the fewest decoder layers that fit, "
                                      "measured on the batch (0: no limit)")
    chat_template: str = option("auto", "render prompts with the tokenizer's chat template: auto, on, off")
    share_prompts: bool = option(True, "run a prompt repeated across its group once and share its KV cache")
    pack_sequences: bool = option(True, "in scoring and updates, pack rows of uneven length side by side so that "
                                        "padding is not computed (when the model is checked to honour it)")
    generation_backend: str = option("hf", "sampling engine: hf (transformers generate) or vllm (optional extra, "
                                           "GPU; weights pushed after every update)")
    vllm_gpu_memory: float = option(0.3, "share of GPU memory the vLLM engine may take (generation_backend vllm)")
    threads: int = option(0, "torch CPU threads (0: auto — 1 for models under 30M parameters, which gain nothing "
                             "from threads and slow down badly on shared cores; torch's default for larger ones; "
                             "OMP_NUM_THREADS, when set, is respected)")
    fsdp: bool = option(False, "shard the transformer layers' weights, gradients and optimizer state across "
                               "processes (FSDP2; launch with torchrun)")


@dataclass(frozen=True)
class EnvConfig:
    env: str = option("covgym/Arithmetic-v0", "environment id (see `covgym envs`)")
    env_kwargs: dict = option({}, "keyword arguments for gymnasium.make, as JSON")


@dataclass(frozen=True)
class RolloutConfig:
    prompts_per_step: int = option(0, "distinct prompts (groups) per training step (0: auto — 16 for the tiny "
                                      "model, 8 for any other, sized for a CPU)")
    group_size: int = option(0, "responses sampled per prompt, G (0: auto — 8 for the tiny model, 4 for any other)")
    max_new_tokens: int = option(16, "max tokens the policy generates per turn")
    temperature: float = option(1.0, "sampling temperature (also used for scoring and entropy)")
    top_p: float = option(1.0, "nucleus sampling threshold")
    max_turns: int = option(16, "cap on policy turns in multi-turn environments")
    max_total_tokens: int = option(1024, "cap on an episode's total tokens (prompt + all turns)")
    filter_equal_groups: bool = option(False, "drop groups whose rewards are all equal (paper's recipe)")
    grading_deadline_s: float = option(30.0, "seconds a step's grading may take in all (responses are graded in "
                                             "parallel); those not graded by then score 0 and are counted in "
                                             "grading_timeouts (0: no deadline, graded one after another)")


@dataclass(frozen=True)
class OptimConfig:
    lr: float = option(0.0, "learning rate (0: auto — 1e-4 for the tiny model, 5e-4 for tiny-digits, 1e-6 "
                            "otherwise)")
    weight_decay: float = option(0.0, "AdamW weight decay")
    grad_clip: float = option(1.0, "max gradient norm (0: no clipping)")
    ppo_epochs: int = option(1, "passes over each rollout")
    mini_batches: int = option(0, "optimizer steps per pass over a rollout (0: auto — 4 for every algorithm, so "
                                  "methods compared at their defaults get the same update budget)")
    minibatch_by_group: bool = option(True, "cut mini-batches along prompt groups, so that a prompt repeated "
                                            "across its group is computed once per update (false: random rows)")
    warmup_steps: int = option(0, "linear learning-rate warm-up, in training steps")
    max_consecutive_skips: int = option(5, "stop after this many consecutive updates skipped as non-finite")


@dataclass(frozen=True)
class TrainConfig:
    """The whole run. ``algo_params`` holds the chosen algorithm's hyperparameters (its own names)."""

    algo: str = option("grpo", "algorithm (see `covgym algos`)")
    algo_params: dict = option({}, "algorithm hyperparameters, as JSON (or use the per-hyperparameter flags)")
    steps: int = option(50, "training steps (one rollout + its updates each)")
    seed: int = option(0, "run seed: every random choice derives from it and the step")
    run_dir: str = option("", "run directory (default: runs/<algo>-<env>-<time>)")
    save_every: int = option(0, "checkpoint every N steps (0: only at the end)")
    keep_checkpoints: int = option(2, "checkpoints kept (oldest deleted first)")
    eval_every: int = option(0, "held-out evaluation every N steps (0: only before and after)")
    eval_problems: int = option(-1, "held-out problems per evaluation (0: none; -1: auto — 64 for the tiny model, "
                                    "16 for any other)")
    eval_samples: int = option(4, "samples per held-out problem (pass@k uses all of them)")
    entropy_dynamics: bool = option(True, "measure predicted vs actual entropy change of the first and the last "
                                          "optimizer step of a training step (two extra forward passes each)")
    entropy_dynamics_every: int = option(1, "measure the entropy dynamics on every N-th training step (the probe "
                                            "costs about a third of an update on the tiny models)")
    samples_per_step: int = option(4, "rollouts stored per step in samples.jsonl, with prompt, reward, grade and "
                                      "per-token entropy (read them with `covgym show RUN`; 0: none)")
    samples_every: int = option(1, "store samples on every N-th training step (and at every evaluation)")
    samples_max_mb: float = option(16.0, "cap on samples.jsonl in MiB; later samples are dropped with a warning")
    dead_signal_steps: int = option(5, "warn when this many steps in a row had no reward variance in any group "
                                       "(nothing to learn from; 0: never)")
    tensorboard: bool = option(True, "also write TensorBoard events when tensorboard is installed")
    progress: bool = option(True, "show a progress bar")
    plugins: list = option([], "modules or .py files imported before any name is resolved (--plugin, repeatable; "
                               "files recorded as absolute paths so --resume imports them again)")
    model: ModelConfig = field(default_factory=ModelConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


SECTIONS = {"model": ModelConfig, "env": EnvConfig, "rollout": RolloutConfig, "optim": OptimConfig}


def _section_of() -> dict[str, str]:
    """Field name -> the section that holds it (``lr`` -> ``optim``; ``model``/``env`` name both a section and
    a field of it)."""
    return {f.name: name for name, section in SECTIONS.items() for f in dataclasses.fields(section)}


def nest_flat_keys(data: dict[str, Any]) -> dict[str, Any]:
    """The nested form of a config whose section keys may also sit at the top level.

    ``{"lr": 1e-4}`` and ``{"optim": {"lr": 1e-4}}`` mean the same (as ``--lr`` does on the command line); a
    top-level ``model: PATH`` or ``env: ID`` (not a mapping) is the section's own field. A key given both ways
    with different values is an error; unknown keys are left for ``from_dict`` to report.
    """
    owners = _section_of()
    flat = {key: value for key, value in data.items()
            if key in owners and not (key in SECTIONS and isinstance(value, dict))}  # env_kwargs: a dict, yet flat
    nested = {key: dict(value) if isinstance(value, dict) else value for key, value in data.items() if key not in flat}
    for key, value in flat.items():
        section = owners[key]
        inner = nested.get(section, {})
        if not isinstance(inner, dict):
            continue  # from_dict names the bad section
        if key in inner and inner[key] != value:
            raise ConfigError(f"{key} is given twice, at the top level ({value!r}) and under {section} "
                              f"({inner[key]!r}); keep one")
        nested[section] = {**inner, key: value}
    return nested


def _where_it_belongs(key: str, here: str | None) -> str:
    """A hint for an unknown config key ``key`` found in section ``here`` (None: the top level)."""
    import difflib

    owners = _section_of()
    top = {f.name for f in dataclasses.fields(TrainConfig)} - set(SECTIONS)
    if key in owners and owners[key] != here:
        return f"it belongs under {owners[key]} (or at the top level)"
    if key in top:
        return "it belongs at the top level"
    try:  # the hyperparameters of every registered algorithm
        import covgym.algorithms as algorithms

        owners_of = algorithms.hyperparameter_index().get(key, (None, []))[1]
    except Exception:  # noqa: BLE001 - a hint must never turn one error into another
        owners_of = []
    if owners_of:
        return f"it is a hyperparameter of {', '.join(owners_of)}: put it under algo_params"
    close = difflib.get_close_matches(key, sorted(set(owners) | top), n=1)
    return f"did you mean {close[0]!r}?" if close else "see `covgym train --help` for the keys"


def from_dict(data: dict[str, Any]) -> TrainConfig:
    """Build a config from a (possibly partial) dict, nested or flat, rejecting unknown keys with where they
    belong."""
    data = nest_flat_keys(data)
    top_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - top_fields)
    if unknown:
        raise ConfigError("unknown config key(s): " + "; ".join(f"{key} ({_where_it_belongs(key, None)})"
                                                                 for key in unknown))
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key in SECTIONS:
            section = SECTIONS[key]
            if not isinstance(value, dict):
                raise ConfigError(f"config section {key!r} must be a mapping")
            names = {f.name for f in dataclasses.fields(section)}
            bad = sorted(set(value) - names)
            if bad:
                raise ConfigError(f"unknown key(s) in config section {key!r}: "
                                  + "; ".join(f"{name} ({_where_it_belongs(name, key)})" for name in bad))
            kwargs[key] = section(**value)
        else:
            kwargs[key] = value
    return TrainConfig(**kwargs)


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON config file into a dict."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read config file {str(path)!r}: {error.strerror}") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    except Exception as error:  # noqa: BLE001 - any parser error becomes one readable line
        raise ConfigError(f"config file {str(path)!r} is not valid {path.suffix.lstrip('.') or 'JSON'}: "
                          f"{str(error).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top level")
    return data


def _check(condition: bool, name: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{name}: {message}")


def validate(config: TrainConfig) -> None:
    """Reject invalid values and inconsistent combinations before any work starts."""
    from covgym.algorithms import get as get_algorithm
    from covgym.algorithms import unread_hyperparameters
    from covgym.envs import is_registered, split_support_error, unknown_environment_message
    from covgym.train.plugins import load_plugins

    _check(isinstance(config.plugins, list) and all(isinstance(p, str) for p in config.plugins), "plugins",
           f"must be a list of module names or .py paths, got {config.plugins!r}")
    load_plugins(config.plugins)  # user code registers its envs and algorithms before their names are checked
    try:  # a registered name, a part, or parts joined by '+'
        algorithm_class = get_algorithm(config.algo)
    except KeyError as error:
        raise ConfigError(f"algo: {error.args[0]}") from None
    unread = unread_hyperparameters(config.algo, config.algo_params)  # ignored knobs are refused, not dropped
    _check(unread is None, "algo_params", unread or "")
    _check(is_registered(config.env.env), "env", unknown_environment_message(config.env.env))
    split_error = split_support_error(config.env.env)
    _check(split_error is None, "env", str(split_error))
    _check(isinstance(config.env.env_kwargs, dict), "env_kwargs", "must be a mapping")
    _check(config.steps >= 1, "steps", f"must be >= 1, got {config.steps}")
    _check(config.seed >= 0, "seed", f"must be >= 0 (every step's seeds derive from it), got {config.seed}")
    _check(config.samples_per_step >= 0, "samples_per_step", f"must be >= 0 (0: none), got {config.samples_per_step}")
    _check(config.samples_every >= 1, "samples_every", f"must be >= 1, got {config.samples_every}")
    _check(config.samples_max_mb > 0, "samples_max_mb", f"must be > 0, got {config.samples_max_mb}")
    _check(config.dead_signal_steps >= 0, "dead_signal_steps", f"must be >= 0 (0: never), got "
                                                                f"{config.dead_signal_steps}")
    _check(config.save_every >= 0, "save_every", f"must be >= 0, got {config.save_every}")
    _check(config.keep_checkpoints >= 1, "keep_checkpoints", f"must be >= 1, got {config.keep_checkpoints}")
    _check(config.eval_every >= 0, "eval_every", f"must be >= 0, got {config.eval_every}")
    _check(config.eval_problems >= -1, "eval_problems", f"must be >= 0 (or -1 = auto), got {config.eval_problems}")
    _check(config.eval_samples >= 1, "eval_samples", f"must be >= 1, got {config.eval_samples}")
    _check(config.entropy_dynamics_every >= 1, "entropy_dynamics_every",
           f"must be >= 1, got {config.entropy_dynamics_every}")
    r, o, m = config.rollout, config.optim, config.model
    _check(r.prompts_per_step >= 0, "prompts_per_step", f"must be >= 1 (or 0 = auto), got {r.prompts_per_step}")
    _check(r.group_size >= 0, "group_size", f"must be >= 1 (or 0 = auto), got {r.group_size}")
    _check(r.max_new_tokens >= 1, "max_new_tokens", f"must be >= 1, got {r.max_new_tokens}")
    _check(r.temperature > 0, "temperature", f"must be > 0, got {r.temperature}")
    _check(0 < r.top_p <= 1, "top_p", f"must be in (0, 1], got {r.top_p}")
    _check(r.max_turns >= 1, "max_turns", f"must be >= 1, got {r.max_turns}")
    _check(r.max_total_tokens >= 2, "max_total_tokens", f"must be >= 2, got {r.max_total_tokens}")
    _check(r.grading_deadline_s >= 0, "grading_deadline_s", f"must be >= 0 (0 = none), got {r.grading_deadline_s}")
    _check(o.lr >= 0, "lr", f"must be >= 0 (0 = auto), got {o.lr}")
    _check(o.weight_decay >= 0, "weight_decay", f"must be >= 0, got {o.weight_decay}")
    _check(o.grad_clip >= 0, "grad_clip", f"must be >= 0, got {o.grad_clip}")
    _check(o.ppo_epochs >= 1, "ppo_epochs", f"must be >= 1, got {o.ppo_epochs}")
    _check(o.mini_batches >= 0, "mini_batches", f"must be >= 0 (0 = auto), got {o.mini_batches}")
    _check(o.warmup_steps >= 0, "warmup_steps", f"must be >= 0, got {o.warmup_steps}")
    _check(o.max_consecutive_skips >= 1, "max_consecutive_skips", f"must be >= 1, got {o.max_consecutive_skips}")
    batch = r.prompts_per_step * r.group_size  # 0 while a size is still 'auto': checked again once resolved
    _check(batch == 0 or o.mini_batches <= batch, "mini_batches",
           f"{o.mini_batches} mini-batches cannot be cut from a rollout of {batch} sequences")
    _check(m.dtype in ("float32", "bfloat16", "float16"), "dtype", f"must be float32/bfloat16/float16, got {m.dtype}")
    _check(m.threads >= 0, "threads", f"must be >= 0 (0 = auto), got {m.threads}")
    _check(m.activation_budget_mb >= 0, "activation_budget_mb",
           f"must be >= 0 (0: no limit), got {m.activation_budget_mb}")
    _check(m.checkpoint_every_n_layers >= 1, "checkpoint_every_n_layers",
           f"must be >= 1, got {m.checkpoint_every_n_layers}")
    _check(m.checkpoint_every_n_layers == 1 or m.gradient_checkpointing, "checkpoint_every_n_layers",
           "is read only with gradient checkpointing on (add --gradient-checkpointing true)")
    _check(m.chat_template in ("auto", "on", "off"), "chat_template", f"must be auto/on/off, got {m.chat_template}")
    _check(m.generation_backend in ("hf", "vllm"), "generation_backend",
           f"must be hf or vllm, got {m.generation_backend!r}")
    _check(0 < m.vllm_gpu_memory < 1, "vllm_gpu_memory", f"must be in (0, 1), got {m.vllm_gpu_memory}")
    _check(not (m.fsdp and m.generation_backend == "vllm"), "generation_backend",
           "vllm holds a whole copy of the model, which fsdp is for avoiding; use --generation-backend hf with --fsdp")
    _check(m.device == "auto" or m.device == "cpu" or m.device.startswith("cuda"), "device",
           f"must be auto, cpu, cuda or cuda:N, got {m.device!r}")
    group_based = getattr(algorithm_class, "uses_groups", not algorithm_class.needs_critic)
    _check(not (group_based and r.group_size == 1), "group_size",
           f"{config.algo!r} compares responses within a group: a group size of 1 gives every response zero "
           f"advantage (use --group-size >= 2)")
    try:  # last: an algorithm's own checks may load torch, and plain config errors should answer at once
        algorithm_class(**config.algo_params)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"algo_params: {error}") from None
