"""``check_algorithm``: property tests any algorithm must pass, the counterpart of gymnasium's ``check_env``.

An algorithm is anything with ``policy_loss(log_probs, old_log_probs, advantages, response_mask, entropy=None)
-> (loss, metrics)`` and ``advantages(batch) -> Tensor[B, T]`` (see ``covgym.algorithms``). The trainer relies on
invariants no type checker sees: tokens outside the response mask (prompt, tool output, padding) must not be
trained on, a batch's padding must not change the update, nothing may turn into inf/nan on inputs a real run
produces. ``check_algorithm`` searches for a violation with hypothesis and raises an ``AssertionError`` whose
message names the property and shows the smallest counterexample it found, with the tensors involved.

Properties (``PROPERTIES``):

- ``masked_gradient``: every position with ``response_mask == 0`` gets exactly zero gradient (log-probs and
  entropy), whatever finite values it holds.
- ``padding``: inserting padding rows and columns (mask 0, arbitrary finite values) changes neither the loss nor
  the gradient of the original positions. A loss that divides by the padded length (``loss_agg_mode
  "seq-mean-token-sum-norm"`` with ``loss_scale_factor=None``, Dr. GRPO's default) must scale by exactly ``T/T'``.
- ``extreme_inputs``: finite loss, gradient and metrics for valid but extreme inputs (log-probs near 0 and
  far below it, log-ratios of ±30, advantages up to 1e3, empty masks, float32 and float64).
- ``metrics``: ``metrics`` is a dict of finite floats keyed by strings.
- ``advantages_masked``: ``advantages(batch)`` is ``[B, T]``, finite, and zero outside the response mask.
- ``group_invariants``: only those the algorithm declares in ``advantage_invariants`` (on itself or on one of
  its parts): ``"zero_mean_per_group"`` (the per-sequence advantages of a group of two or more sum to 0) and
  ``"shift_invariant"`` (adding a constant to one group's rewards changes no advantage).
- ``entropy_law``: on an exact tabular softmax policy, one small SGD step of the algorithm's loss on the logits,
  ``Δz``, changes each state's entropy by ``−Cov_{a∼π}(log π(a), Δz(a))`` up to second order: the remainder
  shrinks four-fold when the step is halved (Cui et al. 2025, Lemma 1; ``docs/entropy.md``). The identity holds
  for any small ``Δz``; the property checks that the algorithm runs end to end on an exact policy (advantages,
  loss, autograd on one-token float64 responses) and gives a finite step that obeys it.
- Direction (``docs/extending.md``): ``improvement`` (on two-armed bandits whose group is the policy, one step
  never lowers expected reward and raises it when it moves), ``gradient_flows`` (the on-policy mini-batch gets a
  gradient), ``ratio_only`` (the gradient is unchanged when log_probs, old and ref log-probs shift together),
  ``clip`` (no gradient past a declared ``token_ratio`` clip in the advantage's direction), ``token_weights``
  (>= 0) and ``entropy_effect`` (a control's declared effect on entropy, against the algorithm without it).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from hypothesis import HealthCheck, Verbosity, given
from hypothesis import seed as hypothesis_seed
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisException

from covgym.core.batch import RolloutBatch

INVARIANTS = ("zero_mean_per_group", "shift_invariant")
LOSS_FIELDS = ("log_probs", "old_log_probs", "advantages", "response_mask", "entropy", "ref_log_probs")


# ------------------------------------------------------------------------------------------ helpers
def _label(algorithm: Any) -> str:
    return str(getattr(algorithm, "name", "") or type(algorithm).__name__)


def instantiate(algorithm: Any) -> Any:
    """An algorithm instance from a registered name, a class (default hyperparameters) or an instance."""
    if isinstance(algorithm, str):
        import covgym.algorithms as algorithms

        return algorithms.get(algorithm)()
    if isinstance(algorithm, type):
        return algorithm()
    if not callable(getattr(algorithm, "policy_loss", None)) or not callable(getattr(algorithm, "advantages", None)):
        raise TypeError(f"{algorithm!r} is not an algorithm: it needs policy_loss(...) and advantages(batch)")
    return algorithm


def _declared(algorithm: Any, attribute: str, default: Any = None) -> Any:
    """``attribute`` of the algorithm, else of the first of its parts (attribute values) that has it."""
    if hasattr(algorithm, attribute):
        return getattr(algorithm, attribute)
    for part in list(getattr(algorithm, "__dict__", {}).values()) + list(getattr(algorithm, "parts", None) or []):
        if hasattr(part, attribute) and not isinstance(part, (torch.Tensor, str, int, float)):
            return getattr(part, attribute)
    return default


def _normalises_by_padded_length(algorithm: Any) -> bool:
    return (_declared(algorithm, "loss_agg_mode") == "seq-mean-token-sum-norm"
            and _declared(algorithm, "loss_scale_factor", 0) is None)


def _show(tensor: torch.Tensor) -> str:
    return str([[float(f"{v:.4g}") for v in row] for row in tensor.detach().double().tolist()])


def _show_inputs(inputs: dict[str, torch.Tensor]) -> str:
    return "\n".join(f"    {name} = {_show(inputs[name])}" for name in LOSS_FIELDS if name in inputs)


def _call_loss(algorithm: Any, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict, torch.Tensor,
                                                                           torch.Tensor]:
    """``(loss, metrics, d loss/d log_probs, d loss/d entropy)``, with the algorithm's RNG reset (replayable)."""
    if callable(getattr(algorithm, "set_generator", None)):
        algorithm.set_generator(torch.Generator().manual_seed(0))
    log_probs = inputs["log_probs"].detach().clone().requires_grad_(True)
    entropy = inputs["entropy"].detach().clone().requires_grad_(True)
    extra = {}
    if "ref_log_probs" in inspect.signature(algorithm.policy_loss).parameters:
        extra["ref_log_probs"] = inputs["ref_log_probs"]
    try:
        loss, metrics = algorithm.policy_loss(log_probs, inputs["old_log_probs"], inputs["advantages"],
                                              inputs["response_mask"], entropy=entropy, **extra)
    except Exception as error:  # noqa: BLE001 - any exception is a counterexample too
        raise AssertionError(f"policy_loss raised {type(error).__name__}: {error}") from None
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        raise AssertionError(f"policy_loss must return a scalar tensor as its loss, got {loss!r}")
    if loss.requires_grad:
        grads = torch.autograd.grad(loss, [log_probs, entropy], allow_unused=True)
    else:
        grads = (None, None)
    grad_lp, grad_h = (torch.zeros_like(log_probs) if g is None else g for g in grads)
    return loss.detach(), metrics, grad_lp, grad_h


# ------------------------------------------------------------------------------------------ loss inputs
@dataclass(frozen=True)
class LossCase:
    """One mini-batch of policy-loss inputs, regenerated from ``seed`` (so a counterexample is short)."""

    mask: tuple[tuple[int, ...], ...]
    seed: int
    move: float  # typical |log π − log π_old|: 0 is the on-policy first mini-batch

    def tensors(self, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        mask = torch.tensor(self.mask, dtype=dtype)
        b, t = mask.shape

        def normal() -> torch.Tensor:
            return torch.randn(b, t, generator=generator, dtype=torch.float64).to(dtype)

        def uniform() -> torch.Tensor:
            return torch.rand(b, t, generator=generator, dtype=torch.float64).to(dtype)

        old = -3 * uniform()
        log_probs = torch.clamp(old + self.move * normal(), max=0.0)
        return {"log_probs": log_probs, "old_log_probs": old, "advantages": 2 * normal(), "response_mask": mask,
                "entropy": 2 * uniform(), "ref_log_probs": torch.clamp(old + 0.3 * normal(), max=0.0)}


@st.composite
def loss_cases(draw: Callable) -> LossCase:
    b, t = draw(st.integers(1, 4)), draw(st.integers(1, 6))
    rows = draw(st.lists(st.lists(st.integers(0, 1), min_size=t, max_size=t), min_size=b, max_size=b))
    return LossCase(tuple(tuple(row) for row in rows), draw(st.integers(0, 2**31 - 1)),
                    draw(st.sampled_from([0.0, 0.1, 0.5])))


def _check_metrics(metrics: Any) -> None:
    if not isinstance(metrics, dict):
        raise AssertionError(f"policy_loss must return a dict of metrics, got {type(metrics).__name__}")
    for key, value in metrics.items():
        if not isinstance(key, str):
            raise AssertionError(f"metric key {key!r} is not a string")
        if not isinstance(value, (float, int)) or isinstance(value, bool):
            raise AssertionError(f"metric {key!r} is {type(value).__name__} {value!r}, not a float "
                                 f"(convert tensors with float(...))")
        if not math.isfinite(value):
            raise AssertionError(f"metric {key!r} is {value}")


def check_masked_gradient(algorithm: Any, case: LossCase) -> None:
    inputs = case.tensors()
    _, _, grad_lp, grad_h = _call_loss(algorithm, inputs)
    masked = inputs["response_mask"] == 0
    for name, grad in (("log_probs", grad_lp), ("entropy", grad_h)):
        leaks = torch.nonzero(masked & (grad != 0))
        if leaks.numel():
            i, j = leaks[0].tolist()
            raise AssertionError(f"d loss / d {name}[{i}, {j}] = {float(grad[i, j]):.4g} but response_mask[{i}, {j}] "
                                 f"= 0 ({leaks.shape[0]} masked position(s) get gradient)\n"
                                 f"  gradient of {name} = {_show(grad)}\n  inputs ({case}):\n{_show_inputs(inputs)}")


@st.composite
def padding_cases(draw: Callable) -> tuple[LossCase, int, int, int, float]:
    case = draw(loss_cases())
    return (case, draw(st.integers(0, 2)), draw(st.integers(0, 2)), draw(st.integers(0, 2**31 - 1)),
            draw(st.sampled_from([0.0, 1.0, -30.0, 1e3])))


def check_padding(algorithm: Any, padding: tuple[LossCase, int, int, int, float]) -> None:
    case, extra_rows, extra_cols, place_seed, fill = padding
    inputs = case.tensors()
    loss, _, grad_lp, grad_h = _call_loss(algorithm, inputs)
    b, t = inputs["response_mask"].shape
    generator = torch.Generator().manual_seed(place_seed)
    rows = torch.sort(torch.randperm(b + extra_rows, generator=generator)[:b]).values
    cols = torch.sort(torch.randperm(t + extra_cols, generator=generator)[:t]).values
    padded = {}
    for name, value in inputs.items():
        value_fill = {"response_mask": 0.0, "entropy": abs(fill), "advantages": fill}.get(name, min(fill, 0.0))
        big = torch.full((b + extra_rows, t + extra_cols), value_fill, dtype=value.dtype)
        big[rows[:, None], cols[None, :]] = value
        padded[name] = big
    padded_loss, _, padded_lp, padded_h = _call_loss(algorithm, padded)
    scale = t / (t + extra_cols) if _normalises_by_padded_length(algorithm) else 1.0
    where = (f"padding: {extra_rows} row(s) and {extra_cols} column(s) filled with {fill} (mask 0); original rows "
             f"{rows.tolist()}, columns {cols.tolist()}\n  inputs ({case}):\n{_show_inputs(inputs)}")
    if not torch.allclose(padded_loss, loss * scale, rtol=1e-7, atol=1e-10):
        expected = f"{float(loss):.10g}" + (f" × {t}/{t + extra_cols} (the loss divides by the padded length)"
                                            if scale != 1.0 else "")
        raise AssertionError(f"loss {float(padded_loss):.10g} with padding, expected {expected}\n  {where}")
    for name, grad, padded_grad in (("log_probs", grad_lp, padded_lp), ("entropy", grad_h, padded_h)):
        inside = padded_grad[rows[:, None], cols[None, :]]
        if not torch.allclose(inside, grad * scale, rtol=1e-6, atol=1e-10):
            raise AssertionError(f"gradient of {name} changes with padding: {_show(inside)} vs {_show(grad * scale)}"
                                 f"\n  {where}")
        outside = padded_grad.clone()
        outside[rows[:, None], cols[None, :]] = 0
        if torch.any(outside != 0):
            raise AssertionError(f"padding positions get gradient: d loss / d {name} = {_show(padded_grad)}\n  {where}")


def check_metrics(algorithm: Any, case: LossCase) -> None:
    inputs = case.tensors()
    _, metrics, _, _ = _call_loss(algorithm, inputs)
    try:
        _check_metrics(metrics)
    except AssertionError as error:
        raise AssertionError(f"{error}\n  inputs ({case}):\n{_show_inputs(inputs)}") from None


# ------------------------------------------------------------------------------------------ extreme inputs
@dataclass(frozen=True)
class ExtremeCase:
    """Inputs whose entries are picked from extreme but valid values (regenerated from ``seed``)."""

    mask: tuple[tuple[int, ...], ...]
    seed: int
    dtype: str

    def tensors(self) -> dict[str, torch.Tensor]:
        dtype = getattr(torch, self.dtype)
        generator = torch.Generator().manual_seed(self.seed)
        mask = torch.tensor(self.mask, dtype=dtype)

        def pick(values: list[float]) -> torch.Tensor:
            index = torch.randint(len(values), mask.shape, generator=generator)
            return torch.tensor(values, dtype=torch.float64)[index].to(dtype)

        log_probs = pick([-1e-9, -1e-3, -2.0, -20.0, -60.0])
        old = torch.clamp(log_probs + pick([0.0, 1e-6, -1.0, 1.0, -30.0, 30.0]), max=0.0)
        return {"log_probs": log_probs, "old_log_probs": old, "advantages": pick([0.0, 1e-6, -1e-6, 1.0, -1e3, 1e3]),
                "response_mask": mask, "entropy": pick([0.0, 1e-6, 11.5]),
                "ref_log_probs": torch.clamp(log_probs + pick([0.0, -30.0, 30.0]), max=0.0)}


@st.composite
def extreme_cases(draw: Callable) -> ExtremeCase:
    case = draw(loss_cases())
    mask = case.mask if draw(st.booleans()) else tuple(tuple(0 for _ in row) for row in case.mask)
    return ExtremeCase(mask, case.seed, draw(st.sampled_from(["float64", "float32"])))


def check_extreme_inputs(algorithm: Any, case: ExtremeCase) -> None:
    inputs = case.tensors()
    loss, metrics, grad_lp, grad_h = _call_loss(algorithm, inputs)
    problems = [f"loss = {float(loss)}"] if not torch.isfinite(loss) else []
    for name, grad in (("log_probs", grad_lp), ("entropy", grad_h)):
        if not torch.all(torch.isfinite(grad)):
            problems.append(f"d loss / d {name} = {_show(grad)}")
    try:
        _check_metrics(metrics)
    except AssertionError as error:
        problems.append(str(error))
    if problems:
        raise AssertionError(f"{'; '.join(problems)}\n  inputs ({case}):\n{_show_inputs(inputs)}")


# ------------------------------------------------------------------------------------------ advantages
@dataclass(frozen=True)
class BatchCase:
    """A rollout batch: per-sequence rewards, group ids and response masks; other tensors from ``seed``."""

    rewards: tuple[float, ...]
    groups: tuple[int, ...]
    mask: tuple[tuple[int, ...], ...]
    seed: int

    def batch(self, rewards: tuple[float, ...] | None = None) -> RolloutBatch:
        generator = torch.Generator().manual_seed(self.seed)
        mask = torch.tensor(self.mask, dtype=torch.float32)
        b, t = mask.shape
        return RolloutBatch(
            input_ids=torch.randint(0, 50, (b, t), generator=generator),
            attention_mask=torch.ones(b, t, dtype=torch.long),
            response_mask=mask,
            old_log_probs=-3 * torch.rand(b, t, generator=generator) * mask,
            rewards=torch.tensor(self.rewards if rewards is None else rewards, dtype=torch.float32),
            group_ids=torch.tensor(self.groups, dtype=torch.long),
            entropies=2 * torch.rand(b, t, generator=generator) * mask,
            ref_log_probs=-3 * torch.rand(b, t, generator=generator) * mask,
            values=torch.randn(b, t, generator=generator),
        )


@st.composite
def batch_cases(draw: Callable, every_row_has_tokens: bool = False) -> BatchCase:
    sizes = draw(st.lists(st.integers(1, 4), min_size=1, max_size=4))
    groups = [g for g, size in enumerate(sizes) for _ in range(size)]
    groups = draw(st.permutations(groups))
    t = draw(st.integers(2, 6))
    rows = []
    for _ in groups:  # position 0 is the prompt; response tokens follow, then padding
        length = draw(st.integers(1 if every_row_has_tokens else 0, t - 1))
        rows.append(tuple([0] + [1] * length + [0] * (t - 1 - length)))
    rewards = draw(st.lists(st.sampled_from([0.0, 1.0, 0.5, -1.0, 2.0]), min_size=len(groups),
                            max_size=len(groups)))
    return BatchCase(tuple(rewards), tuple(groups), tuple(rows), draw(st.integers(0, 2**31 - 1)))


def _advantages(algorithm: Any, batch: RolloutBatch) -> torch.Tensor:
    try:
        advantages = algorithm.advantages(batch)
    except Exception as error:  # noqa: BLE001 - any exception is a counterexample too
        raise AssertionError(f"advantages raised {type(error).__name__}: {error}") from None
    if not isinstance(advantages, torch.Tensor) or tuple(advantages.shape) != tuple(batch.response_mask.shape):
        raise AssertionError(f"advantages must be a [B, T] = {tuple(batch.response_mask.shape)} tensor, got "
                             f"{getattr(advantages, 'shape', type(advantages).__name__)}")
    return advantages.detach().double()


def check_advantages_masked(algorithm: Any, case: BatchCase) -> None:
    advantages = _advantages(algorithm, case.batch())
    mask = torch.tensor(case.mask)
    if not torch.all(torch.isfinite(advantages)):
        raise AssertionError(f"advantages are not finite: {_show(advantages)}\n  batch: {case}")
    outside = torch.nonzero((mask == 0) & (advantages != 0))
    if outside.numel():
        i, j = outside[0].tolist()
        raise AssertionError(f"advantages[{i}, {j}] = {float(advantages[i, j]):.4g} but response_mask[{i}, {j}] = 0"
                             f"\n  advantages = {_show(advantages)}\n  batch: {case}")


def declared_invariants(algorithm: Any) -> tuple[str, ...]:
    """The group invariants the algorithm (or its advantage estimator) declares in ``advantage_invariants``."""
    declared = tuple(_declared(algorithm, "advantage_invariants", ()) or ())
    unknown = [name for name in declared if name not in INVARIANTS]
    if unknown:
        raise ValueError(f"{_label(algorithm)} declares unknown advantage_invariants {unknown}; known: {INVARIANTS}")
    return declared


def check_group_invariants(algorithm: Any, drawn: tuple[BatchCase, float, int]) -> None:
    case, constant, group_choice = drawn
    declared = declared_invariants(algorithm)
    advantages = _advantages(algorithm, case.batch())
    mask = torch.tensor(case.mask, dtype=torch.float64)
    per_sequence = (advantages * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)  # [B]
    groups = torch.tensor(case.groups)
    shared = [int(g) for g in torch.unique(groups) if int((groups == g).sum()) > 1]
    if "zero_mean_per_group" in declared:
        for group in shared:
            members = per_sequence[groups == group]
            if abs(float(members.sum())) > 1e-4 * (1.0 + float(members.abs().max())):
                raise AssertionError(f"declared zero_mean_per_group, but group {group}'s advantages "
                                     f"{[round(float(v), 6) for v in members]} sum to {float(members.sum()):.4g}"
                                     f"\n  batch: {case}")
    if "shift_invariant" in declared and shared:
        group = shared[group_choice % len(shared)]
        shifted = tuple(r + constant if g == group else r for r, g in zip(case.rewards, case.groups))
        moved = _advantages(algorithm, case.batch(shifted))
        if not torch.allclose(moved, advantages, rtol=1e-4, atol=1e-4):
            raise AssertionError(f"declared shift_invariant, but adding {constant} to the rewards of group {group} "
                                 f"changes the advantages from {_show(advantages)} to {_show(moved)}\n  batch: {case}")


@st.composite
def invariant_cases(draw: Callable) -> tuple[BatchCase, float, int]:
    return draw(batch_cases(every_row_has_tokens=True)), draw(st.sampled_from([-3.0, 0.5, 10.0])), draw(
        st.integers(0, 7))


# ------------------------------------------------------------------------------------------ the entropy law
@dataclass(frozen=True)
class TabularCase:
    """A contextual bandit: logits ``[S, K]``, rewards ``[S, K]``, ``group_size`` sampled actions per state."""

    logits: tuple[tuple[float, ...], ...]
    rewards: tuple[tuple[float, ...], ...]
    group_size: int
    seed: int


@st.composite
def tabular_cases(draw: Callable) -> TabularCase:
    states, actions = draw(st.integers(1, 3)), draw(st.integers(2, 5))

    def table(values: st.SearchStrategy) -> tuple[tuple[float, ...], ...]:
        return tuple(tuple(draw(st.lists(values, min_size=actions, max_size=actions))) for _ in range(states))

    return TabularCase(table(st.floats(-2.0, 2.0)), table(st.sampled_from([0.0, 1.0, 0.3])),
                       draw(st.integers(2, 6)), draw(st.integers(0, 2**31 - 1)))


def _tabular_gradient(algorithm: Any, case: TabularCase) -> torch.Tensor:
    """``d loss / d z`` ``[S, K]`` for one rollout of one-token responses (group = state), on-policy."""
    from covgym.measure import theory

    logits = torch.tensor(case.logits, dtype=torch.float64)
    rewards = torch.tensor(case.rewards, dtype=torch.float64)
    generator = torch.Generator().manual_seed(case.seed)
    actions = torch.multinomial(torch.softmax(logits, -1), case.group_size, replacement=True, generator=generator)
    states = torch.arange(logits.shape[0]).repeat_interleave(case.group_size)  # [B]
    flat = actions.reshape(-1)  # [B]
    b = flat.numel()
    mask = torch.zeros(b, 2, dtype=torch.float64)
    mask[:, 1] = 1.0  # position 0 is the "prompt"
    old = torch.zeros(b, 2, dtype=torch.float64)
    old[:, 1] = torch.log_softmax(logits, -1)[states, flat]
    entropies = torch.zeros(b, 2, dtype=torch.float64)
    entropies[:, 1] = theory.entropy(logits)[states]
    batch = RolloutBatch(input_ids=torch.stack([states, flat], 1), attention_mask=torch.ones(b, 2, dtype=torch.long),
                         response_mask=mask.float(), old_log_probs=old.float(), rewards=rewards[states, flat].float(),
                         group_ids=states, entropies=entropies.float(), ref_log_probs=old.float(),
                         values=torch.zeros(b, 2))
    return _logit_gradient(algorithm, logits, states, flat, _advantages(algorithm, batch), mask)


def check_entropy_law(algorithm: Any, case: TabularCase) -> None:
    from covgym.measure import theory

    gradient = _tabular_gradient(algorithm, case)
    if not torch.all(torch.isfinite(gradient)):
        raise AssertionError(f"d loss / d logits = {_show(gradient)} on a tabular policy\n  case: {case}")
    size = float(gradient.abs().max())
    if size == 0.0:
        return  # no step (e.g. all rewards of every group equal): nothing changes, trivially consistent
    logits = torch.tensor(case.logits, dtype=torch.float64)
    errors = []
    for step in (1e-2, 5e-3):  # ‖Δz‖∞ = step: plain SGD on the logits, Δz = −η·∇z loss
        delta = -(step / size) * gradient
        actual = theory.exact_entropy_change(logits, delta)
        predicted = -theory.policy_covariance(logits, delta)
        errors.append(float((actual - predicted).abs().max()))
    bound = 20 * 1e-2**2 * logits.shape[-1]
    if errors[0] > bound or errors[1] > errors[0] / 4 * 1.5 + 1e-13:
        raise AssertionError(f"entropy change of one step departs from −Cov(log π, Δz) beyond second order: "
                             f"remainder {errors[0]:.3g} at ‖Δz‖∞ = 1e-2 and {errors[1]:.3g} at 5e-3 (expected "
                             f"≤ {bound:.2g} and ~4× smaller)\n  d loss / d logits = {_show(gradient)}\n  case: {case}")


# ------------------------------------------------------------------------------------------ direction of the step
@dataclass(frozen=True)
class BanditCase:
    """Two-armed bandits (one a state) whose rollout group *is* the policy: arm a drawn ``counts[s][a]`` times,
    logits ``log counts``, so every group statistic is exact and the step's effect on expected reward is known."""

    counts: tuple[tuple[int, int], ...]
    rewards: tuple[tuple[float, float], ...]


@st.composite
def bandit_cases(draw: Callable) -> BanditCase:
    states = draw(st.integers(1, 3))
    counts = tuple((draw(st.integers(1, 4)), draw(st.integers(1, 4))) for _ in range(states))
    values = st.sampled_from([0.0, 1.0, 0.3, -1.0, 2.0])
    return BanditCase(counts, tuple((draw(values), draw(values)) for _ in range(states)))


def _bandit_batch(case: BanditCase) -> tuple[RolloutBatch, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(batch, logits [S, 2], states [B], actions [B])``: one-token responses, position 0 the prompt."""
    from covgym.measure import theory

    logits = torch.tensor(case.counts, dtype=torch.float64).log()  # [S, 2]
    states = torch.tensor([s for s, (n0, n1) in enumerate(case.counts) for _ in range(n0 + n1)])  # [B]
    actions = torch.tensor([a for n0, n1 in case.counts for a, n in ((0, n0), (1, n1)) for _ in range(n)])  # [B]
    rewards = torch.tensor(case.rewards, dtype=torch.float64)[states, actions]
    b = states.numel()
    mask = torch.zeros(b, 2)
    mask[:, 1] = 1.0
    old = torch.zeros(b, 2)
    old[:, 1] = torch.log_softmax(logits, -1)[states, actions].float()
    entropies = torch.zeros(b, 2)
    entropies[:, 1] = theory.entropy(logits)[states].float()
    batch = RolloutBatch(input_ids=torch.stack([states, actions], 1), attention_mask=torch.ones(b, 2, dtype=torch.long),
                         response_mask=mask, old_log_probs=old, rewards=rewards.float(), group_ids=states,
                         entropies=entropies, ref_log_probs=old.clone(), values=torch.zeros(b, 2))
    return batch, logits, states, actions


def _step(algorithm: Any, batch: RolloutBatch, logits: torch.Tensor, states: torch.Tensor, actions: torch.Tensor
          ) -> torch.Tensor:
    """``d loss / d logits`` ``[S, K]`` of the full pipeline (advantages, loss, autograd), on-policy, float64."""
    return _logit_gradient(algorithm, logits, states, actions, _advantages(algorithm, batch),
                           batch.response_mask.double())


def _logit_gradient(algorithm: Any, logits: torch.Tensor, states: torch.Tensor, actions: torch.Tensor,
                    advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``d loss / d logits`` ``[S, K]`` of one on-policy loss evaluation on one-token responses (row b: state
    ``states[b]``, action ``actions[b]``, at position 1), float64."""
    b = states.numel()
    z = logits.clone().requires_grad_(True)
    log_pi = torch.log_softmax(z, -1)
    log_probs = torch.zeros(b, 2, dtype=torch.float64)
    log_probs[:, 1] = log_pi[states, actions]
    entropy = torch.zeros(b, 2, dtype=torch.float64)
    entropy[:, 1] = -(log_pi.exp() * log_pi).sum(-1)[states]
    old = log_probs.detach().clone()
    extra = {"ref_log_probs": old} if "ref_log_probs" in inspect.signature(algorithm.policy_loss).parameters else {}
    if callable(getattr(algorithm, "set_generator", None)):
        algorithm.set_generator(torch.Generator().manual_seed(0))
    try:
        loss, _ = algorithm.policy_loss(log_probs, old, advantages, mask, entropy=entropy, **extra)
    except Exception as error:  # noqa: BLE001
        raise AssertionError(f"policy_loss raised {type(error).__name__}: {error}") from None
    if not loss.requires_grad:
        return torch.zeros_like(z)
    (gradient,) = torch.autograd.grad(loss, z)
    return gradient


def check_improvement(algorithm: Any, case: BanditCase) -> None:
    batch, logits, states, actions = _bandit_batch(case)
    gradient = _step(algorithm, batch, logits, states, actions)
    if not torch.all(torch.isfinite(gradient)):
        raise AssertionError(f"d loss / d logits = {_show(gradient)} on a two-armed bandit\n  case: {case}")
    delta = -gradient  # one SGD step on the logits, to first order
    pi = torch.softmax(logits, -1)
    rewards = torch.tensor(case.rewards, dtype=torch.float64)
    value = (pi * rewards).sum(-1, keepdim=True)
    gain = (pi * (rewards - value) * delta).sum(-1)  # [S] first-order change of each state's expected reward
    scale = 1e-9 * (1.0 + float(delta.abs().max()) * float(rewards.abs().max()))
    worst = int(torch.argmin(gain))
    where = (f"  policy π = {_show(pi)}, rewards = {_show(rewards)} (arm a drawn counts[s][a] times: the group is "
             f"the policy)\n  step Δz = −∇loss = {_show(delta)}\n  case: {case}")
    if float(gain[worst]) < -scale:
        raise AssertionError(f"one small step lowers expected reward in state {worst} by {-float(gain[worst]):.3g} "
                             f"(per unit step): the update points away from the better arm (a sign error in the loss "
                             f"or the advantages?)\n{where}")
    if float(delta.abs().max()) > 0 and float(gain.sum()) <= scale and bool((rewards[:, 0] != rewards[:, 1]).any()):
        raise AssertionError(f"one small step changes the policy but does not raise expected reward (gain "
                             f"{float(gain.sum()):.3g}) although rewards differ (advantages that lost their sign, "
                             f"e.g. |A|?)\n{where}")


def check_gradient_flows(algorithm: Any, case: LossCase) -> None:
    inputs = case.tensors()
    inputs["old_log_probs"] = inputs["log_probs"].clone()  # the first, on-policy mini-batch
    inputs["advantages"] = torch.where(inputs["advantages"].abs() < 0.1, torch.full_like(inputs["advantages"], 0.5),
                                       inputs["advantages"])
    if float(inputs["response_mask"].sum()) == 0:
        return
    _, _, grad_lp, _ = _call_loss(algorithm, inputs)
    if not torch.any((grad_lp != 0) & (inputs["response_mask"] > 0)):
        raise AssertionError(f"no token gets any gradient on the on-policy mini-batch although every advantage is "
                             f"non-zero (a ratio taken against log-probs that are not detached is ≡ 1 and carries no "
                             f"gradient)\n  gradient of log_probs = {_show(grad_lp)}\n  inputs ({case}):\n"
                             f"{_show_inputs(inputs)}")


def check_ratio_only(algorithm: Any, drawn: tuple[LossCase, float]) -> None:
    case, shift = drawn
    inputs = case.tensors()
    _, _, grad_lp, _ = _call_loss(algorithm, inputs)
    shifted = dict(inputs)
    for name in ("log_probs", "old_log_probs", "ref_log_probs"):
        shifted[name] = inputs[name] + shift
    _, _, moved_lp, _ = _call_loss(algorithm, shifted)
    if not torch.allclose(moved_lp, grad_lp, rtol=1e-6, atol=1e-9):
        raise AssertionError(f"the gradient depends on log π itself, not only on the ratio π/π_old: shifting log_probs, "
                             f"old_log_probs and ref_log_probs by {shift} changes d loss / d log_probs from "
                             f"{_show(grad_lp)} to {_show(moved_lp)} (an advantage or weight built from log_probs "
                             f"without .detach()?)\n  inputs ({case}):\n{_show_inputs(inputs)}")


@st.composite
def shift_cases(draw: Callable) -> tuple[LossCase, float]:
    return draw(loss_cases()), draw(st.sampled_from([-0.5, -2.0]))


def _clip_bounds(algorithm: Any) -> tuple[float, float] | None:
    if _declared(algorithm, "clip_mode") != "token_ratio":
        return None
    low, high = _declared(algorithm, "low"), _declared(algorithm, "high")
    return None if low is None or high is None else (float(low), float(high))


def check_clip(algorithm: Any, case: LossCase) -> None:
    low, high = _clip_bounds(algorithm)
    inputs = case.tensors()
    _, _, grad_lp, _ = _call_loss(algorithm, inputs)
    ratio = torch.exp(inputs["log_probs"] - inputs["old_log_probs"])
    advantages, mask = inputs["advantages"], inputs["response_mask"]
    beyond = (mask > 0) & (((advantages > 0) & (ratio > 1 + high + 1e-6)) | ((advantages < 0) & (ratio < 1 - low - 1e-6)))
    leaks = torch.nonzero(beyond & (grad_lp != 0))
    if leaks.numel():
        i, j = leaks[0].tolist()
        raise AssertionError(f"token [{i}, {j}] has ratio {float(ratio[i, j]):.4g} beyond the clip range "
                             f"[{1 - low:.4g}, {1 + high:.4g}] in its advantage's direction (A = "
                             f"{float(advantages[i, j]):.4g}) yet gets gradient {float(grad_lp[i, j]):.4g}: the clip "
                             f"does not stop a runaway ratio (min instead of max in the PPO objective?)\n"
                             f"  inputs ({case}):\n{_show_inputs(inputs)}")


@st.composite
def off_policy_cases(draw: Callable) -> LossCase:
    case = draw(loss_cases())
    return LossCase(case.mask, case.seed, draw(st.sampled_from([0.3, 0.6])))


def _has_token_weights(algorithm: Any) -> bool:
    return callable(getattr(algorithm, "token_weights", None))


def check_token_weights(algorithm: Any, case: LossCase) -> None:
    inputs = case.tensors()
    try:
        weights, _ = algorithm.token_weights(inputs["log_probs"], inputs["advantages"], inputs["response_mask"],
                                             inputs["entropy"])
    except Exception as error:  # noqa: BLE001
        raise AssertionError(f"token_weights raised {type(error).__name__}: {error}") from None
    if weights is None:
        return
    negative = torch.nonzero((inputs["response_mask"] > 0) & ~(weights >= 0))
    if negative.numel():
        i, j = negative[0].tolist()
        raise AssertionError(f"token weight [{i}, {j}] = {float(weights[i, j]):.4g} < 0: a negative weight flips that "
                             f"token's policy gradient\n  weights = {_show(weights)}\n  inputs ({case}):\n"
                             f"{_show_inputs(inputs)}")


def _declaring_controls(algorithm: Any) -> list[Any]:
    return [c for c in getattr(algorithm, "controls", None) or [] if getattr(c, "entropy_effect", None)]


def _entropy_change(algorithm: Any, case: BanditCase) -> float:
    """First-order entropy change per unit step, summed over states: ``−Σ_s Cov(log π_s, Δz_s)``."""
    from covgym.measure import theory

    batch, logits, states, actions = _bandit_batch(case)
    gradient = _step(algorithm, batch, logits, states, actions)
    return float(-theory.policy_covariance(logits, -gradient).sum())


def _without(algorithm: Any, control: Any) -> Any:
    import copy

    other = copy.deepcopy(algorithm)
    other.controls = [c for c in other.controls if c.name != control.name]
    return other


def check_entropy_effect(algorithm: Any, case: BanditCase) -> None:
    import copy

    batch, _, _, _ = _bandit_batch(case)
    from covgym.algorithms.first_order import rollout_entropy

    entropy = rollout_entropy(batch)
    for control in _declaring_controls(algorithm):
        effect = control.entropy_effect
        with_control = copy.deepcopy(algorithm)
        if effect == "target":  # a run that sat below the band for a while, then reached this rollout's entropy
            low, high = control.entropy_band()
            for measured in (0.0, 0.0, 0.0, entropy):
                try:
                    with_control.end_of_step({"entropy_mean": measured, "reward_mean": 0.0})
                except Exception as error:  # noqa: BLE001
                    raise AssertionError(f"end_of_step raised {type(error).__name__}: {error}") from None
            wanted = "raise" if entropy < low else "lower" if entropy > high else None
        else:
            wanted = effect
        mine = next(c for c in with_control.controls if c.name == control.name)
        change = _entropy_change(with_control, case)
        baseline = _entropy_change(_without(with_control, mine), case)
        difference = change - baseline
        tolerance = 1e-9 * (1.0 + abs(change) + abs(baseline))
        said = f"declares entropy_effect={effect!r}" + (
            f" (band [{low:.3g}, {high:.3g}], rollout entropy {entropy:.3g})" if effect == "target" else "")
        if wanted == "raise" and difference < -tolerance or wanted == "lower" and difference > tolerance:
            verb = "lowers" if difference < 0 else "raises"
            raise AssertionError(f"control {control.name!r} {said} but {verb} entropy: one step changes entropy by "
                                 f"{change:.4g} with it and {baseline:.4g} without it (a bonus with a penalty's sign?)"
                                 f"\n  case: {case}")


# ------------------------------------------------------------------------------------------ the runner
@dataclass(frozen=True)
class Property:
    name: str
    description: str
    check: Callable[[Any, Any], None]
    strategy: Callable[[], st.SearchStrategy]
    applies: Callable[[Any], bool] = lambda algorithm: True


PROPERTIES: tuple[Property, ...] = (
    Property("masked_gradient", "masked positions get zero gradient", check_masked_gradient, loss_cases),
    Property("padding", "padding changes neither loss nor gradient", check_padding, padding_cases),
    Property("metrics", "metrics are finite floats", check_metrics, loss_cases),
    Property("extreme_inputs", "finite loss, gradient and metrics on extreme but valid inputs", check_extreme_inputs,
             extreme_cases),
    Property("advantages_masked", "advantages are finite and zero outside the response mask",
             check_advantages_masked, batch_cases),
    Property("group_invariants", "the group invariants the estimator declares hold", check_group_invariants,
             invariant_cases, applies=lambda algorithm: bool(declared_invariants(algorithm))),
    Property("entropy_law", "one small step changes entropy by −Cov(log π, Δz) up to second order",
             check_entropy_law, tabular_cases),
    Property("improvement", "one small step raises expected reward on a two-armed bandit", check_improvement,
             bandit_cases),
    Property("gradient_flows", "the on-policy mini-batch gets a policy gradient", check_gradient_flows, loss_cases),
    Property("ratio_only", "the loss sees the current policy only through the ratio π/π_old", check_ratio_only,
             shift_cases),
    Property("clip", "no gradient beyond the declared clip in the advantage's direction", check_clip,
             off_policy_cases, applies=lambda algorithm: _clip_bounds(algorithm) is not None),
    Property("token_weights", "token weights are >= 0", check_token_weights, loss_cases,
             applies=_has_token_weights),
    Property("entropy_effect", "each control has the effect on entropy it declares", check_entropy_effect,
             bandit_cases, applies=lambda algorithm: bool(_declaring_controls(algorithm))),
)


def _run_property(prop: Property, algorithm: Any, max_examples: int, seed: int) -> None:
    @hypothesis_seed(seed)
    @settings(max_examples=max_examples, deadline=None, database=None, derandomize=False, print_blob=False,
              report_multiple_bugs=False, verbosity=Verbosity.quiet, suppress_health_check=list(HealthCheck))
    @given(prop.strategy())
    def run(case: Any) -> None:
        prop.check(algorithm, case)

    run()


def check_algorithm(algorithm: Any, *, max_examples: int = 20, seed: int = 0,
                    properties: tuple[str, ...] | None = None) -> list[str]:
    """Property-test an algorithm; raise ``AssertionError`` with the smallest counterexample found.

    Args:
        algorithm: a registered name, an algorithm class (built with its defaults) or an instance.
        max_examples: hypothesis examples per property (each property also replays its failures).
        seed: hypothesis seed: the same seed replays the same examples.
        properties: names from ``PROPERTIES`` to run (default: all that apply).
    Returns:
        The names of the properties checked (``group_invariants`` only when the algorithm declares some).
    """
    instance = instantiate(algorithm)
    label = _label(instance)
    chosen = [p for p in PROPERTIES if properties is None or p.name in properties]
    if properties is not None and len(chosen) != len(set(properties)):
        known = ", ".join(p.name for p in PROPERTIES)
        raise ValueError(f"unknown properties in {properties}; known: {known}")
    checked = []
    for prop in chosen:
        if not prop.applies(instance):
            continue
        try:
            _run_property(prop, instance, max_examples, seed)
        except AssertionError as error:
            raise AssertionError(f"check_algorithm({label!r}): {prop.name}: {prop.description} fails.\n  {error}\n"
                                 f"  replay: covgym.testing.check_algorithm(..., seed={seed}, "
                                 f"properties=({prop.name!r},))") from None
        except HypothesisException as error:  # e.g. a failure that does not replay (hidden state in the loss)
            raise AssertionError(f"check_algorithm({label!r}): {prop.name}: {prop.description} fails "
                                 f"non-deterministically: {error}") from None
        checked.append(prop.name)
    return checked


__all__ = ["INVARIANTS", "PROPERTIES", "check_algorithm", "declared_invariants", "instantiate"]
