"""An optional vLLM engine for sampling rollouts (``--generation-backend vllm``); training stays in ``transformers``.

vLLM samples from the same weights much faster on a GPU (paged attention, continuous batching, prefix caching).
The engine lives in the trainer's process next to the training model (colocated) and receives the new weights
after every update. Old log-probs and entropies are still scored by the training model, so the losses see one
consistent distribution; vLLM's own numerics only decide which tokens are drawn.

vLLM is an optional extra (``pip install 'covgym[vllm]'``, Linux + CUDA); nothing here imports it until a sampler is
built. Pushing weights reaches into the engine's model object, whose location differs between vLLM releases: the
known paths are tried in turn and the error names the installed version when none fits. With the V1 engine set
``VLLM_ENABLE_V1_MULTIPROCESSING=0`` so that the model lives in this process.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any, Iterable, Sequence

import torch

VLLM_INSTALL = "pip install 'covgym[vllm]'"
_MODEL_PATHS = (  # engine -> model, as vLLM releases have laid it out
    ("llm_engine", "model_executor", "driver_worker", "model_runner", "model"),
    ("llm_engine", "model_executor", "driver_worker", "worker", "model_runner", "model"),
    ("llm_engine", "engine_core", "engine_core", "model_executor", "driver_worker", "worker", "model_runner",
     "model"),
)


def require_vllm() -> Any:
    """The ``vllm`` module, or a one-line error saying how to install it."""
    if importlib.util.find_spec("vllm") is None:
        raise ValueError(f"generation_backend: 'vllm' needs the vllm package (Linux + CUDA), which is not "
                         f"installed: {VLLM_INSTALL}; or use --generation-backend hf")
    return importlib.import_module("vllm")


class VLLMSampler:
    """Samples token ids from prompt token ids with a colocated ``vllm.LLM``.

    Args:
        model_path: the model directory the policy was loaded from (vLLM reads config, tokenizer and weights).
        dtype: vLLM's weight dtype (``bfloat16`` is usual on GPU).
        gpu_memory_utilization: the share of GPU memory vLLM may take; the rest is the trainer's.
        seed: engine seed; each call also passes a per-request seed derived from the step's seed.
    """

    def __init__(self, model_path: str, dtype: str = "bfloat16", gpu_memory_utilization: float = 0.3,
                 seed: int = 0) -> None:
        self.vllm = require_vllm()
        self.llm = self.vllm.LLM(model=model_path, dtype=dtype, gpu_memory_utilization=gpu_memory_utilization,
                                 seed=seed, enable_prefix_caching=True)

    def generate(self, prompts: list[list[int]], temperature: float, top_p: float, max_new_tokens: int,
                 stop_strings: Sequence[str] = (), seed: int | None = None) -> list[list[int]]:
        """One sampled continuation (token ids, EOS and stop strings included) per prompt."""
        requests = []
        for index, prompt in enumerate(prompts):
            params = self.vllm.SamplingParams(
                n=1, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens, stop=list(stop_strings),
                include_stop_str_in_output=True, seed=None if seed is None else seed + index)
            requests.append(params)
        outputs = self.llm.generate([{"prompt_token_ids": list(p)} for p in prompts], requests, use_tqdm=False)
        return [list(output.outputs[0].token_ids) for output in outputs]

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy the training model's weights into the engine and drop KV blocks cached under the old ones."""
        target = _engine_model(self.llm)
        if target is None:
            version = getattr(self.vllm, "__version__", "unknown")
            raise RuntimeError(f"cannot reach the model inside vLLM {version} to update its weights (tried "
                               f"{len(_MODEL_PATHS)} known layouts); set VLLM_ENABLE_V1_MULTIPROCESSING=0, or use "
                               f"--generation-backend hf")
        target.load_weights(weights=((name, tensor.detach()) for name, tensor in named_tensors))
        reset = getattr(self.llm, "reset_prefix_cache", None)
        if reset is not None:
            reset()


def _engine_model(llm: Any) -> Any:
    for path in _MODEL_PATHS:
        node = llm
        for name in path:
            node = getattr(node, name, None)
            if node is None:
                break
        if node is not None and hasattr(node, "load_weights"):
            return node
    return None
