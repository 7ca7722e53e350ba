"""Full-size checkpoints with random weights, for measuring speed and memory without real weights.

Speed and memory do not depend on weight values. The model is built on the meta device from its config,
each tensor is filled with ``randn * 0.02`` on the GPU (norm weights 1) and saved as bf16 safetensors shards,
so ``from_pretrained`` walks the real loading path (quantization included). A word-level tokenizer of the
config's vocabulary size (one token per word) stands in for the real one, without a chat template, so
zhiku's Llama-2 fallback template is used.
"""

from __future__ import annotations

import json
from pathlib import Path

LLAMA2_13B = dict(
    hidden_size=5120,
    intermediate_size=13824,
    num_hidden_layers=40,
    num_attention_heads=40,
    num_key_value_heads=40,
    vocab_size=32000,
    max_position_embeddings=4096,
    rms_norm_eps=1e-5,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)


def word_tokenizer(vocab_size: int, extra_special: dict[str, int] | None = None):
    """One token per whitespace-separated word ``w3``…; ``extra_special`` puts tokens like <image> at given ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    extra_special = extra_special or {}
    taken = set(extra_special.values())
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **extra_special}
    vocab.update({f"w{i}": i for i in range(3, vocab_size) if i not in taken})
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    from tokenizers import decoders

    core.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<unk>"
    )
    if extra_special:
        tokenizer.add_special_tokens({"additional_special_tokens": list(extra_special)})
    return tokenizer


def random_words(count: int, vocab_size: int, seed: int = 0) -> str:
    import random

    rng = random.Random(seed)
    return " ".join(f"w{rng.randrange(3, vocab_size)}" for _ in range(count))


def save_random_weights(model_class, config, folder: Path, shard_gb: float = 5.0) -> None:
    """Random bf16 weights for ``model_class(config)`` as safetensors shards, built without the model in memory."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    with torch.device("meta"):
        meta = model_class(config)
    shapes = {name: tuple(t.shape) for name, t in meta.state_dict().items()}
    shards, current, size, index = [], {}, 0, {}
    limit = int(shard_gb * 1e9)
    generator = torch.Generator(device="cuda").manual_seed(0)
    for name, shape in shapes.items():
        if "norm" in name and name.endswith(".weight"):
            tensor = torch.ones(shape, dtype=torch.bfloat16)
        else:
            tensor = (
                (torch.randn(shape, device="cuda", generator=generator, dtype=torch.float32) * 0.02)
                .to(torch.bfloat16)
                .cpu()
            )
        current[name] = tensor
        size += tensor.numel() * 2
        if size >= limit:
            shards.append(current)
            current, size = {}, 0
    if current:
        shards.append(current)
    total = len(shards)
    for i, shard in enumerate(shards, 1):
        file = f"model-{i:05d}-of-{total:05d}.safetensors"
        save_file(shard, str(folder / file), metadata={"format": "pt"})
        index.update({name: file for name in shard})
    weight_bytes = sum(int(torch.tensor(s).prod()) * 2 for s in shapes.values())
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": weight_bytes}, "weight_map": index})
    )
    config.save_pretrained(folder)


def save_random_llama(folder: Path, overrides: dict | None = None, shard_gb: float = 5.0) -> Path:
    """Write a random-weight LlamaForCausalLM (bf16 safetensors shards) + tokenizer into ``folder``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**{**LLAMA2_13B, **(overrides or {})}, torch_dtype="bfloat16")
    save_random_weights(LlamaForCausalLM, config, folder, shard_gb)
    word_tokenizer(config.vocab_size).save_pretrained(folder)
    return folder


LLAVA_IMAGE_TOKEN = 32000


def save_random_llava(folder: Path, shard_gb: float = 5.0) -> Path:
    """LLaVA-1.5-13B: CLIP ViT-L/14 at 336 px + LLaMA-2-13B + a 2-layer GELU projector; 576 image tokens."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    from models.vision import LLAVA_CHAT_TEMPLATE

    vision = CLIPVisionConfig(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=336,
        patch_size=14, projection_dim=768, hidden_act="quick_gelu",
    )  # fmt: skip
    text = LlamaConfig(**{**LLAMA2_13B, "vocab_size": 32064})
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=LLAVA_IMAGE_TOKEN, projector_hidden_act="gelu",
        vision_feature_layer=-2, vision_feature_select_strategy="default", torch_dtype="bfloat16",
    )  # fmt: skip
    save_random_weights(LlavaForConditionalGeneration, config, folder, shard_gb)
    tokenizer = word_tokenizer(32064, {"<image>": LLAVA_IMAGE_TOKEN})
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}),
        tokenizer=tokenizer, patch_size=14, vision_feature_select_strategy="default", num_additional_image_tokens=1,
        image_token="<image>", chat_template=LLAVA_CHAT_TEMPLATE,
    )  # fmt: skip
    processor.save_pretrained(folder)
    return folder
