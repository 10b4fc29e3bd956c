"""A thin wrapper over any ``transformers`` causal LM and its tokenizer: sample responses, score sequences.

Log-probs and entropies are those of the *sampling* distribution, ``softmax(logits / temperature)``, in rollout,
scoring, losses and metrics alike. Sampling is covgym's own KV-cache decode loop (inverse-CDF draws, head on the last
position only), which also reads each sampled token's log-prob and entropy off the logits it computes. Scoring runs
the transformer trunk once and applies the output head chunk by chunk, only at the positions asked for, so ``[tokens,
vocab]`` float32 logits never exist for the whole batch at once. Scoring lays the batch out the cheapest exact way:
rows that repeat a prompt (a GRPO group) share one pass over it and its KV cache (``prefix_sharing``), or rows of
uneven length are packed side by side so that padding is not computed (``packing``), or the plain padded batch.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from covgym.core.metrics import log_probs_and_entropy
from covgym.models.activation_budget import DEFAULT_ACTIVATION_BUDGET_MB, ActivationBudget, Plan
from covgym.models.attention import grouped_heads_without_copies
from covgym.models.cpu_features import has_bf16_instructions
from covgym.models.dropout import disable_dropout
from covgym.models.head_stats import head_token_stats
from covgym.models.packing import PackedBatch, pack, packing_is_exact
from covgym.models.prefix_sharing import (PrefixGroups, cache_keyword, group_prefixes, leading_prefix_lengths, left_pad,
                                          output_cache, positions_from_mask, prefill, shared_positions,
                                          shared_prefix_hidden, supports_sharing)
from covgym.models.sources import resolve_model

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_BYTES = 64 * 2**20  # float32 logits per head chunk: 110 positions at vocabulary 151,936, 341 at
# SmolLM2's 49,152; a chunk's softmax, products and gradients hold a few such buffers at once


# Scoring shares repeated prompts only when that computes at most SHARING_PAYS of the positions of the other layout:
# its second trunk pass and cache gathers cost extra. Measured (forward + backward of a 32-row mini-batch of the
# tiny model's speed workload, shared at 0.54 of the padded positions): 33.7 ms shared vs 32.8 ms padded on 2
# threads, 43.1 vs 54.8 ms on 1 thread.
SHARING_PAYS = 2 / 3


def chunk_rows(vocab_size: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Positions per output-head chunk so that one chunk's float32 logits take at most ``chunk_bytes``."""
    return max(1, chunk_bytes // (4 * vocab_size))


class ModelLoadError(ValueError):
    """A model could not be found or loaded; the message says what to do."""


def enable_activation_checkpointing(model: Any, every_n_layers: int = 1) -> None:
    """Turn on ``transformers``' activation checkpointing, non-reentrant, on every ``every_n_layers``-th layer."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs, every_n_layers=every_n_layers)
    elif every_n_layers == 1:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    else:
        raise ModelLoadError("checkpoint_every_n_layers > 1 needs transformers >= 5 (activation_checkpointing_enable"
                             "'s every_n_layers); use 1 or upgrade transformers")
    model.config.use_cache = False


@dataclass(frozen=True)
class SamplingParams:
    """How responses are sampled. Scoring uses the same temperature."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 32


@dataclass(frozen=True)
class SampledResponse:
    """One sampled response: token ids and, when the sampler's logits equal ``score``'s (float32, no autocast),
    each token's log-prob and entropy under ``softmax(logits / T)``; else None (score the batch instead)."""

    ids: list[int]
    log_probs: list[float] | None = None
    entropies: list[float] | None = None


def draw_from_probs(probs: Tensor, top_p: float, generator: torch.Generator) -> Tensor:
    """One draw per row of ``probs`` ``[B, V]`` by inverse CDF, restricted to the top-p nucleus when ``top_p < 1``.

    The nucleus is the smallest set of most likely tokens whose mass reaches ``top_p`` (transformers' rule: a
    token stays when the mass before it is below ``top_p``). One uniform per row and a cumulative sum replace
    ``torch.multinomial``, which draws an exponential for every vocabulary entry. Returns ``[B]`` long.
    """
    order = None
    if top_p < 1.0:
        probs, order = torch.sort(probs, dim=-1, descending=True)
        before = probs.cumsum(-1) - probs
        probs = probs.masked_fill(before >= top_p, 0.0)
    cdf = probs.cumsum(-1)  # [B, V]
    u = torch.rand(probs.shape[0], 1, generator=generator, device=probs.device, dtype=cdf.dtype) * cdf[:, -1:]
    index = torch.searchsorted(cdf, u, right=True).clamp_max(probs.shape[-1] - 1)  # first cdf > u: never p = 0
    return (index if order is None else order.gather(-1, index))[:, 0]


class Policy:
    """A causal LM + tokenizer with batched sampling (KV cache) and chunked scoring.

    Args:
        model: any ``PreTrainedModel`` with a causal LM head. Its dropout is turned off in place
            (``covgym.models.dropout``): a policy-gradient ratio needs the update's log π and the rollout's log π_old to
            be the same function.
        tokenizer: its tokenizer (needs a pad or eos token).
        temperature: the sampling temperature, also applied when scoring.
        use_chat_template: render prompts through the tokenizer's chat template (instruct models).
        chunk_size: positions per chunk when applying the output head; by default as many as fit
            ``chunk_bytes`` of float32 logits, so the peak does not grow with the vocabulary.
        autocast_bf16: run the transformer trunk (sampling and scoring) under bf16 autocast; the output head,
            log-probs, entropies and losses stay float32.
        share_prompts: compute a prompt repeated in several rows once and share its KV cache (sampling, and
            scoring when the caller passes ``prompt_lengths``).
        pack_sequences: in scoring, pack right-padded rows side by side so that padding is not computed, when
            that is cheaper than the other layouts and the model is checked to honour it (``covgym.models.packing``).
        activation_budget_mb: activations one training forward may keep, in MiB; a longer one checkpoints just
            enough decoder layers to fit (``covgym.models.activation_budget``). 0: no limit. Not used when activation
            checkpointing is on for the whole model.
    """

    def __init__(self, model, tokenizer, temperature: float = 1.0, use_chat_template: bool = False,
                 chunk_size: int | None = None, autocast_bf16: bool = False, share_prompts: bool = True,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES, pack_sequences: bool = True,
                 activation_budget_mb: float = DEFAULT_ACTIVATION_BUDGET_MB) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if activation_budget_mb < 0:
            raise ValueError(f"activation_budget_mb must be >= 0 (0: no limit), got {activation_budget_mb}")
        self.model = model
        disable_dropout(model)  # log π (train mode) and log π_old (eval mode) must be the same function
        self.tokenizer = tokenizer
        self.temperature = float(temperature)
        self.use_chat_template = use_chat_template
        self.chunk_size = chunk_size or chunk_rows(int(model.get_output_embeddings().weight.shape[0]), chunk_bytes)
        self.autocast_bf16 = autocast_bf16
        if autocast_bf16 and self.device.type == "cpu" and has_bf16_instructions() is False:
            logger.warning("bf16 autocast on a CPU without bf16 instructions (avx512_bf16/amx_bf16): its matmuls "
                           "are emulated and far slower than float32 here; leave --autocast-bf16 off")
        self.share_prompts = share_prompts
        self.pack_sequences = pack_sequences
        self._sharing_supported = supports_sharing(model)
        self._packing_exact: bool | None = None  # checked on first use (``_packing_works``)
        self.synced = False  # under FSDP every rank runs the same forwards (``covgym.distributed.sharding``)
        self.activation_budget_mb = float(activation_budget_mb)
        self._budget: ActivationBudget | None = None  # installed at the first training forward that needs it
        self._last_forward_watched = False
        self.sampler: Any = None  # an optional faster engine for sampling (``covgym.models.vllm_sampler.VLLMSampler``)
        self.source_path: str | None = None  # the directory or hub id the weights came from
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.pad_token_id: int = int(tokenizer.pad_token_id)
        self.eos_token_id: int | None = tokenizer.eos_token_id

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, name_or_path: str, device: str | torch.device = "cpu", dtype: str = "float32",
                        temperature: float = 1.0, use_chat_template: bool | None = None,
                        gradient_checkpointing: bool = False, show_progress: bool = True,
                        autocast_bf16: bool = False, share_prompts: bool = True,
                        pack_sequences: bool = True, checkpoint_every_n_layers: int = 1,
                        activation_budget_mb: float = DEFAULT_ACTIVATION_BUDGET_MB) -> "Policy":
        """Load a local directory, a hub id, a GGUF file, or an alias (``tiny``, ``smollm2-135m-instruct``).

        ``gradient_checkpointing`` recomputes each decoder layer's forward in the backward pass (non-reentrant
        ``torch.utils.checkpoint``) instead of keeping its activations; ``checkpoint_every_n_layers`` > 1 does so
        for every n-th layer only. Without it, ``activation_budget_mb`` bounds a training forward's activations.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        source = resolve_model(name_or_path, show_progress=show_progress)
        torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype)
        if torch_dtype is None:
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype!r}")
        try:
            tokenizer = AutoTokenizer.from_pretrained(source.path, **source.load_kwargs)
            model = AutoModelForCausalLM.from_pretrained(source.path, dtype=torch_dtype, **source.load_kwargs)
        except (OSError, ValueError) as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ModelLoadError(
                f"could not load model {name_or_path!r} ({first_line}); pass an existing local model directory, "
                f"a GGUF file, a hub id reachable from this machine, or the built-in 'tiny'") from error
        model.to(device)
        model.eval()
        if gradient_checkpointing:
            enable_activation_checkpointing(model, checkpoint_every_n_layers)
        if use_chat_template is None:
            use_chat_template = bool(getattr(tokenizer, "chat_template", None))
        policy = cls(model, tokenizer, temperature=temperature, use_chat_template=use_chat_template,
                     autocast_bf16=autocast_bf16, share_prompts=share_prompts, pack_sequences=pack_sequences,
                     activation_budget_mb=activation_budget_mb)
        policy.source_path = source.path
        return policy

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @contextlib.contextmanager
    def _trunk_context(self) -> Iterator[None]:
        """The context of every trunk pass: bf16 autocast when enabled (mixed precision: parameters keep their
        dtype), and grouped-query attention without per-head key/value copies on CPU (``covgym.models.attention``; not
        in a checkpointed pass with gradients, whose recompute in backward runs outside this context)."""
        device = self.device
        recomputed = torch.is_grad_enabled() and self._activation_checkpointing()
        with grouped_heads_without_copies(device, enabled=not recomputed), (
                torch.autocast(device_type=device.type, dtype=torch.bfloat16) if self.autocast_bf16
                else contextlib.nullcontext()):
            yield

    # ------------------------------------------------------------------ text <-> tokens
    def encode_prompt(self, text: str) -> list[int]:
        """Token ids of a task prompt: through the chat template for instruct models, else plain."""
        if self.use_chat_template:
            rendered = self.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                          add_generation_prompt=True)
            return list(self.tokenizer(rendered, add_special_tokens=False)["input_ids"])
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode_observation(self, text: str) -> list[int]:
        """Token ids of an environment's follow-up observation (tool output); never trained on."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def generate(self, prompts: list[list[int]], params: SamplingParams, stop_strings: Sequence[str] = (),
                 seed: int | None = None) -> list[list[int]]:
        """Sample one response per prompt (token ids), cut after EOS (kept) or after a stop string (kept)."""
        return [response.ids for response in self.sample(prompts, params, stop_strings, seed)]

    @torch.no_grad()
    def sample(self, prompts: list[list[int]], params: SamplingParams, stop_strings: Sequence[str] = (),
               seed: int | None = None) -> list[SampledResponse]:
        """Sample one response per prompt, with each token's log-prob and entropy when they come for free.

        Prompts are left-padded into one batch and decoded with the KV cache by covgym's own loop
        (``_decode``): it draws from ``softmax(logits / T)`` (top-p truncated) by inverse CDF, a few times
        cheaper on CPU than ``torch.multinomial``'s one exponential draw per vocabulary entry, and it reads
        each step's log-prob and entropy off the logits it already has. With ``share_prompts``, each distinct
        prompt (but its last token) is prefilled once and its cache gathered for every row that repeats it; the
        draws are the same as without sharing (same seed, same logits up to rounding). Under FSDP (``synced``)
        ``model.generate`` keeps the ranks in step; a ``sampler`` (vLLM) replaces both.
        """
        if not prompts:
            if self.synced:  # keep step with the ranks that still generate; the draw is thrown away
                self.sample([[self.pad_token_id] * 2], params, stop_strings, seed)
            return []
        if self.sampler is not None:
            generated = self.sampler.generate(prompts, self.temperature, params.top_p, params.max_new_tokens,
                                              stop_strings, seed)
        elif self.synced:
            generated = self._generate_hf(prompts, params, stop_strings, seed)
        else:
            return self._decode(prompts, params, stop_strings, seed)
        return [SampledResponse(self._cut_response(ids, stop_strings)) for ids in generated]

    def _share_in_sampling(self, prompts: list[list[int]]) -> PrefixGroups | None:
        """The distinct prompts (but their last token) when prefilling them once pays and is exact; else None."""
        groups = group_prefixes([p[:-1] for p in prompts])  # the last token is fed by the decode step itself
        shared = (self.share_prompts and self._sharing_supported and groups.saves_work
                  and min(len(p) for p in prompts) >= 2  # a pre-set cache_implementation refuses a given cache
                  and getattr(self.model.generation_config, "cache_implementation", None) is None)
        return groups if shared else None

    def _share_leading_prefixes(self, prompts: list[list[int]]) -> tuple[PrefixGroups, list[int]] | None:
        """Rows whose contexts differ but start alike (a later turn of a multi-turn episode: the same prompt, then
        different attempts and replies): their shared leading prefixes prefilled once, and each row's share
        length; None unless that computes at most ``SHARING_PAYS`` of the positions of the padded batch."""
        if not (self.share_prompts and self._sharing_supported) or len(prompts) < 2 \
                or getattr(self.model.generation_config, "cache_implementation", None) is not None:
            return None
        lengths = leading_prefix_lengths(prompts)
        if min(lengths) == 0:  # a row sharing nothing would prefill an all-padding row (and attend to nothing)
            return None
        groups = group_prefixes([p[:n] for p, n in zip(prompts, lengths)])
        shared = (len(groups.prefixes) * max(lengths)
                  + len(prompts) * max(len(p) - n for p, n in zip(prompts, lengths)))
        return (groups, lengths) if shared <= SHARING_PAYS * len(prompts) * max(len(p) for p in prompts) else None

    def _decode(self, prompts: list[list[int]], params: SamplingParams, stop_strings: Sequence[str],
                seed: int | None) -> list[SampledResponse]:
        """Prefill, then one trunk step per new token; the head runs on the last position only."""
        device, b = self.device, len(prompts)
        if params.max_new_tokens < 1:
            return [SampledResponse([], [], []) for _ in prompts]
        generator = torch.Generator(device=device)
        generator.manual_seed(seed if seed is not None else int(torch.randint(2**62, ()).item()))
        was_training = self.model.training
        self.model.eval()
        groups = self._share_in_sampling(prompts)
        leads = None if groups is not None else self._share_leading_prefixes(prompts)
        if groups is not None:
            _, mask, _, cache = prefill(self._trunk_with_cache, groups.prefixes, groups.index, self.pad_token_id,
                                        device)
            step_ids = torch.tensor([[p[-1]] for p in prompts], device=device)  # [B, 1]
            mask = torch.cat([mask, torch.ones_like(step_ids)], dim=1)  # [B, W]
        elif leads is not None:  # shared leading prefixes, then each row's own rest (padding between the two)
            lead_groups, lengths = leads
            _, mask, _, cache = prefill(self._trunk_with_cache, lead_groups.prefixes, lead_groups.index,
                                        self.pad_token_id, device)
            step_ids, rest_mask = left_pad([p[n:] for p, n in zip(prompts, lengths)], self.pad_token_id)
            step_ids = step_ids.to(device)
            mask = torch.cat([mask, rest_mask.to(device)], dim=1)
        else:
            step_ids, mask = left_pad(prompts, self.pad_token_id)
            step_ids, mask, cache = step_ids.to(device), mask.to(device), None
        positions = positions_from_mask(mask)[:, -step_ids.shape[1]:]  # [B, W or 1]
        done = torch.zeros(b, dtype=torch.bool, device=device)
        tokens, log_probs, entropies = [], [], []
        for _ in range(params.max_new_tokens):
            hidden, cache = self._trunk_with_cache(step_ids, mask, positions, cache)
            logits = self._head_logits(hidden[:, -1])  # [B, V] float32, temperature-scaled
            log_z = torch.logsumexp(logits, dim=-1)  # [B]
            probs = torch.exp(logits - log_z[:, None])  # [B, V]
            token = draw_from_probs(probs, params.top_p, generator)  # [B]
            token = torch.where(done, torch.full_like(token, self.pad_token_id), token)
            tokens.append(token)
            log_probs.append(logits.gather(-1, token[:, None])[:, 0] - log_z)
            entropies.append(log_z - (probs * logits).sum(-1))  # the formula ``score`` uses
            if self.eos_token_id is not None:
                done |= token == self.eos_token_id
            if stop_strings:
                done |= self._stopped(torch.stack(tokens, 1), done, stop_strings)
            if bool(done.all()):
                break
            step_ids = token[:, None]
            mask = torch.cat([mask, torch.ones_like(step_ids)], dim=1)  # finished rows run on, as in generate
            positions = positions[:, -1:] + 1
        self.model.train(was_training)
        exact = self._sampling_scores_match_scoring()
        out_tokens = torch.stack(tokens, 1).tolist()  # [B, L]
        out_lp, out_ent = torch.stack(log_probs, 1).tolist(), torch.stack(entropies, 1).tolist()
        responses = []
        for row in range(b):
            ids = self._cut_response(out_tokens[row], stop_strings)
            n = len(ids)
            responses.append(SampledResponse(ids, out_lp[row][:n] if exact else None,
                                              out_ent[row][:n] if exact else None))
        return responses

    def _stopped(self, generated: Tensor, done: Tensor, stop_strings: Sequence[str]) -> Tensor:
        """``[B]`` rows (not yet done) whose text so far contains a stop string."""
        hit = torch.zeros_like(done)
        for row in (~done).nonzero()[:, 0].tolist():
            text = self.decode(generated[row].tolist())
            hit[row] = any(s in text for s in stop_strings)
        return hit

    def _sampling_scores_match_scoring(self) -> bool:
        """Log-probs read while sampling equal ``score``'s up to float32 rounding only without reduced precision."""
        return not self.autocast_bf16 and next(self.model.parameters()).dtype == torch.float32

    def _generate_hf(self, prompts: list[list[int]], params: SamplingParams, stop_strings: Sequence[str],
                     seed: int | None) -> list[list[int]]:
        """``model.generate`` (its ``synced_gpus`` keeps FSDP ranks running forwards until all are done)."""
        if seed is not None:
            torch.manual_seed(seed)
        groups = self._share_in_sampling(prompts)
        kwargs = dict(do_sample=True, temperature=self.temperature, top_p=params.top_p, top_k=0,
                      max_new_tokens=params.max_new_tokens, pad_token_id=self.pad_token_id,
                      eos_token_id=self.eos_token_id, use_cache=True, synced_gpus=self.synced)
        if stop_strings:
            kwargs.update(stop_strings=list(stop_strings), tokenizer=self.tokenizer)
        was_training = self.model.training
        self.model.eval()
        with self._trunk_context():
            if groups is not None:
                prefix_ids, prefix_mask, _, cache = prefill(self._trunk_with_cache, groups.prefixes, groups.index,
                                                            self.pad_token_id, self.device)
                last = torch.tensor([[p[-1]] for p in prompts], device=self.device)  # [B, 1]
                input_ids = torch.cat([prefix_ids, last], dim=1)
                attention = torch.cat([prefix_mask, torch.ones_like(last)], dim=1)
                kwargs[cache_keyword(self.model)] = cache
            else:
                input_ids, attention = left_pad(prompts, self.pad_token_id)
            width = input_ids.shape[1]
            output = self.model.generate(input_ids=input_ids.to(self.device),
                                         attention_mask=attention.to(self.device), **kwargs)
        self.model.train(was_training)
        return output[:, width:].tolist()

    def _cut_response(self, ids: list[int], stop_strings: Sequence[str]) -> list[int]:
        end = len(ids)
        if self.eos_token_id is not None and self.eos_token_id in ids:
            end = ids.index(self.eos_token_id) + 1
        elif self.pad_token_id != self.eos_token_id:
            while end > 0 and ids[end - 1] == self.pad_token_id:
                end -= 1
        ids = ids[:end]
        if stop_strings:
            text = self.decode(ids)
            hits = [text.find(s) + len(s) for s in stop_strings if s in text]
            if hits:
                cut_chars = min(hits)
                for count in range(1, len(ids) + 1):  # shortest prefix containing the stop string
                    if len(self.decode(ids[:count])) >= cut_chars:
                        return ids[:count]
        return ids

    # ------------------------------------------------------------------ scoring
    def _trunk_with_cache(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, cache: Any
                          ) -> tuple[Tensor, Any]:
        """Final hidden states ``[B, T, H]`` of the transformer trunk (no output head) and its KV cache.

        ``cache`` holds earlier positions (then ``attention_mask`` covers them too); None starts a new one.
        """
        trunk = self._decoder()
        with self._trunk_context():
            output = trunk(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                           use_cache=True, **{cache_keyword(trunk): cache})
        hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
        return hidden, output_cache(output)

    def _activation_checkpointing(self) -> bool:
        if hasattr(type(self.model), "is_activation_checkpointing"):  # transformers >= 5.x
            return bool(self.model.is_activation_checkpointing)
        return bool(getattr(self.model, "is_gradient_checkpointing", False))

    def _active_budget(self) -> ActivationBudget | None:
        """The activation budget when this forward is a training one it applies to, installed on first use."""
        if (self.activation_budget_mb <= 0 or self.synced or not torch.is_grad_enabled() or not self.model.training
                or self._activation_checkpointing()):  # FSDP: ranks must run the same forwards; user checkpointing
            return None
        if self._budget is None:
            device = self.device
            self._budget = ActivationBudget(self.model, max(1, int(self.activation_budget_mb * 2**20)),
                                            recompute_context=lambda: grouped_heads_without_copies(device))
        return self._budget if self._budget.supported else None

    def _watched(self, budget: ActivationBudget | None, positions: int,
                 adapt: bool = True) -> contextlib.AbstractContextManager:
        self._last_forward_watched = budget is not None
        return budget.watch(positions, adapt) if budget is not None else contextlib.nullcontext()

    @property
    def activation_plan(self) -> Plan | None:
        """What the activation budget did in the last scoring forward (None: it did not apply there)."""
        return self._budget.last if self._last_forward_watched and self._budget is not None else None

    def _decoder(self) -> torch.nn.Module:
        return self.model.get_decoder() if hasattr(self.model, "get_decoder") else self.model.base_model

    def _trunk(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Final hidden states ``[B, T, H]`` of the transformer trunk (no output head, no cache)."""
        with self._trunk_context():
            output = self._decoder()(input_ids=input_ids, attention_mask=attention_mask,
                                     position_ids=positions_from_mask(attention_mask), use_cache=False)
        return output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]

    def _packed_trunk(self, input_ids: Tensor, position_ids: Tensor) -> Tensor:
        """Hidden states ``[R, W, H]`` of packed rows: no 2-D mask, sequence boundaries read off ``position_ids``."""
        with self._trunk_context():
            output = self._decoder()(input_ids=input_ids, attention_mask=None, position_ids=position_ids,
                                     use_cache=False)
        return output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]

    def _packing_works(self) -> bool:
        """Whether this model honours packed rows (checked once, on a small batch, in eval mode)."""
        if self._packing_exact is None:
            reduced = self.autocast_bf16 or next(self.model.parameters()).dtype != torch.float32
            was_training = self.model.training
            self.model.eval()
            self._packing_exact = packing_is_exact(self._packed_trunk, self._trunk,
                                                   int(self.model.get_input_embeddings().weight.shape[0]),
                                                   self.device, self.pad_token_id, 3e-2 if reduced else 1e-3)
            self.model.train(was_training)
        return self._packing_exact

    def _packed(self, input_ids: Tensor, attention_mask: Tensor) -> PackedBatch | None:
        """The packed layout of the batch when packing is on, exact for this model and saves positions."""
        if not self.pack_sequences or self.synced:  # FSDP: every rank must run the same forwards
            return None
        layout = pack(input_ids, attention_mask, self.pad_token_id)
        return layout if layout is not None and self._packing_works() else None

    def _layout(self, input_ids: Tensor, attention_mask: Tensor, prompt_lengths: Tensor | None,
                budget: ActivationBudget | None) -> PackedBatch | PrefixGroups | None:
        """How to run this batch's trunk at the least cost, all exact: packed rows, shared prompts, or (None) the
        padded batch as it is. A shared forward reuses a KV cache, so it cannot checkpoint layers: under an
        activation ``budget`` it gives way when the last measurement puts it over."""
        packed = self._packed(input_ids, attention_mask)
        other = packed.positions if packed is not None else int(input_ids.numel())
        groups = self._shared_prompts(input_ids, prompt_lengths)
        if groups is not None:
            shared = shared_positions(groups, attention_mask, prompt_lengths)
            if shared <= SHARING_PAYS * other and (budget is None or not budget.over_budget(shared)):
                return groups
        return packed

    def _shared_prompts(self, input_ids: Tensor, prompt_lengths: Tensor | None) -> PrefixGroups | None:
        """The batch's distinct prompts when sharing them pays (some prompt repeats) and is exact; else None.

        HF activation checkpointing drops caches under grad, so not there.
        """
        if not (self.share_prompts and self._sharing_supported) or prompt_lengths is None \
                or int(prompt_lengths.min()) < 1:
            return None
        if torch.is_grad_enabled() and self._activation_checkpointing():
            return None
        groups = group_prefixes([input_ids[row, :int(p)].tolist() for row, p in enumerate(prompt_lengths.tolist())])
        return groups if groups.saves_work else None

    def _head_logits(self, hidden: Tensor) -> Tensor:
        """Temperature-scaled float32 logits for hidden states ``[..., H]`` -> ``[..., V]`` (never autocast)."""
        head = self.model.get_output_embeddings()
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            logits = head(hidden.to(head.weight.dtype)).float()
        softcap = getattr(self.model.config, "final_logit_softcapping", None)
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        return logits if self.temperature == 1.0 else logits / self.temperature  # a pass over [..., V] saved

    def score(self, input_ids: Tensor, attention_mask: Tensor, prompt_lengths: Tensor | None = None,
              positions: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Per-token log-probs and entropies ``[B, T]`` aligned with ``input_ids`` (position 0 is 0).

        Args:
            input_ids: ``[B, T]``, right-padded when ``prompt_lengths`` is given.
            attention_mask: ``[B, T]``.
            prompt_lengths: ``[B]`` prompt tokens at the start of each row. Rows that repeat a prompt then share
                one pass over it (see ``prefix_sharing``), and prompt tokens are never scored.
            positions: ``[B, T]``, score only where nonzero (e.g. the response mask): the output head runs on
                those positions alone; elsewhere the result is 0.

        Runs with gradients when grad mode is on; each chunk of the output head is recomputed in the backward
        pass (activation checkpointing) so the chunking also bounds training memory.
        """
        input_ids = input_ids.to(self.device)
        attention_mask = attention_mask.to(self.device)
        b, t = input_ids.shape
        wanted = torch.ones(b, t, dtype=torch.bool, device=self.device) if positions is None \
            else positions.to(self.device) > 0
        wanted[:, 0] = False
        if prompt_lengths is not None:  # prompt tokens are never scored, shared path or not
            wanted &= torch.arange(t, device=self.device)[None, :] >= prompt_lengths.to(self.device)[:, None]
        rows, columns = wanted.nonzero(as_tuple=True)  # the N scored tokens
        budget = self._active_budget()
        layout = self._layout(input_ids, attention_mask, prompt_lengths, budget)
        if isinstance(layout, PackedBatch):
            with self._watched(budget, int(layout.input_ids.numel())):
                hidden = self._packed_trunk(layout.input_ids, layout.position_ids)  # [R, W, H]
            selected_hidden = hidden[layout.locate(rows, columns - 1)]  # [N, H]: position t-1 predicts token t
        else:
            if isinstance(layout, PrefixGroups):
                shared = shared_positions(layout, attention_mask, prompt_lengths)
                with self._watched(budget, shared, adapt=False):
                    hidden = shared_prefix_hidden(self._trunk_with_cache, input_ids, attention_mask, prompt_lengths,
                                                  layout, self.pad_token_id)  # [B, T, H], valid from each prompt's last
            else:
                with self._watched(budget, b * t):
                    hidden = self._trunk(input_ids, attention_mask)  # [B, T, H]
            selected_hidden = hidden[rows, columns - 1]  # [N, H]
        targets = input_ids[rows, columns]  # [N]

        def chunk_stats(h: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
            return log_probs_and_entropy(self._head_logits(h), tokens, chunk_size=h.shape[0] or 1)

        head = self.model.get_output_embeddings()
        fused = (isinstance(head, torch.nn.Linear) and head.bias is None and not self.synced  # FSDP: module hooks
                 and not getattr(self.model.config, "final_logit_softcapping", None))
        log_probs, entropies = [], []
        if fused:  # a plain linear head: chunked inside one node, logits recomputed once in backward
            if targets.numel():
                lp, ent = head_token_stats(selected_hidden, head.weight, targets, self.temperature, self.chunk_size)
                log_probs, entropies = [lp], [ent]
        else:
            for start in range(0, targets.numel(), self.chunk_size):
                h, tokens = selected_hidden[start:start + self.chunk_size], targets[start:start + self.chunk_size]
                lp, ent = (checkpoint(chunk_stats, h, tokens, use_reentrant=False) if torch.is_grad_enabled()
                           else chunk_stats(h, tokens))
                log_probs.append(lp)
                entropies.append(ent)
        zeros = torch.zeros(b, t, device=self.device)
        if not log_probs:  # nothing to score; under grad keep a (zero) graph so that backward() still works
            zeros = zeros + 0.0 * hidden.float().sum() if torch.is_grad_enabled() else zeros
            return zeros, zeros.clone()
        return (zeros.index_put((rows, columns), torch.cat(log_probs)),
                zeros.index_put((rows, columns), torch.cat(entropies)))

    def response_logits(self, input_ids: Tensor, attention_mask: Tensor, response_mask: Tensor) -> Tensor:
        """Temperature-scaled logits ``[N, V]`` at the N positions where ``response_mask`` is 1."""
        hidden = self._trunk(input_ids.to(self.device), attention_mask.to(self.device))[:, :-1]  # [B, T-1, H]
        selected = hidden[response_mask[:, 1:].to(self.device) > 0]  # [N, H]
        return self._head_logits(selected)

    def save(self, directory: str | Path) -> None:
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
