"""One decode step of a Llama-family model, written out over the loaded model's own weights.

``LlamaParts.of(model)`` takes the modules of a loaded ``LlamaForCausalLM`` or LLaVA's language model (no
copies); ``decode_step`` runs one token per sequence through them with a static KV cache, reading positions
from device tensors so that the step can be captured in a CUDA graph. ``TorchOps`` computes each piece with
the eager model's torch ops (the reference, any device); ``TritonOps`` with zhiku's kernels on CUDA.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from models.sampling import choose


class Unsupported(Exception):
    """The model cannot decode through the captured step; the message says why."""


@dataclass
class Linear:
    module: object  # called where no kernel covers the weight (bf16 Linear, other quantizations)
    nf4: object = None  # models.nf4_gemv.Nf4Weight, filled in by TritonOps.prepare


@dataclass
class Layer:
    norm1: object
    q: Linear
    k: Linear
    v: Linear
    o: Linear
    norm2: object
    gate: Linear
    up: Linear
    down: Linear
    attention: object = None  # the layer's attention module (the prefill calls transformers' attention with it)


@dataclass
class LlamaParts:
    embed: object  # [V, H]
    layers: list[Layer]
    norm: object
    eps: float
    lm_head: object
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    dtype: object
    rotary: object  # the model's rotary embedding module
    cos: object = None  # [max_len, D] in the compute dtype, from ``rotary``
    sin: object = None

    @classmethod
    def of(cls, model) -> LlamaParts:
        decoder = model.get_decoder()
        config = decoder.config
        dtype = decoder.embed_tokens.weight.dtype
        problem = unsupported(config, dtype)
        if problem:
            raise Unsupported(problem)
        layers = []
        for layer in decoder.layers:
            attn, mlp = layer.self_attn, layer.mlp
            layers.append(
                Layer(
                    layer.input_layernorm.weight, Linear(attn.q_proj), Linear(attn.k_proj), Linear(attn.v_proj),
                    Linear(attn.o_proj), layer.post_attention_layernorm.weight, Linear(mlp.gate_proj),
                    Linear(mlp.up_proj), Linear(mlp.down_proj), attn,
                )
            )  # fmt: skip
        heads = config.num_attention_heads
        return cls(
            embed=decoder.embed_tokens.weight,
            layers=layers,
            norm=decoder.norm.weight,
            eps=float(config.rms_norm_eps),
            lm_head=model.get_output_embeddings(),
            heads=heads,
            kv_heads=config.num_key_value_heads or heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
            vocab=decoder.embed_tokens.weight.shape[0],
            dtype=dtype,
            rotary=decoder.rotary_emb,
        )

    def rotary_tables(self, max_len: int) -> None:
        """cos/sin of every position, computed by the model's own rotary module (so they match eager exactly)."""
        import torch

        device = self.embed.device
        probe = torch.zeros(1, 1, self.head_dim, dtype=self.dtype, device=device)
        positions = torch.arange(max_len, device=device)[None]
        cos, sin = self.rotary(probe, positions)
        self.cos, self.sin = cos[0].contiguous(), sin[0].contiguous()


def unsupported(config, dtype=None) -> str:
    """Why a text config (with weights in ``dtype``) cannot use the captured step, or "" when it can."""
    import torch

    if dtype is not None and dtype not in (torch.bfloat16, torch.float16):
        return f"compute dtype {dtype} (bf16 or fp16 needed)"
    if getattr(config, "model_type", "") != "llama":
        return f"model type {getattr(config, 'model_type', '?')!r} (Llama family only)"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"activation {config.hidden_act}"
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        return "biases in attention or MLP"
    rope = (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default")
    if "dynamic" in rope or rope == "longrope":
        return f"rope type {rope} (position-dependent scaling)"
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    if head_dim & (head_dim - 1):
        return f"head size {head_dim} (a power of two needed)"
    return ""


@dataclass
class DecodeState:
    """Static buffers of one batch size: the KV cache and the step's inputs and outputs."""

    token: object  # [B] the token each sequence feeds next
    pos: object  # [B] its position (= tokens already in the cache)
    seen: object  # [B, V] token ids seen so far (repetition penalty)
    logits: object  # [B, V] fp32 logits of the latest step, before the penalty
    cache_k: list  # per layer [B, kv_heads, max_len, D]
    cache_v: list
    penalty: object  # [1] fp32
    inv_temperature: object
    top_p: object
    max_len: int
    prompt: object = None  # [B, max_len] token ids of the prompt, padded (the captured prefill's input)
    last: object = None  # [B] the prompt's last position (whose logits choose the first token)
    graphs: dict = field(default_factory=dict)  # greedy? -> torch.cuda.CUDAGraph
    prefills: dict = field(default_factory=dict)  # bucket length -> the captured prefill's torch.cuda.CUDAGraph
    ids: list = field(default_factory=list)  # batch 1: the token ids whose keys and values the cache holds

    @classmethod
    def new(cls, parts: LlamaParts, batch: int, max_len: int) -> DecodeState:
        import torch

        device = parts.embed.device
        shape = (len(parts.layers), batch, parts.kv_heads, max_len, parts.head_dim)
        cache = torch.zeros((2, *shape), dtype=parts.dtype, device=device)
        one = torch.ones(1, dtype=torch.float32, device=device)
        return cls(
            token=torch.zeros(batch, dtype=torch.long, device=device),
            pos=torch.zeros(batch, dtype=torch.long, device=device),
            seen=torch.zeros(batch, parts.vocab, dtype=torch.bool, device=device),
            logits=torch.zeros(batch, parts.vocab, dtype=torch.float32, device=device),
            cache_k=list(cache[0]),
            cache_v=list(cache[1]),
            penalty=one.clone(),
            inv_temperature=one.clone(),
            top_p=one.clone(),
            max_len=max_len,
            prompt=torch.zeros(batch, max_len, dtype=torch.long, device=device),
            last=torch.zeros(batch, dtype=torch.long, device=device),
        )


def decode_step(parts: LlamaParts, ops, state: DecodeState, greedy: bool) -> None:
    """Feed ``state.token`` at ``state.pos``; leave the next token in ``state.token`` and advance ``pos``."""
    import torch

    x = torch.nn.functional.embedding(state.token, parts.embed)
    scale = parts.head_dim**-0.5
    shape = (parts.heads, parts.kv_heads, parts.head_dim)
    for i, layer in enumerate(parts.layers):
        h = ops.rmsnorm(x, layer.norm1, parts.eps)
        q, k, v = ops.project(h, (layer.q, layer.k, layer.v))
        ops.rope_cache(q, k, v, parts.cos, parts.sin, state.pos, state.cache_k[i], state.cache_v[i], *shape)
        attended = ops.attention(q, state.cache_k[i], state.cache_v[i], state.pos, *shape, scale)
        x = ops.linear(attended, layer.o, residual=x)
        h = ops.rmsnorm(x, layer.norm2, parts.eps)
        x = ops.linear(ops.gate_up(h, layer.gate, layer.up), layer.down, residual=x)
    logits = parts.lm_head(ops.rmsnorm(x, parts.norm, parts.eps)).float()
    state.logits.copy_(logits)
    chosen = choose(logits, state.seen, state.penalty, state.inv_temperature, state.top_p, greedy)
    state.token.copy_(chosen)
    state.seen.scatter_(1, chosen[:, None], True)
    state.pos.add_(1)


class TorchOps:
    """The eager model's arithmetic, op for op (the reference; CPU or any device; reads positions on the host,
    so it is not for capture)."""

    def prepare(self, parts: LlamaParts) -> None:
        """Hook for kernels that need per-weight views; the torch ops use the modules as they are."""

    def rmsnorm(self, x, weight, eps: float):
        import torch

        hidden = x.to(torch.float32)
        hidden = hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + eps)
        return weight * hidden.to(x.dtype)

    def linear(self, x, linear: Linear, residual=None):
        y = linear.module(x)
        return y if residual is None else residual + y

    def project(self, x, linears):
        """The products of one input with several weights (q, k and v)."""
        return [self.linear(x, linear) for linear in linears]

    def gate_up(self, x, gate: Linear, up: Linear):
        import torch

        return torch.nn.functional.silu(gate.module(x)) * up.module(x)

    def rope_cache(self, q, k, v, cos, sin, pos, cache_k, cache_v, heads, kv_heads, head_dim) -> None:
        import torch

        batch = q.shape[0]
        c, s = cos[pos][:, None, :], sin[pos][:, None, :]
        qh, kh = q.view(batch, heads, head_dim), k.view(batch, kv_heads, head_dim)
        qh.copy_(rotary(qh, c, s))
        rows = torch.arange(batch, device=q.device)
        cache_k[rows, :, pos] = rotary(kh, c, s)
        cache_v[rows, :, pos] = v.view(batch, kv_heads, head_dim)

    def attention(self, q, cache_k, cache_v, pos, heads, kv_heads, head_dim, scale):
        """As transformers' SDPA attention at decode: the cache cut to its length (read on the host), no mask."""
        import torch

        batch = q.shape[0]
        lengths = (pos + 1).tolist()
        length = max(lengths)
        mask = None
        if min(lengths) != length:  # sequences at different positions: hide each one's unwritten tail
            mask = (torch.arange(length, device=q.device)[None, :] <= pos[:, None])[:, None, None, :]
        out = torch.nn.functional.scaled_dot_product_attention(
            q.view(batch, heads, 1, head_dim), cache_k[:, :, :length], cache_v[:, :, :length], attn_mask=mask,
            scale=scale, enable_gqa=heads != kv_heads,
        )  # fmt: skip
        return out.reshape(batch, heads * head_dim)


class TritonOps(TorchOps):
    """zhiku's kernels: RMSNorm, rotary + cache write, split attention; and the NF4 products with fused epilogues
    (zhiku's, or with ``nf4_kernel="bitsandbytes"`` bitsandbytes' own, called through the module). ``pdl``: each
    kernel lets the next one start early (``models.grid_overlap``); None = wherever the GPU supports it."""

    def __init__(self, nf4_kernel: str = "zhiku", gemv_config=None, pdl: bool | None = None) -> None:
        # NF4 products: "zhiku" (the CUDA kernel, models.nf4_cuda, where it fits, else Triton), "triton"
        # (models.nf4_gemv alone) or "bitsandbytes" (its own kernel)
        self.nf4_kernel = nf4_kernel
        self.gemv_config = gemv_config  # the kernels' tiling; None = their defaults
        if nf4_kernel == "triton":
            self.gemv_config = dict(gemv_config or {}, KERNEL="triton")
        self.pdl = pdl

    def prepare(self, parts: LlamaParts) -> None:
        from models import grid_overlap
        from models.nf4_gemv import Nf4Weight

        if self.pdl is None:
            self.pdl = grid_overlap.supported(parts.embed.device)

        for layer in parts.layers:
            for linear in (layer.q, layer.k, layer.v, layer.o, layer.gate, layer.up, layer.down):
                linear.nf4 = Nf4Weight.of(linear.module) if self.nf4_kernel != "bitsandbytes" else None

    def rmsnorm(self, x, weight, eps: float):
        from models.decode_kernels import rmsnorm

        return rmsnorm(x, weight, eps, pdl=self.pdl)

    def linear(self, x, linear: Linear, residual=None):
        from models.nf4_gemv import MAX_BATCH, nf4_gemv

        if linear.nf4 is None or x.shape[0] > MAX_BATCH:
            return super().linear(x, linear, residual)
        return nf4_gemv(x, linear.nf4, residual=residual, config=self.gemv_config, pdl=self.pdl)

    def project(self, x, linears):
        from models.nf4_gemv import MAX_BATCH, nf4_gemv_stacked

        if any(linear.nf4 is None for linear in linears) or x.shape[0] > MAX_BATCH:
            return super().project(x, linears)
        out = nf4_gemv_stacked(x, [linear.nf4 for linear in linears], config=self.gemv_config, pdl=self.pdl)
        ends = [0]
        for linear in linears:
            ends.append(ends[-1] + linear.nf4.n)
        return [out[:, a:b] for a, b in zip(ends, ends[1:], strict=False)]

    def gate_up(self, x, gate: Linear, up: Linear):
        from models.nf4_gemv import MAX_BATCH, nf4_gemv

        if gate.nf4 is None or up.nf4 is None or x.shape[0] > MAX_BATCH:
            return super().gate_up(x, gate, up)
        return nf4_gemv(x, gate.nf4, up=up.nf4, config=self.gemv_config, pdl=self.pdl)

    def rope_cache(self, q, k, v, cos, sin, pos, cache_k, cache_v, heads, kv_heads, head_dim) -> None:
        from models.decode_kernels import rope_cache

        rope_cache(q, k, v, cos, sin, pos, cache_k, cache_v, heads, kv_heads, head_dim, pdl=self.pdl)

    def attention(self, q, cache_k, cache_v, pos, heads, kv_heads, head_dim, scale):
        from models.decode_kernels import attention

        return attention(q, cache_k, cache_v, pos, heads, kv_heads, head_dim, scale, pdl=self.pdl)


def rotary(x, cos, sin):
    """x*cos + rotate_half(x)*sin, as transformers' ``apply_rotary_pos_emb`` (cos and sin broadcast over x)."""
    import torch

    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin
