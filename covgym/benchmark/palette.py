"""One colour per method, the same in every figure of a run, a sweep and across sweeps.

A colour picked by a method's position in a list changes when the list does (clip_cov was orange in one figure
and red in the next); here it is a function of the method's name alone. The built-in methods have fixed,
distinct colours (GRPO, the baseline, is always black); any other name gets a colour from a hash of the name, kept
away from the fixed ones, the same in every process (Python's ``hash`` is salted per process, so it is not used).
"""

from __future__ import annotations

import colorsys
import hashlib

__all__ = ["BASELINE", "CONTEXT_GREY", "METHOD_COLORS", "MIN_DISTANCE", "canonical_method", "method_color"]

BASELINE = "grpo"
#: Drawn behind a highlighted method (other methods, the baseline in small multiples).
CONTEXT_GREY = "#b0b0b0"

#: Built-in method labels -> colour. Related methods get related hues (the two entropy bonuses are greens).
METHOD_COLORS: dict[str, str] = {
    "grpo": "#000000",
    "clip_cov": "#d62728",
    "kl_cov": "#1f77b4",
    "entropy_bonus": "#2ca02c",
    "entropy_bonus_0.05": "#7cb342",
    "entropy_target": "#ff7f0e",
    "entropy_schedule": "#8c564b",
    "adaptive_entropy": "#9467bd",
    "polarity_aware": "#17becf",
    "high_entropy_tokens": "#e377c2",
    "ppo": "#bcbd22",
    "clip_higher": "#f4a6a6",
    "entrocraft": "#5c3c92",
    "passk": "#f3c300",
    "opefo": "#a1caf1",
    "covariance_kernel": "#0b3d91",
    "htpo": "#b3446c",
    "rloo": "#008856",
    "dr_grpo": "#654522",
    "gpg": "#ff1493",
    "reinforce_pp": "#2b3d26",
    "quantile_baseline": "#ddcc77",
    "gspo": "#00a087",
    "cispo": "#8db600",
}
#: A name-derived colour stays at least this far (Euclidean, 0–255 RGB) from every fixed colour and the context grey,
#: so a user's method never looks like a built-in one drawn beside it.
MIN_DISTANCE = 50.0


def canonical_method(label: str) -> str:
    """The palette key of a label: lower case, and ``grpo+X`` read as ``X`` (the ``--algo`` spelling of a preset
    control), so ``covgym plot`` of a run named by its algo string gets the colour of the suite's label."""
    key = label.strip().lower()
    if key.startswith("grpo+") and key[len("grpo+"):] in METHOD_COLORS:
        key = key[len("grpo+"):]
    return "grpo" if key == "grpo+ppo_clip" else key


def method_color(label: str) -> str:
    """A method's colour as ``#rrggbb``: the fixed one of a built-in method, else one derived from the name.

    A derived colour starts at a hue drawn from the name's hash and steps round the colour wheel until it is
    ``MIN_DISTANCE`` away from every fixed colour and from ``CONTEXT_GREY``; saturation and value keep it away
    from grey and near-white.
    """
    key = canonical_method(label)
    if key in METHOD_COLORS:
        return METHOD_COLORS[key]
    digest = hashlib.sha256(key.encode()).digest()
    hue = digest[0] / 256 + digest[1] / 65536
    saturation = 0.6 + 0.35 * digest[2] / 255
    value = 0.55 + 0.3 * digest[3] / 255
    taken = [_rgb(colour) for colour in (*METHOD_COLORS.values(), CONTEXT_GREY)]
    best, best_distance = "", -1.0
    for step in range(97):  # 97 steps of a prime fraction visit hues all round the wheel
        rgb = tuple(round(255 * c) for c in colorsys.hsv_to_rgb((hue + step * 0.381966) % 1.0, saturation, value))
        distance = min(_distance(rgb, other) for other in taken)
        if distance > best_distance:
            best, best_distance = "#{:02x}{:02x}{:02x}".format(*rgb), distance
        if distance >= MIN_DISTANCE:
            break
    return best


def _rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def _distance(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    return sum((x - y) ** 2 for x, y in zip(a, b)) ** 0.5
