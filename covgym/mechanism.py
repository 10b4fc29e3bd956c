"""The mechanism testbed: ``covgym bench --suite mechanism``, where entropy collapse and its controls show.

The testbed is the ``tiny-digits`` model (the built-in architecture, warm-started on diverse, partly wrong
DigitSum demonstrations) on ``covgym/DigitSum-v0`` (math, single turn) and ``covgym/DigitSumFeedback-v0``
(multi-turn, a checker's feedback between attempts). Every problem has many correct answers, so there is
diversity to lose, and entropy sits in several tokens of each response. docs/benchmarks.md explains the design
and the defaults below.

Fairness is by construction: every method of a suite shares the model, environments, seeds, learning rate,
prompts and samples per step, mini-batches, epochs and evaluation (``BenchSpec`` holds them once; a method
contributes only its own hyperparameters), and ``bench`` refuses a sweep whose resolved configs differ in
anything else.

Method hyperparameters ("testbed defaults"). A rollout here is 8 prompts × 8 samples of 6–8 tokens, ≈ 450
response tokens, cut into 4 mini-batches of ≈ 110 tokens. The paper's selection ratios (2e-4, 2e-3) were set for
mini-batches of ~10⁵–10⁶ tokens, of which a few hundred are selected; at 110 tokens they round down to the
one-token floor. We keep the *number of high-covariance tokens acted on per mini-batch* meaningful instead:
``clip_cov_ratio`` = ``kl_cov_ratio`` = 0.05 acts on ≈ 5 tokens per mini-batch (a few of the ≈ 30 free digit
choices in it), and Clip-Cov's band starts at 0 (the paper's lower bound 1 leaves almost no token of a 7-token
answer eligible; the covariance terms here are O(0.1–1)). KL-Cov's β = 1 is the paper's.
"""

from __future__ import annotations

from covgym.bench import BenchEnv, BenchSpec

MECHANISM_MODEL = "tiny-digits"
MATH_ENV = BenchEnv("covgym/DigitSum-v0", steps=60, max_new_tokens=10)
AGENTIC_ENV = BenchEnv("covgym/DigitSumFeedback-v0", steps=40, max_new_tokens=10)

#: Method label -> the algorithm (``algo``, any ``--algo`` string) and its testbed hyperparameters.
MECHANISM_METHODS: dict[str, dict] = {
    "grpo": {"algo": "grpo"},
    "clip_cov": {"algo": "clip_cov", "clip_cov_ratio": 0.05, "clip_cov_lb": 0.0, "clip_cov_ub": 5.0},
    "kl_cov": {"algo": "kl_cov", "kl_cov_ratio": 0.05, "ppo_kl_coef": 1.0},
    "entropy_bonus": {"algo": "entropy_bonus", "entropy_coeff": 0.005},
    "entropy_bonus_0.05": {"algo": "entropy_bonus", "entropy_coeff": 0.05},
}


def mechanism_spec(full: bool = False, methods: tuple[str, ...] | None = None) -> BenchSpec:
    """The quick suite (≤ 15 minutes on 2 cores for 3 seeds) or, with ``full``, longer runs and 5 seeds;
    ``methods`` keeps only those of ``MECHANISM_METHODS``."""
    methods = tuple(MECHANISM_METHODS) if methods is None else tuple(methods)
    unknown = [m for m in methods if m not in MECHANISM_METHODS]
    if unknown:
        raise ValueError(f"not a method of the mechanism suite: {', '.join(unknown)} (known: "
                         f"{', '.join(MECHANISM_METHODS)})")
    params = {label: dict(MECHANISM_METHODS[label]) for label in methods}
    envs = (MATH_ENV, AGENTIC_ENV)
    seeds: tuple[int, ...] = (0, 1, 2)
    if full:
        envs = tuple(BenchEnv(e.env, steps=e.steps * 3, max_new_tokens=e.max_new_tokens, env_kwargs=e.env_kwargs)
                     for e in envs)
        seeds = (0, 1, 2, 3, 4)
    return BenchSpec(suite="mechanism-full" if full else "mechanism", methods=methods, seeds=seeds, envs=envs,
                     method_params=params, model=MECHANISM_MODEL, lr=1e-3, prompts_per_step=8, group_size=8,
                     mini_batches=4, eval_problems=128, eval_samples=16, save_every=20, final_window=10,
                     baseline="grpo", law_window=3)
