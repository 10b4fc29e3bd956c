"""Benchmark figures that need the whole sweep: pass@k curves per method with their 95 % intervals over seeds.

Colours and layout follow ``covgym.benchmark.plotting``: a method's colour comes from its name
(``covgym.benchmark.palette``), more than ``MAX_OVERLAY`` methods become small multiples over the baseline in grey,
and the legend sits below the panels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np


@dataclass
class PassAtK:
    """One method's pass@k curve from the sweep's table: k, mean and the seed interval (clipped to [0, 1])."""

    label: str
    ks: list[int]
    mean: np.ndarray
    low: np.ndarray | None
    high: np.ndarray | None
    seeds: int


def _curve(label: str, curve: dict[str, dict[str, Any]]) -> PassAtK | None:
    ks = sorted(int(k) for k in curve if curve[k]["mean"] is not None)
    if not ks:
        return None
    rows = [curve[str(k)] for k in ks]
    mean = np.array([row["mean"] for row in rows], dtype=float)
    low = [row.get("ci_low") for row in rows]
    high = [row.get("ci_high") for row in rows]
    if any(value is None for value in low + high):
        return PassAtK(label, ks, mean, None, None, int(rows[0].get("n", 1)))
    # pass@k is a probability: a t-interval can cross 0 or 1, the drawn band does not
    return PassAtK(label, ks, mean, np.clip(low, 0.0, 1.0), np.clip(high, 0.0, 1.0), int(rows[0].get("n", 1)))


def figure_pass_at_k(table: dict[str, dict[str, Any]], title: str):
    """pass@k against k (log scale) for every method of one env: after training as a line with its seed band,
    before training (shared by all methods of a seed) dashed in dark grey. None when no method has a curve."""
    from covgym.benchmark.palette import CONTEXT_GREY
    from covgym.benchmark.plotting import MAX_OVERLAY, _caption, _figure_legend, _method_panels, _multiples_figure

    curves = [c for c in (_curve(method, row.get("pass_at_k_curve") or {}) for method, row in table.items()) if c]
    if not curves:
        return None
    before = next((c for c in (_curve("before training", row.get("pass_at_k_before_curve") or {})
                               for row in table.values()) if c), None)

    def draw(ax, curve: PassAtK, color: str, name: str | None) -> int:
        gid = None if color == CONTEXT_GREY else f"method:{curve.label}"
        label = None if name is None else f"{name} (n={curve.seeds})"
        ax.plot(curve.ks, curve.mean, color=color, marker="o", markersize=3, label=label, gid=gid,
                zorder=1 if gid is None else 2)
        if curve.low is not None:
            ax.fill_between(curve.ks, curve.low, curve.high, color=color, alpha=0.15, linewidth=0, gid=gid)
        if before is not None:
            ax.plot(before.ks, before.mean, color="0.35", linestyle="--", linewidth=1.2, label="before training")
        ax.set_xscale("log", base=2)
        return 0

    figure, (container,) = _multiples_figure(1, len(curves), width=5.5, height=4.0)
    _method_panels(container, curves, draw, title, "k (samples per problem)", "held-out pass@k", ylim=(0, 1.02))
    _figure_legend(figure, neutral=len(curves) > MAX_OVERLAY)
    _caption(figure, "Bands: 95% interval across seeds, clipped to [0, 1].")
    return figure


def plot_pass_at_k(table: dict[str, dict[str, Any]], out: Path, title: str,
                   formats: Sequence[str] = ("png",)) -> list[Path]:
    """Write ``pass_at_k.<format>`` for one env's table (see ``figure_pass_at_k``); returns the paths written."""
    from covgym.benchmark.plotting import _save, _style

    with _style():
        figure = figure_pass_at_k(table, title)
        if figure is None:
            return []
        out.mkdir(parents=True, exist_ok=True)
        return _save(figure, out, "pass_at_k", formats)
