"""The prompt's pass through a Llama-family model, written out over the loaded model's weights like
``decode_step``, so that it can be captured in a CUDA graph, one per prompt-length bucket.

The eager prefill launches some 2,500 kernels from Python for a 13B model; the host's jitter between them, and
first-time costs per prompt length, added 40-80 ms (sometimes a second) to the ~100 ms the GPU needs. A replayed
graph launches them all at once.

The arithmetic is the eager model's, op for op: the same modules for the products (bitsandbytes' dequantize +
cuBLAS for NF4), RMSNorm (zhiku's kernel is bitwise the torch ops), rotary by the same tables and ops, and the
attention function transformers' Llama layer calls (its configured implementation: SDPA, causal, no mask). A
prompt shorter than its bucket is padded at the end: causal attention keeps the padding out of every real
position, and only the last real position's logits are kept. Keys and values go straight into the static cache
(the padding's too: the answer's tokens overwrite them before anything reads them), so there is no second copy
of the prompt's cache.
"""

from __future__ import annotations

from models.decode_step import DecodeState, LlamaParts, rotary

FINE, FINE_UP_TO, COARSE = 128, 1024, 256  # bucket steps: prompts pad by at most 127 tokens, then 255


def buckets(max_len: int) -> list[int]:
    """Prompt lengths with a captured prefill: every 128 tokens up to 1,024, then every 256, then the cache's size."""
    sizes = [n for n in range(FINE, FINE_UP_TO + 1, FINE) if n <= max_len]
    sizes += range(FINE_UP_TO + COARSE, max_len + 1, COARSE)
    if not sizes or sizes[-1] < max_len:
        sizes.append(max_len)
    return sizes


def bucket_for(length: int, sizes: list[int]) -> int | None:
    """The smallest bucket that holds ``length`` tokens (None: longer than all of them)."""
    return next((size for size in sizes if size >= length), None)


CAUSAL_BY_ITSELF = ("sdpa", "flash_attention_2", "flash_attention_3")  # causal without a mask (is_causal)


def supported(model) -> str:
    """Why ``prefill_step`` cannot run ``model``'s prompts, or "" when it can: it passes no mask, so the model's
    attention must be causal by itself (transformers' eager and flex attention would see every position)."""
    implementation = getattr(model.get_decoder().config, "_attn_implementation", None)
    return "" if implementation in CAUSAL_BY_ITSELF else f"attention implementation {implementation!r}"


def prefill_length(length: int, shared: int, sizes: list[int] | None) -> int | None:
    """The length a prompt of ``length`` tokens prefills at through ``prefill_step``, or None for the model's own
    prefill of the rest after ``shared`` tokens already in the cache.

    With captured graphs (``sizes``: their buckets) every prompt a bucket holds replays its graph, reused start or
    not: the model's own prefill of even one new token took 80 ms to 490 ms on an H200 (its first time at a length:
    host work), a 1,536-token graph 85 ms. Without (the CPU) the step runs at the prompt's length, unless the cache
    holds at least half of the prompt: then only the rest is computed."""
    if sizes is not None:
        return bucket_for(length, sizes)
    return None if shared and 2 * shared >= length else length


def prefill_step(parts: LlamaParts, ops, state: DecodeState, ids, last) -> None:
    """Run ``ids`` [B, T] (positions 0..T-1) through the model: keys and values into the static cache's first T
    positions, fp32 logits of position ``last`` [B] (a device tensor) into ``state.logits``."""
    import torch
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.llama.modeling_llama import eager_attention_forward

    batch, length = ids.shape
    hidden = parts.embed.shape[1]
    x = torch.nn.functional.embedding(ids, parts.embed).view(batch * length, hidden)
    cos, sin = parts.cos[:length][:, None, :], parts.sin[:length][:, None, :]  # [T, 1, D]
    q_shape, kv_shape = (batch, length, parts.heads, parts.head_dim), (batch, length, parts.kv_heads, parts.head_dim)
    scale = parts.head_dim**-0.5
    for i, layer in enumerate(parts.layers):
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(layer.attention.config._attn_implementation,
                                                          eager_attention_forward)  # fmt: skip
        h = ops.rmsnorm(x, layer.norm1, parts.eps)
        q = rotary(layer.q.module(h).view(q_shape), cos, sin).transpose(1, 2)
        k = rotary(layer.k.module(h).view(kv_shape), cos, sin).transpose(1, 2)
        v = layer.v.module(h).view(kv_shape).transpose(1, 2)
        state.cache_k[i][:, :, :length].copy_(k)
        state.cache_v[i][:, :, :length].copy_(v)
        attended, _ = attention(layer.attention, q, k, v, None, dropout=0.0, scaling=scale)
        x = x + layer.o.module(attended.reshape(batch * length, parts.heads * parts.head_dim))
        h = ops.rmsnorm(x, layer.norm2, parts.eps)
        x = x + layer.down.module(torch.nn.functional.silu(layer.gate.module(h)) * layer.up.module(h))
    rows = torch.arange(batch, device=ids.device) * length + last
    final = ops.rmsnorm(x.index_select(0, rows), parts.norm, parts.eps)
    state.logits.copy_(parts.lm_head(final).float())
