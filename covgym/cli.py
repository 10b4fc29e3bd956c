"""``covgym`` command line: train, eval, show, warmstart, demo, envs, algos, plot, bench.

The CLI alone parses arguments and prints for people. Flags are generated from the config dataclasses and from
every registered algorithm's hyperparameters, so each default and help text lives in one place.
Usage errors exit with code 2 and one readable line; runtime failures with code 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

EXIT_USAGE = 2
EXIT_FAILURE = 1


class UsageError(ValueError):
    """Bad command-line input."""


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _parser_for(annotation: Any) -> Callable[[str], Any]:
    text = str(annotation)
    optional = "None" in text
    base: Callable[[str], Any]
    if "bool" in text:
        base = _parse_bool
    elif "int" in text:
        base = int
    elif "float" in text:
        base = float
    elif "dict" in text:
        base = _parse_json_mapping
    else:
        base = str

    def parse(value: str) -> Any:
        if optional and value.lower() == "none":
            return None
        try:
            return base(value)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def _parse_json_mapping(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r} ({error.msg})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _config_fields() -> list[tuple[str | None, dataclasses.Field]]:
    """(section or None, field) for every configurable field of ``TrainConfig``."""
    from covgym.train.config import SECTIONS, TrainConfig

    fields: list[tuple[str | None, dataclasses.Field]] = []
    for f in dataclasses.fields(TrainConfig):
        if f.name in SECTIONS:
            fields.extend((f.name, inner) for inner in dataclasses.fields(SECTIONS[f.name]))
        else:
            fields.append((None, f))
    return fields


def _algorithm_fields() -> dict[str, tuple[dataclasses.Field, list[str]]]:
    """Hyperparameter name -> (field, the parts and algorithms that read it), over everything registered."""
    import covgym.algorithms as algorithms

    return algorithms.hyperparameter_index()


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML or JSON config file (flags override it)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint "
                                                             "(its config.json is used; --steps may extend it)")
    parser.add_argument("--overwrite", action="store_true", help="clear the previous run in --run-dir first "
                                                                 "(without it or --resume, a non-empty run "
                                                                 "directory is refused)")
    parser.add_argument("--engine", choices=("covgym", "trl"), default="covgym",
                        help="training engine: covgym's own trainer, or TRL's GRPOTrainer running the same algorithm "
                             "(optional extra covgym[trl]; docs/scaling.md); both write the same run directory")
    group = parser.add_argument_group("run")
    config_names = set()
    for section, f in _config_fields():
        config_names.add(f.name)
        if f.name == "plugins":  # the repeatable --plugin, added to every command by build_parser
            continue
        target = group if section is None else parser.add_argument_group(section) if False else group
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        target.add_argument(_flag(f.name), dest=f.name, type=_parser_for(f.type), default=argparse.SUPPRESS,
                            metavar=f.name.upper(), help=f"{f.metadata.get('help', '')} (default: {default!r})")
    algo_group = parser.add_argument_group("algorithm hyperparameters (verl names; each applies to the algorithms "
                                           "listed)")
    for name, (f, owners) in sorted(_algorithm_fields().items()):
        if name in config_names:
            continue
        algo_group.add_argument(_flag(name), dest=f"algo__{name}", type=_parser_for(f.type),
                                default=argparse.SUPPRESS, metavar="VALUE",
                                help=f"{f.metadata.get('help', '')} [{', '.join(owners)}]")


def config_from_args(args: argparse.Namespace):
    """Defaults < --config file < flags; for --resume, the run's own config < flags."""
    from covgym.train.config import SECTIONS, from_dict, load_file, nest_flat_keys

    given = vars(args)
    if given.get("resume"):
        from covgym.train.run_dir import RESUMABLE_KEYS, check_partial_config
        from covgym.train.trainer import load_run_config

        base = load_run_config(given["resume"]).to_dict()
        base["run_dir"] = given["resume"]  # where the run is now, should its directory have moved
        allowed = {key.split(".")[-1] for key in RESUMABLE_KEYS} - {"run_dir"}
        changed = {k for k in given if k not in ("resume", "command", "func", "config", "verbose", "plugin",
                                                 "overwrite", "engine") and k not in allowed}
        if changed:
            raise UsageError(f"--resume continues a run with its own config; only {', '.join(sorted(allowed))} "
                             f"may be changed (got {', '.join(_flag(c) for c in sorted(changed))})")
        if given.get("config"):  # a config file given too must describe this run, not another one
            check_partial_config(given["resume"], load_file(given["config"]), f"--config {given['config']}")
    elif given.get("config"):
        base = nest_flat_keys(load_file(given["config"]))  # flat keys (lr: at the top) as well as nested ones
    else:
        base = {}
    data: dict[str, Any] = json.loads(json.dumps(base))
    data["plugins"] = _merged_plugins(given, data.get("plugins", []))
    sections = {f.name: s for s, f in _config_fields()}
    for key, value in given.items():
        if key in sections:
            section = sections[key]
            if section is None:
                data[key] = value
            else:
                data.setdefault(section, {})[key] = value
    algo_params = dict(data.get("algo_params", {}))
    for key, value in given.items():
        if key.startswith("algo__"):
            algo_params[key[len("algo__"):]] = value
    data["algo_params"] = algo_params
    config = from_dict(data)
    from covgym.train.plugins import load_plugins

    load_plugins(config.plugins)  # before the algorithm's name is looked up
    import covgym.algorithms as algorithms

    try:
        algorithms.get(config.algo)
    except KeyError:
        return config  # validation names the unknown algorithm
    flagged = {key[len("algo__"):] for key in given if key.startswith("algo__")}  # the rest came from a file
    unread = algorithms.unread_hyperparameters(config.algo, algo_params,
                                               lambda key: _flag(key) if key in flagged else key)
    if unread:  # a flag no chosen part reads would be silently ignored
        raise UsageError(unread)
    return config


def _merged_plugins(given: dict[str, Any], recorded: Any) -> list[str]:
    """The run's plugins: a config file's (paths relative to the file) or a resumed run's, then --plugin's."""
    from covgym.train.plugins import resolve

    if not isinstance(recorded, list):
        raise UsageError(f"plugins must be a list of module names or .py paths, got {recorded!r}")
    base = Path(given["config"]).parent if given.get("config") and not given.get("resume") else None
    plugins = [resolve(spec, base) for spec in recorded]
    extra = [resolve(spec) for spec in given.get("plugin", []) if resolve(spec) not in plugins]
    if extra and given.get("resume"):
        raise UsageError(f"--resume uses the plugins recorded in the run's config.json "
                         f"({', '.join(plugins) or 'none'}); got other --plugin {', '.join(extra)}")
    return plugins + extra


# ---------------------------------------------------------------------- commands
def cmd_train(args: argparse.Namespace) -> int:
    from covgym.train.config import validate

    config = config_from_args(args)
    validate(config)  # bad values answer before torch and transformers load
    if getattr(args, "engine", "covgym") == "trl":
        from covgym.adapters.trl import require

        require("trl")
        from covgym.adapters.trl_run import train_with_trl

        print(f"covgym: training {config.algo} on {config.env.env} through TRL", file=sys.stderr)
        result = train_with_trl(config, resume=bool(args.resume), overwrite=args.overwrite)
        if os.environ.get("RANK", "0") == "0":  # under accelerate launch, one table
            _print_summary(result)
        return 0
    if args.resume and (Path(args.resume) / "trl.json").exists():
        raise UsageError(f"{args.resume} was trained with --engine trl; resume it with --engine trl")
    from covgym.train.trainer import Trainer

    trainer = Trainer(config, resume=bool(args.resume), overwrite=args.overwrite)
    if trainer.is_main:
        print(f"covgym: training {config.algo} on {config.env.env} -> {trainer.run_dir}", file=sys.stderr)
    try:
        result = trainer.train()
    except KeyboardInterrupt:
        from covgym.train.interrupt import interrupt_note

        raise KeyboardInterrupt(interrupt_note(trainer.run_dir)) from None
    if trainer.is_main:  # under torchrun, one table, not one per rank
        _print_summary(result)
    return 0


def _print_summary(result) -> None:
    history = result.history
    if not history:
        print(f"nothing to do: the run in {result.run_dir} already has all its steps")
        return
    first, last = history[0], history[-1]
    rows = [("reward (train)", first["reward_mean"], last["reward_mean"]),
            ("token entropy (train)", first["entropy_mean"], last["entropy_mean"])]
    if result.eval_before and result.eval_after:
        rows.insert(0, ("held-out accuracy", result.eval_before["accuracy"], result.eval_after["accuracy"]))
        rows.insert(1, ("held-out entropy", result.eval_before["entropy_mean"], result.eval_after["entropy_mean"]))
    print(f"\n{'':24}{'before':>10}{'after':>10}")
    for name, before, after in rows:
        print(f"{name:24}{before:>10.3f}{after:>10.3f}")
    print(f"\nrun directory: {result.run_dir}")


def cmd_eval(args: argparse.Namespace) -> int:
    import gymnasium as gym  # noqa: F401

    from covgym.envs import is_registered, split_support_error, unknown_environment_message
    from covgym.models.policy import Policy, SamplingParams
    from covgym.train.evaluation import EvalSpec, evaluate

    if not is_registered(args.env):
        raise UsageError(unknown_environment_message(args.env))
    if split_support_error(args.env):
        raise UsageError(split_support_error(args.env))
    for name in ("problems", "samples", "max_new_tokens"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.temperature <= 0:
        raise UsageError(f"--temperature must be > 0, got {args.temperature}")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    if args.samples_file and Path(args.samples_file).exists():
        raise UsageError(f"--samples-file {args.samples_file!r} exists; choose another path (nothing is overwritten)")
    policy = Policy.from_pretrained(args.model, temperature=args.temperature)
    from covgym.models.threads import apply_threads

    apply_threads(0, policy.model, policy.device)  # a small model: one thread, as in training
    spec = EvalSpec(args.env, _parse_json_mapping(args.env_kwargs), args.problems, args.samples, args.seed)
    batches: list = []
    result = evaluate(policy, spec, SamplingParams(args.temperature, args.top_p, args.max_new_tokens),
                      first_batch_out=batches if args.samples_file else None)
    for key, value in result.items():
        print(f"{key:24}{value:.4f}")
    if args.samples_file:
        from covgym.train.samples import episode_records

        rows = list(range(0, batches[0].batch_size, args.samples))[:8]  # each of the first problems' first sample
        records = episode_records(batches[0], lambda i: policy.tokenizer.decode([i]), rows, 0, "test", policy.decode)
        Path(args.samples_file).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        print(f"samples: {args.samples_file} (read with covgym show {args.samples_file})")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from covgym.train.show import show

    try:
        show(args.run, step=args.step, split=args.split, colour=args.color)
    except BrokenPipeError:  # `covgym show RUN | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def cmd_envs(args: argparse.Namespace) -> int:
    from covgym.envs import describe

    for env_id, description in describe().items():
        print(f"{env_id:32}{description}")
    return 0


def cmd_algos(args: argparse.Namespace) -> int:
    import covgym.algorithms as algorithms

    def show(name: str, cls: type, label: str = "") -> None:
        print(f"  {name:20}{label}{cls.description}")
        if args.verbose:
            for f in dataclasses.fields(cls):
                print(f"      {_flag(f.name):28}{f.default!r:>12}  {f.metadata.get('help', '')}")

    for kind, title in (("estimator", "advantage estimators"), ("loss", "policy losses"),
                        ("control", "entropy controls")):
        print(f"{title}:")
        for name in algorithms.part_names(kind):
            show(name, algorithms.part(name))
    print("presets and registered algorithms (compose parts with '+', e.g. --algo rloo+kl_cov):")
    for name in algorithms.names():
        recipe = algorithms.preset_parts(name)
        show(name, algorithms.get(name), f"= {'+'.join(recipe[0])}: " if recipe else "")
    if args.verbose:
        print("every algorithm also reads: --use-kl-loss, --kl-loss-coef, --kl-loss-type")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from covgym.benchmark.plotting import plot_runs

    for run_dir in args.run_dirs:
        if not (Path(run_dir) / "metrics.jsonl").exists():
            raise UsageError(f"{run_dir!r} is not a run directory (no metrics.jsonl)")
    from covgym.benchmark.fairness import unfair_comparison_note

    note = unfair_comparison_note(args.run_dirs)
    if note:
        print(f"covgym: plot: warning: {note}")
    labels = None if args.labels is None else [label.strip() for label in args.labels.split(",")]
    if labels is not None and len(labels) != len(args.run_dirs):
        raise UsageError(f"--labels has {len(labels)} entries for {len(args.run_dirs)} run directories")
    try:
        paths = plot_runs(args.run_dirs, args.out, labels=labels, formats=args.format, note=note)
    except ValueError as error:
        raise UsageError(str(error)) from None
    for path in paths:
        print(path)
    return 0


def cmd_check_algorithm(args: argparse.Namespace) -> int:
    import covgym.algorithms as algorithms
    from covgym.testing import check_algorithm

    if args.max_examples < 1:
        raise UsageError(f"--max-examples must be >= 1, got {args.max_examples}")
    algorithm_class = algorithms.get(args.name)  # an unknown name is a KeyError: one line, exit 2
    try:
        algorithm = algorithm_class(**args.params)
    except TypeError as error:
        raise UsageError(f"--params: {error}") from None
    try:
        passed = check_algorithm(algorithm, max_examples=args.max_examples, seed=args.seed)
    except AssertionError as error:
        print(f"covgym: check-algorithm {args.name}: FAILED\n{error}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"{args.name}: passed {len(passed)} properties ({', '.join(passed)})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from covgym.demo import run_demo

    run_demo(steps=args.steps, run_dir=args.run_dir, seed=args.seed)
    return 0


def cmd_warmstart(args: argparse.Namespace) -> int:
    from covgym.envs import is_registered, unknown_environment_message
    from covgym.train.warmstart import build_warmstart

    if not is_registered(args.env):
        raise UsageError(unknown_environment_message(args.env))
    path = build_warmstart(args.env, _parse_json_mapping(args.env_kwargs), out=args.out, sft_steps=args.sft_steps,
                           label_noise=args.label_noise, seed=args.seed, plugins=getattr(args, "plugin", []),
                           show_progress=not args.no_progress)
    print(f"covgym: warm-started tiny model for {args.env}; train it with --model {path}", file=sys.stderr)
    print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="covgym", description="RL for language models with verifiable rewards, "
                                                                "built to study and control policy entropy.")
    parser.add_argument("--verbose", action="store_true", help="show warnings and full tracebacks")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    train = commands.add_parser("train", help="train a model with an algorithm against an environment",
                                description="Train; every run writes config.json, metrics.jsonl, checkpoints.")
    add_train_arguments(train)
    train.set_defaults(func=cmd_train)

    evaluation = commands.add_parser("eval", help="held-out accuracy and entropy of a model on an environment")
    evaluation.add_argument("--model", default="tiny", help="model directory, hub id, .gguf file, or alias")
    evaluation.add_argument("--env", default="covgym/Arithmetic-v0", help="environment id")
    evaluation.add_argument("--env-kwargs", default="{}", help="environment keyword arguments as JSON")
    evaluation.add_argument("--problems", type=int, default=128, help="held-out problems")
    evaluation.add_argument("--samples", type=int, default=4, help="samples per problem (pass@k)")
    evaluation.add_argument("--seed", type=int, default=12345, help="seed of the problem draw and sampling")
    evaluation.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    evaluation.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold")
    evaluation.add_argument("--max-new-tokens", type=int, default=32, help="max generated tokens per turn")
    evaluation.add_argument("--samples-file", default=None, metavar="FILE",
                            help="also store the first problems' samples (text, reward, grade, per-token entropy) "
                                 "as JSON lines, for `covgym show FILE`")
    evaluation.set_defaults(func=cmd_eval)

    demo = commands.add_parser("demo", help="build the tiny model, train it with GRPO, show before/after")
    demo.add_argument("--steps", type=int, default=None, help="training steps (default: the demo's own)")
    demo.add_argument("--run-dir", default="runs/demo", help="run directory")
    demo.add_argument("--seed", type=int, default=0, help="run seed")
    demo.set_defaults(func=cmd_demo)

    show = commands.add_parser("show", help="print a run's stored samples: prompt, response coloured by token "
                                            "entropy, reward and the grader's reason")
    show.add_argument("run", metavar="RUN_DIR_OR_FILE", help="run directory (its samples.jsonl) or a samples file")
    show.add_argument("--step", type=int, default=None, help="training step (default: the last stored; 0: the "
                                                             "evaluation before training)")
    show.add_argument("--split", choices=("all", "train", "test"), default="all",
                      help="training rollouts, held-out evaluation, or both")
    show.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                      help="colour tokens by entropy (auto: on a terminal, unless NO_COLOR is set)")
    show.set_defaults(func=cmd_show)

    warm = commands.add_parser("warmstart", help="build a tiny model for any env with an oracle_action, warm-started "
                                                 "on its own problems (near misses included) so RL can improve it",
                               description="Supervised warm start of the tiny architecture on transcripts the env's "
                                           "oracle_action plays, a share of them near misses; cached by spec. "
                                           "The last line printed is the model directory, for --model.")
    warm.add_argument("--env", required=True, help="environment id")
    warm.add_argument("--env-kwargs", default="{}", help="environment keyword arguments as JSON")
    warm.add_argument("--out", default=None, metavar="DIR", help="write the model here (default: the covgym cache)")
    warm.add_argument("--sft-steps", type=int, default=1500, metavar="N", help="supervised steps of 64 transcripts")
    warm.add_argument("--label-noise", type=float, default=0.4, metavar="X",
                      help="share of actions replaced by a near miss, so the model starts uncertain")
    warm.add_argument("--seed", type=int, default=0, help="seed of the transcripts and the initial weights")
    warm.add_argument("--no-progress", action="store_true", help="no progress bar")
    warm.set_defaults(func=cmd_warmstart)

    envs = commands.add_parser("envs", help="list the registered environments")
    envs.set_defaults(func=cmd_envs)
    algos = commands.add_parser("algos", help="list the registered algorithms")
    algos.add_argument("--verbose", "-v", action="store_true", help="also list each one's hyperparameters")
    algos.set_defaults(func=cmd_algos)

    bench = commands.add_parser("bench", help="benchmark methods x seeds x environments side by side",
                                description="Sweep methods, seeds and environments; aggregate into a table, "
                                            "JSON and overlay plots. Finished runs are not redone.")
    from covgym.benchmark.command import add_bench_arguments, run_bench_command

    add_bench_arguments(bench)
    bench.set_defaults(func=run_bench_command)

    plot = commands.add_parser("plot", help="figures of one or more runs, overlaid by method")
    plot.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories")
    plot.add_argument("--out", default=None, help="output directory (default: the run directory itself for one "
                                                  "run, <parent of the first run>/plots for several)")
    plot.add_argument("--format", default="png", metavar="FMT[,FMT]", help="figure formats: png, pdf, svg, "
                                                                          "comma-separated (default: png)")
    plot.add_argument("--labels", default=None, metavar="L1,L2,...",
                      help="one legend label per run directory; runs sharing a label are seeds of one method, "
                           "drawn as mean ± 95%% CI (default: runs whose config.json differ only in the seed)")
    plot.set_defaults(func=cmd_plot)

    check = commands.add_parser("check-algorithm", help="property-test an algorithm (masking, padding, finiteness, "
                                                       "advantages, the entropy law); exit 1 with a counterexample",
                                description="The algorithm counterpart of gymnasium's check_env: runs "
                                            "covgym.testing.check_algorithm on a registered (or --plugin) algorithm.")
    check.add_argument("name", metavar="NAME", help="algorithm name (see `covgym algos`)")
    check.add_argument("--params", type=_parse_json_mapping, default={}, metavar="JSON",
                       help="hyperparameters as a JSON object (default: the algorithm's defaults)")
    check.add_argument("--max-examples", type=int, default=20, metavar="N", help="hypothesis examples per property")
    check.add_argument("--seed", type=int, default=0, help="hypothesis seed (a failure replays with the same seed)")
    check.set_defaults(func=cmd_check_algorithm)
    for command in commands.choices.values():  # every command imports user code the same way
        command.add_argument("--plugin", action="append", default=argparse.SUPPRESS, metavar="MODULE_OR_FILE.py",
                             help="import a module or .py file first (it may register environments and "
                                  "algorithms); repeatable")
    return parser


def _preload_plugins(argv: Sequence[str]) -> None:
    """Import installed entry points and the plugins the command line names, before the parser is built.

    The parser has one flag per registered algorithm hyperparameter, so a plugin's algorithm must be registered
    first. Plugins come from --plugin, from a --config file's ``plugins`` and from a --resume run's config.json.
    """
    from covgym.train.plugins import load_entry_points, load_plugins

    load_entry_points()
    found: dict[str, list[str]] = {"--plugin": [], "--config": [], "--resume": []}
    tokens = list(argv)
    for index, token in enumerate(tokens):
        name, equals, value = token.partition("=")
        if name in found:
            if not equals:
                value = tokens[index + 1] if index + 1 < len(tokens) else ""
            if value:
                found[name].append(value)
    for path in found["--config"] + [str(Path(run) / "config.json") for run in found["--resume"]]:
        try:
            recorded = json.loads(Path(path).read_text()) if path.endswith(".json") else None
            if recorded is None:
                import yaml

                recorded = yaml.safe_load(Path(path).read_text())
        except Exception:  # noqa: BLE001 - an unreadable file is reported later, by the command, in its own words
            continue
        specs = recorded.get("plugins", []) if isinstance(recorded, dict) else []
        if isinstance(specs, list):
            load_plugins([str(spec) for spec in specs], base=Path(path).parent)
    load_plugins(found["--plugin"])


def _loaded_error_types(names: Sequence[str]) -> tuple[type[BaseException], ...]:
    """The classes ``module:Class`` of modules already imported: one never imported cannot have raised.

    Importing covgym.models.policy/trainer/checkpoint just to catch their errors would load torch for every command.
    """
    found = []
    for name in names:
        module_name, class_name = name.split(":")
        module = sys.modules.get(module_name)
        if module is not None:
            found.append(getattr(module, class_name))
    return tuple(found)


def main(argv: Sequence[str] | None = None) -> int:
    from covgym.train.config import ConfigError

    try:
        _preload_plugins(sys.argv[1:] if argv is None else argv)
    except ValueError as error:  # covgym.train.plugins.PluginError: a bad --plugin path or module
        if "--verbose" in (sys.argv[1:] if argv is None else argv):
            raise
        print(f"covgym: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    parser = build_parser()
    args = parser.parse_args(argv)
    verbose = getattr(args, "verbose", False)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="covgym: %(message)s")
    if not verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        if "transformers" in sys.modules:  # otherwise the variable above takes effect when it is imported
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()  # weight loading/saving bars drown covgym's own
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.formatwarning = lambda message, category, *rest: f"covgym: warning: {message}\n"
    try:
        return args.func(args)
    except (UsageError, ConfigError, KeyError, ValueError) as error:  # covgym.models.policy's ModelLoadError included
        if verbose:
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"covgym: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except _loaded_error_types(("covgym.train.checkpoint:CheckpointReadError",)) as error:  # bad input, like the rest
        if verbose:
            raise
        print(f"covgym: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except _loaded_error_types(("covgym.train.checkpoint:CheckpointError", "covgym.train.trainer:TrainingError")) as error:
        if verbose:
            raise
        print(f"covgym: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt as interrupt:  # cmd_train says what the run saved; elsewhere nothing was
        print(f"covgym: {interrupt.args[0] if interrupt.args else 'interrupted'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
