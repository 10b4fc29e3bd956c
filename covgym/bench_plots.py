"""Benchmark figures that need the whole sweep: pass@k curves per method with their 95 % intervals over seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


def plot_pass_at_k(table: dict[str, dict[str, Any]], out: Path, title: str,
                   formats: Sequence[str] = ("png",)) -> list[Path]:
    """pass@k against k (log scale) for every method of one env: after training as a line with its seed band,
    before training (shared by all methods of a seed) dashed in grey."""
    from covgym.plotting import _new_figure, _save, _style

    if not any(row.get("pass_at_k_curve") for row in table.values()):
        return []
    out.mkdir(parents=True, exist_ok=True)
    with _style():
        figure = _new_figure(1, width=5.5, height=4.0)
        axis = figure.add_subplot(1, 1, 1)
        before_drawn = False
        for method, row in table.items():
            curve = row.get("pass_at_k_curve") or {}
            ks = [int(k) for k in curve if curve[k]["mean"] is not None]
            if not ks:
                continue
            means = [curve[str(k)]["mean"] for k in ks]
            line, = axis.plot(ks, means, marker="o", markersize=3, label=f"{method} (n={row['pass_at_k_curve'][str(ks[0])]['n']})")
            lows = [curve[str(k)]["ci_low"] for k in ks]
            highs = [curve[str(k)]["ci_high"] for k in ks]
            if all(v is not None for v in lows + highs):
                axis.fill_between(ks, lows, highs, color=line.get_color(), alpha=0.15, linewidth=0)
            before = row.get("pass_at_k_before_curve") or {}
            if before and not before_drawn:
                bks = [int(k) for k in before if before[k]["mean"] is not None]
                axis.plot(bks, [before[str(k)]["mean"] for k in bks], color="0.4", linestyle="--",
                          label="before training")
                before_drawn = True
        axis.set_xscale("log", base=2)
        axis.set_xlabel("k (samples per problem)")
        axis.set_ylabel("held-out pass@k")
        axis.set_ylim(0, 1.02)
        axis.set_title(title)
        axis.legend(fontsize="small")
        return _save(figure, out, "pass_at_k", formats)
