"""The mechanism testbed: ``covgym bench --suite mechanism``, where entropy collapse and its controls show.

The testbed is the ``tiny-digits`` model (the built-in architecture, warm-started on diverse, partly wrong
DigitSum demonstrations) on ``covgym/DigitSum-v0`` (math, single turn) and ``covgym/DigitSumFeedback-v0``
(multi-turn: a checker's feedback between attempts). Every problem has several correct answers, so there is
diversity to lose, and entropy sits in every free digit of a response. docs/benchmarks.md explains the design,
the defaults below and what the suite measured.

Fairness is by construction: every method of an environment shares the model, seeds, learning rate, prompts and
samples per step, mini-batches, epochs, response budget and evaluation (``BenchSpec``/``BenchEnv`` hold them once;
a method contributes only its own hyperparameters), and ``bench`` refuses a sweep whose resolved configs differ in
anything else.

The quick suite is sized for power, not breadth: ten seeds of the core comparison (GRPO, Clip-Cov, KL-Cov) on the
math task and of GRPO vs KL-Cov on the multi-turn task, every held-out evaluation on the same 512 distinct problems
with 16 samples each. ``--full`` runs every method on both tasks, four times as long (for the law's low-entropy
range), with 20 seeds. What made seeds cheap (benchmarks/tiny_step.py measures it): mini-batches cut by prompt
group (each prompt computed once per mini-batch), 2 mini-batches instead of 4, one thread per run, one evaluation
before training per environment (shared by every seed: the evaluation's problems and sampling seed are fixed), and
evaluation entropies read off the sampler instead of a second pass.

Method hyperparameters ("testbed defaults"). A rollout here is 16 prompts × 8 samples of 4–6 tokens, ≈ 650
response tokens, cut into 2 mini-batches of ≈ 320. The paper's selection ratios (2e-4, 2e-3) were set for
mini-batches of 10⁵–10⁶ tokens; at this size they round down to the one-token floor and do nothing. We keep the
*share of the free choices* acted on instead: about one response token in three is a free digit choice, and the
covariance methods act on 0.2 of all tokens (about half of the free choices' high-covariance tail). Clip-Cov's band
starts at 0 because the paper's lower bound 1 leaves almost no token of a 5-token answer eligible (the terms here
are O(0.1–1)). KL-Cov's β = 2 (the paper's 1 kept too little entropy in our trial runs). The entropy targets of the
controls sit below the warm start's ≈ 0.75 nats and above GRPO's end point; the schedules span the math task's run.
The multi-turn task pays ``retry_discount`` = 0.5 for a repaired answer: with equal pay GRPO reinforces a wrong
first attempt that was repaired as much as a right one, and held-out accuracy did not rise (docs/benchmarks.md).
"""

from __future__ import annotations

from covgym.benchmark.sweep import BenchEnv, BenchSpec

MECHANISM_MODEL = "tiny-digits"
MATH_STEPS = 80  # the quick suite's math runs; --full runs FULL_SCALE times longer (the law needs the low range)
AGENTIC_STEPS = 40
#: The multi-turn task's learning rate: at the math task's 5e-4 GRPO's held-out accuracy fell on some seeds
#: (0.47 → 0.31 on one of four); at 2e-4 it rose (docs/benchmarks.md).
AGENTIC_LR = 2e-4
FULL_SCALE = 4
QUICK_SEEDS = tuple(range(10))
FULL_SEEDS = tuple(range(20))
#: The quick suite: the core comparison on the math task, and GRPO vs KL-Cov on the multi-turn task.
QUICK_MATH_METHODS = ("grpo", "clip_cov", "kl_cov")
AGENTIC_METHODS = ("grpo", "kl_cov")
EVAL_PROBLEMS = 512  # distinct held-out problems per evaluation (of ≈ 600), each with EVAL_SAMPLES samples
EVAL_SAMPLES = 16

#: Method label -> the algorithm (``algo``, any ``--algo`` string) and its testbed hyperparameters.
MECHANISM_METHODS: dict[str, dict] = {
    "grpo": {"algo": "grpo"},
    "clip_cov": {"algo": "clip_cov", "clip_cov_ratio": 0.2, "clip_cov_lb": 0.0, "clip_cov_ub": 5.0},
    "kl_cov": {"algo": "kl_cov", "kl_cov_ratio": 0.2, "ppo_kl_coef": 2.0},
    "entropy_bonus": {"algo": "entropy_bonus", "entropy_coeff": 0.005},
    "entropy_bonus_0.05": {"algo": "entropy_bonus", "entropy_coeff": 0.05},
    "entropy_target": {"algo": "grpo+entropy_target", "entropy_target_value": 0.55, "entropy_target_gain_init": 5.0},
    "entropy_schedule": {"algo": "grpo+entropy_schedule", "entropy_schedule_start": 0.65,
                         "entropy_schedule_end": 0.35, "entropy_schedule_steps": MATH_STEPS},
    "adaptive_entropy": {"algo": "grpo+adaptive_entropy", "adaptive_entropy_target": 0.55,
                         "adaptive_entropy_coeff_step": 0.002, "adaptive_entropy_coeff_max": 0.05},
    "polarity_aware": {"algo": "grpo+polarity_aware"},  # covgym's formulation of PAPO (docs/algorithms.md)
    "high_entropy_tokens": {"algo": "grpo+high_entropy_tokens", "top_entropy_quantile": 0.2},
    "entrocraft": {"algo": "grpo+entrocraft", "entrocraft_lower_start": 0.6, "entrocraft_upper_start": 0.7,
                   "entrocraft_lower_end": 0.4, "entrocraft_upper_end": 0.5, "entrocraft_steps": MATH_STEPS},
    "passk": {"algo": "passk+ppo_clip", "passk_k": 4},
    "opefo": {"algo": "grpo+opefo"},
    "covariance_kernel": {"algo": "grpo+covariance_kernel"},
    "htpo": {"algo": "grpo+ppo_clip+htpo"},
}
#: Hyperparameters counted in training steps: scaled with the run length.
STEP_PARAMETERS = ("entropy_schedule_steps", "entrocraft_steps")


def mechanism_spec(full: bool = False, methods: tuple[str, ...] | None = None) -> BenchSpec:
    """The quick suite (the core comparison on the math task and GRPO vs KL-Cov on the multi-turn task, 10 seeds,
    about 15 minutes on 2 free cores) or, with ``full``, every method on both tasks, ``FULL_SCALE`` times longer
    (long enough for GRPO's entropy to reach the range where the law's exp and a line differ) and 20 seeds.
    ``methods`` keeps only those of ``MECHANISM_METHODS`` (on both tasks where the suite runs them there)."""
    unknown = [m for m in methods or () if m not in MECHANISM_METHODS]
    if unknown:
        raise ValueError(f"not a method of the mechanism suite: {', '.join(unknown)} (known: "
                         f"{', '.join(MECHANISM_METHODS)})")
    if methods is None:
        methods = tuple(MECHANISM_METHODS) if full else tuple(dict.fromkeys(QUICK_MATH_METHODS + AGENTIC_METHODS))
    methods = tuple(methods)
    scale = FULL_SCALE if full else 1
    params = {label: dict(MECHANISM_METHODS[label]) for label in methods}
    for values in params.values():
        for name in STEP_PARAMETERS:
            if name in values:
                values[name] = MATH_STEPS * scale
    agentic = None if full else tuple(m for m in methods if m in AGENTIC_METHODS)  # math: every method
    envs = (BenchEnv("covgym/DigitSum-v0", steps=MATH_STEPS * scale, max_new_tokens=10),
            BenchEnv("covgym/DigitSumFeedback-v0", steps=AGENTIC_STEPS * scale, max_new_tokens=10,
                     prompts_per_step=8, env_kwargs={"max_turns": 2, "retry_discount": 0.5}, lr=AGENTIC_LR,
                     methods=agentic))
    if agentic == ():
        envs = envs[:1]
    return BenchSpec(suite="mechanism-full" if full else "mechanism", methods=methods,
                     seeds=FULL_SEEDS if full else QUICK_SEEDS, envs=envs, method_params=params,
                     model=MECHANISM_MODEL, lr=5e-4, prompts_per_step=16, group_size=8, mini_batches=2,
                     eval_problems=EVAL_PROBLEMS, eval_samples=EVAL_SAMPLES, save_every=50, final_window=10,
                     baseline="grpo", law_window=5, entropy_dynamics_every=10)
