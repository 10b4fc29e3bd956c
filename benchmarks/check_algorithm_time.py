"""Wall time of ``covgym check-algorithm NAME`` (a fresh process, default examples) for every built-in algorithm.

Run with one thread, as a user's CI would on a small runner:
    OMP_NUM_THREADS=1 python benchmarks/check_algorithm_time.py --out benchmarks/results/check_algorithm_time
Writes ``time.json`` and ``time.md`` (seconds per algorithm, including interpreter and import start-up).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/check_algorithm_time")
    parser.add_argument("--names", nargs="*", help="algorithms to time (default: every registered one)")
    args = parser.parse_args()
    import covgym.algorithms as algorithms

    names = args.names or algorithms.names()
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    rows = []
    for name in names:
        start = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "covgym", "check-algorithm", name], capture_output=True, text=True,
                             env=env)
        rows.append({"algorithm": name, "seconds": round(time.perf_counter() - start, 2), "exit": run.returncode})
        print(f"{name}: {rows[-1]['seconds']} s (exit {run.returncode})", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"omp_num_threads": env["OMP_NUM_THREADS"], "cpus": os.cpu_count(), "python": sys.version.split()[0]}
    (out / "time.json").write_text(json.dumps({"meta": meta, "runs": rows}, indent=2) + "\n")
    lines = ["| algorithm | wall time (s) | exit |", "|---|---|---|"]
    lines += [f"| {r['algorithm']} | {r['seconds']} | {r['exit']} |" for r in rows]
    (out / "time.md").write_text(f"`covgym check-algorithm NAME`, default examples, {meta}\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
