"""A theory sandbox: exact tabular softmax policies on (contextual) bandits.

Each state ``s`` has its own logits ``z[s]`` over ``K`` actions and each action a fixed reward ``r[s, a]``, so
entropy, expected reward and the covariance terms of Cui et al. 2025 (section 3) are exact sums, and the
entropy law can be checked without sampling noise. Three kinds of update:

- exact expected vanilla policy gradient, ``Δz = η·π·A`` (the gradient of the expected reward per state);
- exact natural policy gradient, ``Δz = η·A``;
- the registered LM algorithms (``grpo``, ``clip_cov``, ``kl_cov``, ...) through their own ``advantages`` and
  ``policy_loss``: each step samples ``group_size`` actions per state (one group per state) with an explicit
  ``torch.Generator``, lays them out as a ``RolloutBatch`` of one-token responses (``[B = S·G, T = 2]``,
  position 0 the "prompt"), and steps the logits by SGD on the algorithm's loss through autograd, in
  ``minibatches`` mini-batches per rollout (so that KL-Cov, which is inert on the on-policy first mini-batch,
  acts).

``A(s, a) = r(s, a) − Σ_b π(b|s)·r(s, b)`` throughout. Logits are ``[S, K]``; a ``[K]`` input is one state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

import covgym.algorithms as algorithms
from covgym.core.batch import RolloutBatch
from covgym.core.metrics import predicted_entropy_change

EXACT_METHODS = ("vanilla_pg", "natural_pg")


def _as_table(x: Tensor | np.ndarray | list, name: str) -> Tensor:
    table = torch.as_tensor(x, dtype=torch.float64)
    if table.ndim == 1:
        table = table[None, :]
    if table.ndim != 2 or table.shape[-1] < 2:
        raise ValueError(f"{name} must be [K] or [S, K] with K >= 2, got shape {tuple(table.shape)}")
    return table


# ------------------------------------------------------------------------------------------ exact quantities
def entropy(logits: Tensor) -> Tensor:
    """Exact entropy of ``softmax(logits)`` over the last dimension (float64)."""
    log_pi = torch.log_softmax(logits.double(), dim=-1)
    return -(log_pi.exp() * log_pi).sum(-1)


def expected_reward(logits: Tensor, rewards: Tensor) -> Tensor:
    """``Σ_a π(a)·r(a)`` per state."""
    return (torch.softmax(logits.double(), dim=-1) * rewards.double()).sum(-1)


def advantages(logits: Tensor, rewards: Tensor) -> Tensor:
    """``A(a) = r(a) − Σ_b π(b)·r(b)`` per state, same shape as ``rewards``."""
    return rewards.double() - expected_reward(logits, rewards)[..., None]


def policy_covariance(logits: Tensor, values: Tensor) -> Tensor:
    """``Cov_{a∼π}(log π(a), values(a))`` per state (exact)."""
    return -predicted_entropy_change(logits.double(), values.double())


def exact_entropy_change(logits: Tensor, delta_logits: Tensor) -> Tensor:
    """``H(softmax(z + Δz)) − H(softmax(z))`` per state."""
    return entropy(logits.double() + delta_logits.double()) - entropy(logits)


def vanilla_pg_delta(logits: Tensor, rewards: Tensor, lr: float) -> Tensor:
    """Exact expected policy-gradient logit step ``Δz = η·π·A`` (gradient of ``Σ_a π(a) r(a)`` per state)."""
    return lr * torch.softmax(logits.double(), dim=-1) * advantages(logits, rewards)


def natural_pg_delta(logits: Tensor, rewards: Tensor, lr: float) -> Tensor:
    """Exact natural policy-gradient logit step ``Δz = η·A``."""
    return lr * advantages(logits, rewards)


def single_token_delta(logits: Tensor, action: int, advantage: float, lr: float) -> Tensor:
    """Logit step of one sampled token: ``Δz = η·A·(e_a − π)``, the gradient of ``η·A·log π(a)`` (one state)."""
    pi = torch.softmax(logits.double(), dim=-1)
    one_hot = torch.zeros_like(pi)
    one_hot[..., action] = 1.0
    return lr * advantage * (one_hot - pi)


# ------------------------------------------------------------------------------------------ LM algorithms
def _one_token_batch(logits: Tensor, rewards: Tensor, actions: Tensor) -> RolloutBatch:
    """The sampled actions ``[S, G]`` as a batch of one-token responses ``[S·G, 2]`` (group = state)."""
    num_states, group_size = actions.shape
    states = torch.arange(num_states).repeat_interleave(group_size)  # [B]
    flat_actions = actions.reshape(-1)  # [B]
    batch_size = states.numel()
    log_pi = torch.log_softmax(logits.detach().double(), dim=-1)
    response_mask = torch.zeros(batch_size, 2)
    response_mask[:, 1] = 1.0
    old_log_probs = torch.zeros(batch_size, 2)
    old_log_probs[:, 1] = log_pi[states, flat_actions].float()
    entropies = torch.zeros(batch_size, 2)
    entropies[:, 1] = entropy(logits.detach())[states].float()
    return RolloutBatch(
        input_ids=torch.stack([states, flat_actions], dim=1),
        attention_mask=torch.ones(batch_size, 2, dtype=torch.long),
        response_mask=response_mask,
        old_log_probs=old_log_probs,
        rewards=rewards[states, flat_actions].float(),
        group_ids=states,
        entropies=entropies,
    )


def algorithm_update(logits: Tensor, rewards: Tensor, algorithm, lr: float, group_size: int,
                     minibatches: int, generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
    """One rollout and its mini-batch SGD steps under an LM algorithm's own advantage and loss.

    Args:
        logits, rewards: ``[S, K]``.
        algorithm: an instance from ``covgym.algorithms.get(name)(...)``.
        lr: SGD step on the logits.
        group_size: actions sampled per state (one group per state).
        minibatches: optimizer steps per rollout; responses are shuffled and split evenly.
        generator: all sampling (actions, shuffling, Clip-Cov's choice) draws from it.
    Returns:
        ``(new logits [S, K], metrics of the last mini-batch)``.
    """
    if getattr(algorithm, "needs_critic", False):
        raise ValueError(f"algorithm {getattr(algorithm, 'name', algorithm)!r} needs a critic; the bandit has none")
    if hasattr(algorithm, "set_generator"):
        algorithm.set_generator(generator)
    probs = torch.softmax(logits.detach().double(), dim=-1)
    actions = torch.multinomial(probs, group_size, replacement=True, generator=generator)  # [S, G]
    batch = _one_token_batch(logits, rewards, actions)
    token_advantages = algorithm.advantages(batch)  # [B, 2]
    states, flat_actions = batch.input_ids[:, 0], batch.input_ids[:, 1]
    parameters = logits.detach().double().clone().requires_grad_(True)
    order = torch.randperm(batch.batch_size, generator=generator)
    metrics: dict[str, float] = {}
    for index in torch.chunk(order, minibatches):
        log_pi = torch.log_softmax(parameters, dim=-1)  # [S, K]
        token_log_probs = torch.zeros(index.numel(), 2, dtype=torch.float64)
        token_log_probs[:, 1] = log_pi[states[index], flat_actions[index]]
        token_entropy = torch.zeros(index.numel(), 2, dtype=torch.float64)
        token_entropy[:, 1] = -(log_pi.exp() * log_pi).sum(-1)[states[index]]
        loss, metrics = algorithm.policy_loss(
            token_log_probs, batch.old_log_probs[index].double(), token_advantages[index].double(),
            batch.response_mask[index].double(), entropy=token_entropy)
        (gradient,) = torch.autograd.grad(loss, parameters)
        with torch.no_grad():
            parameters -= lr * gradient  # plain SGD on the logits
    return parameters.detach(), metrics


# ------------------------------------------------------------------------------------------ training
@dataclass
class Trajectory:
    """Per-step exact quantities of a sandbox run (means over states).

    ``entropy`` and ``reward`` have ``steps + 1`` entries (before the first update and after each); the
    others have ``steps``: ``covariance`` is Cov(log π, A) before the step, ``predicted_change`` the first-order
    −Cov(log π, Δz) with the step's actual Δz, ``actual_change`` the exact entropy difference.
    """

    method: str
    entropy: list[float] = field(default_factory=list)
    reward: list[float] = field(default_factory=list)
    covariance: list[float] = field(default_factory=list)
    predicted_change: list[float] = field(default_factory=list)
    actual_change: list[float] = field(default_factory=list)
    logits: Tensor | None = None

    def as_arrays(self) -> dict[str, np.ndarray]:
        return {name: np.asarray(getattr(self, name)) for name in
                ("entropy", "reward", "covariance", "predicted_change", "actual_change")}


def train_bandit(rewards: Tensor | np.ndarray | list, method: str = "vanilla_pg", steps: int = 100,
                 lr: float = 0.1, init_logits: Tensor | np.ndarray | list | None = None,
                 algorithm_kwargs: dict | None = None, group_size: int = 16, minibatches: int = 4,
                 seed: int = 0) -> Trajectory:
    """Train a tabular softmax policy on a (contextual) bandit and record the entropy dynamics.

    Args:
        rewards: ``[K]`` or ``[S, K]`` reward of each action in each state.
        method: ``"vanilla_pg"`` or ``"natural_pg"`` (exact expected updates) or a registered algorithm name
            (``covgym.algorithms.names()``), trained on sampled actions with its own loss.
        steps: number of updates (rollouts for an LM algorithm).
        lr: step size η (SGD learning rate on the logits for an LM algorithm).
        init_logits: ``[K]`` or ``[S, K]``; zeros (uniform policy) by default.
        algorithm_kwargs: hyperparameters for the algorithm's constructor.
        group_size, minibatches: sampled actions per state and optimizer steps per rollout (LM algorithms).
        seed: seeds the explicit ``torch.Generator`` (LM algorithms).
    """
    reward_table = _as_table(rewards, "rewards")
    logits = torch.zeros_like(reward_table) if init_logits is None else _as_table(init_logits, "init_logits")
    if logits.shape != reward_table.shape:
        raise ValueError(f"init_logits has shape {tuple(logits.shape)}, expected {tuple(reward_table.shape)}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    algorithm, generator = None, None
    if method not in EXACT_METHODS:
        algorithm = algorithms.get(method)(**(algorithm_kwargs or {}))
        generator = torch.Generator().manual_seed(seed)
    trajectory = Trajectory(method=method)
    trajectory.entropy.append(float(entropy(logits).mean()))
    trajectory.reward.append(float(expected_reward(logits, reward_table).mean()))
    for _ in range(steps):
        if method == "vanilla_pg":
            new_logits = logits + vanilla_pg_delta(logits, reward_table, lr)
        elif method == "natural_pg":
            new_logits = logits + natural_pg_delta(logits, reward_table, lr)
        else:
            new_logits, _ = algorithm_update(logits, reward_table, algorithm, lr, group_size, minibatches,
                                             generator)
        delta = new_logits - logits
        trajectory.covariance.append(float(policy_covariance(logits, advantages(logits, reward_table)).mean()))
        trajectory.predicted_change.append(float(predicted_entropy_change(logits, delta).mean()))
        trajectory.actual_change.append(float(exact_entropy_change(logits, delta).mean()))
        logits = new_logits
        trajectory.entropy.append(float(entropy(logits).mean()))
        trajectory.reward.append(float(expected_reward(logits, reward_table).mean()))
    trajectory.logits = logits
    return trajectory


# ------------------------------------------------------------------------------------------ sequences
class TokenTree:
    """A tabular autoregressive policy: ``length`` tokens from a ``vocab``-token alphabet, one state per prefix.

    States are the prefixes of length 0 .. length−1 (``Σ_l vocab^l`` of them), each with its own logits row, so
    a sampled sequence visits ``length`` states, as an LM response visits its positions. The reward is given per
    complete sequence, ``[vocab^length]`` in mixed-radix order (first token most significant). Everything is exact
    by enumeration, so keep ``vocab^length`` small (a few thousand).
    """

    def __init__(self, vocab: int, length: int, rewards: Tensor | np.ndarray | list) -> None:
        if vocab < 2 or length < 1:
            raise ValueError(f"vocab must be >= 2 and length >= 1, got vocab={vocab}, length={length}")
        self.vocab, self.length = vocab, length
        self.rewards = torch.as_tensor(rewards, dtype=torch.float64).reshape(-1)  # [vocab^length]
        if self.rewards.numel() != vocab**length:
            raise ValueError(f"rewards must have vocab**length = {vocab**length} entries, got {self.rewards.numel()}")
        self.offsets = [sum(vocab**j for j in range(level)) for level in range(length + 1)]
        self.num_states = self.offsets[length]
        codes = torch.arange(vocab**length)
        digits = [(codes // vocab ** (length - 1 - t)) % vocab for t in range(length)]
        self.sequence_tokens = torch.stack(digits, dim=1)  # [N, L]
        prefixes = [codes // vocab ** (length - t) for t in range(length)]  # value of the first t tokens
        self.sequence_states = torch.stack([self.offsets[t] + prefixes[t] for t in range(length)], dim=1)  # [N, L]

    def sequence_log_probs(self, logits: Tensor) -> Tensor:
        """``[N]`` log-probability of every complete sequence under the table ``logits`` ``[S, vocab]``."""
        log_pi = torch.log_softmax(logits, dim=-1)
        return log_pi[self.sequence_states, self.sequence_tokens].sum(-1)

    def expected_reward(self, logits: Tensor) -> Tensor:
        return (self.sequence_log_probs(logits).exp() * self.rewards).sum()

    def state_visitation(self, logits: Tensor) -> Tensor:
        """``[S]`` probability of reaching each prefix, divided by ``length`` (a distribution over positions)."""
        probs = self.sequence_log_probs(logits.detach()).exp()  # [N]
        visits = torch.zeros(self.num_states, dtype=torch.float64)
        visits.index_add_(0, self.sequence_states.reshape(-1), probs[:, None].expand(-1, self.length).reshape(-1))
        return visits / self.length

    def q_values(self, logits: Tensor) -> Tensor:
        """``[S, vocab]`` exact Q(s, a): expected final reward after prefix s and token a, by backward recursion."""
        pi = torch.softmax(logits.detach().double(), dim=-1)
        q = torch.zeros(self.num_states, self.vocab, dtype=torch.float64)
        next_values = self.rewards  # values of the prefixes one level down, [vocab^(level+1)]
        for level in range(self.length - 1, -1, -1):
            rows = slice(self.offsets[level], self.offsets[level + 1])
            q[rows] = next_values.reshape(-1, self.vocab)
            next_values = (pi[rows] * q[rows]).sum(-1)
        return q

    def advantages(self, logits: Tensor) -> Tensor:
        q = self.q_values(logits)
        return q - (torch.softmax(logits.detach().double(), dim=-1) * q).sum(-1, keepdim=True)

    def mean_entropy(self, logits: Tensor) -> float:
        """Expected per-token entropy along the policy's own sequences (what an LM run logs as entropy)."""
        return float((self.state_visitation(logits) * entropy(logits)).sum())

    def sample(self, logits: Tensor, count: int, generator: torch.Generator) -> Tensor:
        """``[count]`` sequence codes sampled token by token."""
        codes = torch.zeros(count, dtype=torch.long)
        pi = torch.softmax(logits.detach().double(), dim=-1)
        for level in range(self.length):
            tokens = torch.multinomial(pi[self.offsets[level] + codes], 1, generator=generator)[:, 0]
            codes = codes * self.vocab + tokens
        return codes


def _sequence_batch(tree: TokenTree, logits: Tensor, codes: Tensor) -> RolloutBatch:
    """Sampled sequences as one group of responses ``[G, 1 + length]`` (position 0 the prompt)."""
    count, length = codes.numel(), tree.length
    log_pi = torch.log_softmax(logits.detach().double(), dim=-1)
    states, tokens = tree.sequence_states[codes], tree.sequence_tokens[codes]  # [G, L]
    pad = torch.zeros(count, 1)
    return RolloutBatch(
        input_ids=torch.cat([torch.zeros(count, 1, dtype=torch.long), tokens], dim=1),
        attention_mask=torch.ones(count, length + 1, dtype=torch.long),
        response_mask=torch.cat([pad, torch.ones(count, length)], dim=1),
        old_log_probs=torch.cat([pad, log_pi[states, tokens].float()], dim=1),
        rewards=tree.rewards[codes].float(),
        group_ids=torch.zeros(count, dtype=torch.long),
        entropies=torch.cat([pad, entropy(logits.detach())[states].float()], dim=1),
    )


def train_sequence(tree: TokenTree, method: str = "vanilla_pg", steps: int = 100, lr: float = 0.1,
                   init_logits: Tensor | np.ndarray | None = None, algorithm_kwargs: dict | None = None,
                   group_size: int = 16, minibatches: int = 4, seed: int = 0) -> Trajectory:
    """Train a ``TokenTree`` policy; the sequential counterpart of ``train_bandit``.

    ``vanilla_pg``: Δz = η·∇_z E[R] (autograd of the exact expected reward; includes the state visitation).
    ``natural_pg``: Δz(s, a) = η·A(s, a) with the exact advantage Q(s, a) − V(s).
    A registered algorithm name: one group of ``group_size`` sampled sequences per step, the algorithm's own
    advantages and loss over ``[G, 1 + length]`` token tensors, SGD on the logits in ``minibatches`` steps.
    The trajectory's entropy is the expected per-token entropy; covariance, predicted and actual changes are
    visitation-weighted means over states (as an LM run averages over its response positions).
    """
    logits = torch.zeros(tree.num_states, tree.vocab, dtype=torch.float64) if init_logits is None \
        else torch.as_tensor(init_logits, dtype=torch.float64).clone()
    if logits.shape != (tree.num_states, tree.vocab):
        raise ValueError(f"init_logits has shape {tuple(logits.shape)}, expected {(tree.num_states, tree.vocab)}")
    algorithm, generator = None, None
    if method not in EXACT_METHODS:
        algorithm = algorithms.get(method)(**(algorithm_kwargs or {}))
        generator = torch.Generator().manual_seed(seed)
        if hasattr(algorithm, "set_generator"):
            algorithm.set_generator(generator)
    trajectory = Trajectory(method=method)
    trajectory.entropy.append(tree.mean_entropy(logits))
    trajectory.reward.append(float(tree.expected_reward(logits)))
    for _ in range(steps):
        if method == "vanilla_pg":
            parameters = logits.clone().requires_grad_(True)
            (gradient,) = torch.autograd.grad(tree.expected_reward(parameters), parameters)
            new_logits = logits + lr * gradient
        elif method == "natural_pg":
            new_logits = logits + lr * tree.advantages(logits)
        else:
            new_logits = _sequence_algorithm_update(tree, logits, algorithm, lr, group_size, minibatches, generator)
        delta = new_logits - logits
        visits = tree.state_visitation(logits)
        trajectory.covariance.append(float((visits * policy_covariance(logits, tree.advantages(logits))).sum()))
        trajectory.predicted_change.append(float((visits * predicted_entropy_change(logits, delta)).sum()))
        trajectory.actual_change.append(float((visits * exact_entropy_change(logits, delta)).sum()))
        logits = new_logits
        trajectory.entropy.append(tree.mean_entropy(logits))
        trajectory.reward.append(float(tree.expected_reward(logits)))
    trajectory.logits = logits
    return trajectory


def _sequence_algorithm_update(tree: TokenTree, logits: Tensor, algorithm, lr: float, group_size: int,
                               minibatches: int, generator: torch.Generator) -> Tensor:
    codes = tree.sample(logits, group_size, generator)
    batch = _sequence_batch(tree, logits, codes)
    token_advantages = algorithm.advantages(batch)  # [G, 1 + L]
    states, tokens = tree.sequence_states[codes], tree.sequence_tokens[codes]  # [G, L]
    parameters = logits.detach().double().clone().requires_grad_(True)
    order = torch.randperm(group_size, generator=generator)
    for index in torch.chunk(order, minibatches):
        log_pi = torch.log_softmax(parameters, dim=-1)
        pad = torch.zeros(index.numel(), 1, dtype=torch.float64)
        token_log_probs = torch.cat([pad, log_pi[states[index], tokens[index]]], dim=1)
        token_entropy = torch.cat([pad, -(log_pi.exp() * log_pi).sum(-1)[states[index]]], dim=1)
        loss, _ = algorithm.policy_loss(token_log_probs, batch.old_log_probs[index].double(),
                                        token_advantages[index].double(), batch.response_mask[index].double(),
                                        entropy=token_entropy)
        (gradient,) = torch.autograd.grad(loss, parameters)
        with torch.no_grad():
            parameters -= lr * gradient
    return parameters.detach()
