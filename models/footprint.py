"""Memory a model will need, estimated from its config before loading.

weights: every ``nn.Linear`` inside the network is stored at the quantization's bytes per weight (NF4 with
double quant: 4 bits + one 8-bit absmax per 64 weights + one fp32 per 256 absmax blocks); embeddings,
norms and the output head stay in the compute dtype, as bitsandbytes leaves them. KV cache: keys and values
for every layer at the configured context and batch. Workspace: allocator slack, plus the activations of a
prompt as long as the context (a prefill's peak; on a GPU the captured prefill keeps them in its graph pool).
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3
MIB = 1024**2

# bytes per weight of a quantized Linear, constants included
BYTES_PER_WEIGHT = {
    "nf4": 0.5 + 1 / 64 + 4 / (64 * 256),  # double quant: 8-bit absmax per 64, fp32 per 256 blocks
    "int8": 1.0,
    "bf16": 2.0,
    "fp32": 4.0,
}
DENSE_BYTES = {"nf4": 2, "int8": 2, "bf16": 2, "fp32": 4}  # compute dtype of the non-quantized tensors


@dataclass(frozen=True)
class Footprint:
    weights: int
    kv_cache: int
    workspace: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.workspace

    def describe(self) -> str:
        return (
            f"{gib(self.total)} (weights {gib(self.weights)} + KV cache {gib(self.kv_cache)} "
            f"+ workspace {gib(self.workspace)})"
        )


def gib(n: int | float) -> str:
    return f"{n / GIB:.2f} GiB"


@dataclass(frozen=True)
class ParameterCounts:
    linear: int  # weights of nn.Linear layers that quantization applies to
    dense: int  # everything else: embeddings, norms, biases, the output head


def count_parameters(config, skip_modules: tuple[str, ...] = ("lm_head",)) -> ParameterCounts:
    """Build the model on the meta device (no memory, no weights) and count its parameters by kind."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        try:
            model = AutoModelForCausalLM.from_config(config)
        except ValueError:  # vision-language configs (LLaVA) are not causal-LM configs
            from transformers import AutoModelForImageTextToText

            model = AutoModelForImageTextToText.from_config(config)
    linear = dense = 0
    seen: set[int] = set()
    for name, module in model.named_modules():
        for param in module.parameters(recurse=False):
            if id(param) in seen:  # tied weights count once
                continue
            seen.add(id(param))
            quantizable = isinstance(module, torch.nn.Linear) and param is module.weight
            if quantizable and not any(part in skip_modules for part in name.split(".")):
                linear += param.numel()
            else:
                dense += param.numel()
    return ParameterCounts(linear, dense)


def kv_cache_bytes(config, context_tokens: int, batch: int, dtype_bytes: int = 2) -> int:
    text = getattr(config, "text_config", None) or config
    layers = text.num_hidden_layers
    heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return 2 * layers * heads * head_dim * context_tokens * batch * dtype_bytes


def prefill_bytes(config, tokens: int, dtype_bytes: int = 2) -> int:
    """Activations at a prefill's peak (the MLP): per token the residual stream and its norm, gate, up,
    silu(gate) and their product; and one weight dequantized to the compute dtype."""
    text = getattr(config, "text_config", None) or config
    hidden = text.hidden_size
    intermediate = getattr(text, "intermediate_size", None) or 4 * hidden
    return tokens * (2 * hidden + 4 * intermediate) * dtype_bytes + hidden * intermediate * dtype_bytes


def estimate(
    config, quantization: str, context_tokens: int | None = None, batch: int = 1, counts: ParameterCounts | None = None
) -> Footprint:
    """Footprint of a causal LM (or LLaVA-style model) from its config."""
    counts = counts or count_parameters(config)
    weights = int(counts.linear * BYTES_PER_WEIGHT[quantization] + counts.dense * DENSE_BYTES[quantization])
    text = getattr(config, "text_config", None) or config
    context = context_tokens or getattr(text, "max_position_embeddings", 4096)
    kv = kv_cache_bytes(config, context, batch, 4 if quantization == "fp32" else 2)
    workspace = max(256 * MIB, weights // 20) + prefill_bytes(config, context, 4 if quantization == "fp32" else 2)
    return Footprint(weights, kv, workspace)
