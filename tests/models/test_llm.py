"""The generator's loader on a configured checkpoint: a tiny random Llama the test builds and saves."""

from pathlib import Path

import pytest

from models.llm import Generator, LlmSpec, SamplingParams, quantization_config


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory, model_cache) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from models.gguf_cache import converted_dir
    from models.packaged import smollm2_gguf

    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer_source = converted_dir(smollm2_gguf(), model_cache)  # the real SmolLM2 tokenizer
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_nf4_double_quant_bf16_compute_config():
    import torch

    config = quantization_config("nf4", "cpu")
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4"
    assert config.bnb_4bit_use_double_quant and config.bnb_4bit_compute_dtype == torch.bfloat16
    assert quantization_config("auto", "cpu") is None
    assert quantization_config("auto", "cuda").bnb_4bit_quant_type == "nf4"
    assert quantization_config("int8", "cuda").load_in_8bit


def test_configured_checkpoint_loads_in_nf4_and_streams(tiny_llama):
    from bitsandbytes.nn import Linear4bit

    generator = Generator(LlmSpec(model=str(tiny_llama), quantization="nf4", device="cpu"))
    layers = [m for m in generator.model.modules() if isinstance(m, Linear4bit)]
    assert len(layers) == 2 * 7  # q, k, v, o, gate, up, down in each of 2 layers
    assert generator.context_length == 512
    ids = generator.prompt_ids([{"role": "user", "content": "hello"}])
    pieces = list(generator.stream(ids, SamplingParams(temperature=0, max_new_tokens=6)))
    assert pieces  # random weights: any text, but real tokens through the real streamer
    generator.unload()
    assert generator.model is None


def test_configured_checkpoint_full_precision(tiny_llama):
    import torch

    generator = Generator(LlmSpec(model=str(tiny_llama), quantization="fp32", device="cpu"))
    assert next(generator.model.parameters()).dtype == torch.float32
    assert generator.truncate_tokens("one two three four five six", 2) == "one two"


def test_missing_model_path_names_it(tmp_path):
    with pytest.raises(OSError, match="no-such-model"):
        Generator(LlmSpec(model=str(tmp_path / "no-such-model"), device="cpu"))


def test_checkpoint_without_chat_template_gets_the_llama2_format(tmp_path):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from bench.random_checkpoints import word_tokenizer

    tokenizer = word_tokenizer(500)
    assert not tokenizer.chat_template
    config = LlamaConfig(
        vocab_size=500, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    generator = Generator(LlmSpec(model=str(tmp_path), quantization="fp32", device="cpu"))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "w7 w8"}]
    text = generator.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nw7 w8 [/INST]"
    assert generator.prompt_ids(messages)[0] == 1
