"""Shared fixtures: the built-in tiny model (built once per machine, cached) and a tiny random model."""

from __future__ import annotations

import os
import warnings

import pytest
import torch

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore", category=FutureWarning)


@pytest.fixture(scope="session")
def tiny_model_path():
    """The default built-in model directory (SFT warm-started; cached under ~/.cache/covgym)."""
    from covgym.models.tiny_model import ensure_tiny_model

    return ensure_tiny_model(show_progress=False)


@pytest.fixture(scope="session")
def random_model_dir(tmp_path_factory):
    """An untrained 1-layer Llama with the character tokenizer: fast to load, for mechanics tests."""
    from covgym.models.tiny_model import TinyModelSpec, build_tokenizer, build_untrained

    directory = tmp_path_factory.mktemp("random_model")
    tokenizer = build_tokenizer()
    spec = TinyModelSpec(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    model = build_untrained(spec, len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture
def random_policy(random_model_dir):
    from covgym.models.policy import Policy

    torch.manual_seed(0)
    return Policy.from_pretrained(str(random_model_dir), show_progress=False)


@pytest.fixture(scope="session")
def four_layer_dir(tmp_path_factory):
    """A 4-layer Llama with grouped-query attention (4 query heads, 2 key/value heads), as SmolLM2 has."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from covgym.models.tiny_model import build_tokenizer

    directory = tmp_path_factory.mktemp("four_layers")
    tokenizer = build_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=None, tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
