from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def small_llama(tmp_path_factory) -> Path:
    """A random Llama big enough to measure (hidden 1024, 8 layers, grouped KV heads), word-level tokenizer."""
    from bench.random_checkpoints import save_random_llama

    overrides = dict(
        hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=16,
        num_key_value_heads=16, max_position_embeddings=2048,
    )  # fmt: skip
    return save_random_llama(tmp_path_factory.mktemp("small-llama"), overrides, shard_gb=1.0)
