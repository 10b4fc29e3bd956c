"""``covgym bench`` on the command line: its flags, the spec they select, and running the sweep.

Kept apart from ``sweep`` (the runner) so that the mechanism suite's spec, which is built from the runner's
``BenchSpec``, can be chosen here without an import cycle.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

from covgym.benchmark.mechanism import mechanism_spec
from covgym.benchmark.sweep import (RUN_RECORD, BenchSpec, aggregate_sweep, quick_spec, run_sweep, spec_from_dict,
                                    validate_spec)
from covgym.train.config import ConfigError, load_file


def _comma_list(kind: type) -> Any:
    def parse(text: str) -> tuple:
        try:
            items = tuple(kind(part.strip()) for part in text.split(",") if part.strip())
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        if not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
        return items

    return parse


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``covgym bench``: a config file and/or the sweep's main knobs (flags override the file)."""
    parser.add_argument("--config", metavar="FILE", help="YAML or JSON bench spec (keys: the fields of BenchSpec)")
    parser.add_argument("--suite", choices=("default", "mechanism"), default="default",
                        help="mechanism: the testbed where entropy collapse and its controls show (tiny-digits model, "
                             "DigitSum math + multi-turn tasks, GRPO / Clip-Cov / KL-Cov / entropy bonus and the "
                             "entropy controls, 3 seeds, about 15 minutes on 2 cores); default: the original suite")
    parser.add_argument("--full", action="store_true", help="with --suite mechanism: twice as long, 5 seeds, every "
                                                           "method on both tasks")
    parser.add_argument("--quick", action="store_true", help="a small sweep in minutes: 2 methods, 2 seeds, "
                                                            "a few small steps per env (default out: runs/bench-quick)")
    parser.add_argument("--out", metavar="DIR", help="sweep directory (default: runs/bench); re-running resumes it")
    parser.add_argument("--methods", type=_comma_list(str), metavar="A,B", help="algorithms, comma-separated")
    parser.add_argument("--seeds", type=_comma_list(int), metavar="0,1,2", help="seeds, comma-separated")
    parser.add_argument("--envs", type=_comma_list(str), metavar="ID,ID",
                        help="keep only these environments of the spec (ids or names such as Arithmetic-v0)")
    parser.add_argument("--steps", type=int, metavar="N", help="training steps for every environment")
    parser.add_argument("--model", metavar="PATH_OR_ALIAS", help="model (default: the built-in tiny model)")
    parser.add_argument("--device", metavar="DEVICE", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--entropy-threshold", type=float, metavar="X",
                        help="entropy threshold for the 'step H < X' column (a fraction of the first-step entropy "
                             "unless --absolute-threshold)")
    parser.add_argument("--absolute-threshold", action="store_true", help="read --entropy-threshold in nats")
    parser.add_argument("--aggregate-only", action="store_true", help="train nothing; rebuild the table and plots")
    parser.add_argument("--no-plots", action="store_true", help="skip the overlay plots")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--jobs", type=int, default=None, metavar="N",
                        help="runs in N processes at once, one torch thread each (default: 2 on a machine with 2 or "
                             "more cores for --suite mechanism, else 1)")
    parser.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: torch's own); on a "
                                                                 "machine shared with other jobs use 1")


def spec_from_args(args: argparse.Namespace) -> BenchSpec:
    """quick/default spec < --config file < flags."""
    if args.suite == "mechanism":
        if args.quick:
            raise ConfigError("--quick is a smoke test of the default suite; the mechanism suite is already sized "
                              "for minutes (add --full for the long version)")
        try:
            spec = mechanism_spec(full=args.full, methods=args.methods)
        except ValueError as error:
            raise ConfigError(f"--methods: {error}") from None
    elif args.full:
        raise ConfigError("--full goes with --suite mechanism")
    else:
        spec = quick_spec() if args.quick else BenchSpec()
    if args.config:
        spec = spec_from_dict(load_file(args.config), spec)
    changes: dict[str, Any] = {}
    for name in ("methods", "seeds", "model", "device", "entropy_threshold"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if "methods" in changes:  # a suite's settings for the methods left out are not needed
        changes["method_params"] = {m: p for m, p in spec.method_params.items() if m in changes["methods"]}
    if args.absolute_threshold:
        changes["relative_threshold"] = False
    from covgym.train.plugins import resolve  # a config file's plugin paths are relative to it; --plugin's to here

    changes["plugins"] = (tuple(resolve(p, Path(args.config).parent if args.config else None) for p in spec.plugins)
                          + tuple(resolve(p) for p in getattr(args, "plugin", None) or []))
    envs = spec.envs
    if args.envs:
        known = {e.env: e for e in envs} | {e.name: e for e in envs}
        missing = [e for e in args.envs if e not in known]
        if missing:
            raise ConfigError(f"--envs: {', '.join(missing)} not in the spec (has: {', '.join(e.env for e in envs)})")
        envs = tuple(known[e] for e in args.envs)
    if args.steps is not None:
        if args.steps < 1:
            raise ConfigError(f"--steps: must be >= 1, got {args.steps}")
        envs = tuple(dataclasses.replace(e, steps=args.steps) for e in envs)
    return dataclasses.replace(spec, envs=envs, **changes)


def run_bench_command(args: argparse.Namespace) -> int:
    """``covgym bench``: run (or resume) the sweep, then print the table and where the outputs are.

    Bad input raises ``ValueError`` (``ConfigError``) with one readable line, for the CLI to report.
    """
    spec = spec_from_args(args)
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads: must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    default_out = {"mechanism": "runs/bench-mechanism", "mechanism-full": "runs/bench-mechanism-full"}
    out = Path(args.out or default_out.get(spec.suite, "runs/bench-quick" if args.quick else "runs/bench"))
    if args.aggregate_only:
        validate_spec(spec)
        result = aggregate_sweep(spec, out, plots=not args.no_plots)
    else:
        per_env = ", ".join(f"{env.name}: {len(env.methods_of(spec))} methods" for env in spec.envs)
        runs = sum(len(env.methods_of(spec)) for env in spec.envs) * len(spec.seeds)
        print(f"covgym: bench: {runs} runs ({per_env}; × {len(spec.seeds)} seeds) -> {out}", file=sys.stderr)
        jobs = args.jobs if args.jobs is not None else (min(2, os.cpu_count() or 1) if args.suite == "mechanism"
                                                         else 1)
        result = run_sweep(spec, out, progress=not args.no_progress, plots=not args.no_plots, jobs=jobs)
        reused = sum(status == "done" for status in result.statuses.values())
        if reused:
            print(f"covgym: bench: {reused} finished run(s) reused", file=sys.stderr)
    print(result.markdown)
    print(f"summary: {out / 'summary.md'}\njson: {out / 'summary.json'}")
    if result.plots:
        print(f"plots: {out / 'plots'}")
    failed = sorted(name for name, status in result.statuses.items() if status == "failed")
    if failed:  # the table leaves them out: say so, and fail, rather than exit 0 on a partial or empty table
        print(f"covgym: bench: error: {len(failed)} of {len(result.statuses)} run(s) failed (first: "
              f"{out / failed[0]}; its {RUN_RECORD} holds the error)", file=sys.stderr)
        return 1
    return 0
