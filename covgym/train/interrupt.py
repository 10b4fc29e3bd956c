"""What an interrupted run leaves behind, in words: the message must name what was saved, not assume it."""

from __future__ import annotations

import json
from pathlib import Path

from covgym.train.checkpoint import list_checkpoints


def _logged_steps(run_dir: Path) -> int:
    steps = 0
    try:
        for line in (run_dir / "metrics.jsonl").read_text().splitlines():
            try:
                steps = max(steps, int(json.loads(line).get("step", 0)))
            except (json.JSONDecodeError, TypeError, ValueError):
                continue
    except OSError:
        pass
    return steps


def interrupt_note(run_dir: str | Path) -> str:
    """One line for a run stopped by Ctrl-C: the last checkpoint (if any) and how to go on."""
    run_dir = Path(run_dir)
    checkpoints = list_checkpoints(run_dir) if run_dir.is_dir() else []
    logged = _logged_steps(run_dir)
    if checkpoints:
        step = checkpoints[-1][0]
        redo = f"; steps {step + 1}-{logged} of metrics.jsonl will be redone" if logged > step else ""
        return (f"interrupted; the checkpoint of step {step} in {run_dir} is intact{redo}: continue with "
                f"covgym train --resume {run_dir}")
    return (f"interrupted before the first checkpoint: {run_dir} holds no checkpoint to resume "
            f"({logged} step(s) in metrics.jsonl); start again with --overwrite, and use --save-every N to "
            f"checkpoint along the way")
