"""zhiku's Triton kernels against references: bitsandbytes' dequantized weights for the NF4 products, the
torch ops of the eager model for the rest, and the whole decode step. Without a CUDA GPU they run in Triton's
interpreter (tests/conftest.py), whose bf16 is broken, so fp16 stands in; with a GPU they run compiled, in bf16."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPE = torch.bfloat16 if DEVICE == "cuda" else torch.float16
SMALL = dict(BN=32, ITERS=2, num_warps=4, KERNEL="triton")  # the Triton kernel, small tiles: few programs to interpret


def _quantized(n: int, k: int, generator):
    from bitsandbytes import functional as F

    from models.nf4_gemv import Nf4Weight

    weight = (torch.randn(n, k, generator=generator) * 0.02).to(torch.bfloat16).to(DEVICE)
    packed, state = F.quantize_4bit(weight, blocksize=64, compress_statistics=True, quant_type="nf4")
    return Nf4Weight.from_state(packed, state), F.dequantize_4bit(packed, state).float()


def _rel(out, reference) -> float:
    assert out.float().isfinite().all(), "unwritten or non-finite outputs"
    return float((out.float() - reference).norm() / reference.norm())


def test_dequantize_reads_bitsandbytes_layout_exactly():
    weight, reference = _quantized(96, 320, torch.Generator().manual_seed(0))
    assert weight.nested and weight.n == 96 and weight.k == 320
    assert torch.equal(weight.dequantize().to(torch.bfloat16).float(), reference)


SHAPES = [
    (96, 192, 1, 0, 0, 0),
    (96, 192, 1, 1, 0, 1),
    (37, 320, 3, 1, 1, 0),
    (37, 320, 3, 1, 0, 1),
    (130, 640, 8, 1, 1, 0),
]
if DEVICE == "cuda":  # compiled, the LLaMA-2-13B weight shapes and a few odd ones too (interpreting them is slow)
    SHAPES += [
        (n, k, batch, half, dot, xrows)
        for n, k in [(5120, 5120), (13824, 5120), (5120, 13824), (1000, 576), (37, 128), (96, 11008), (1536, 576)]
        for batch, half, dot, xrows in [
            (1, 0, 0, 0),
            (1, 1, 0, 0),
            (1, 1, 0, 1),
            (3, 1, 1, 0),
            (3, 1, 0, 1),
            (8, 0, 1, 0),
        ]
    ]


@pytest.mark.parametrize("n,k,batch,half,dot,xrows", SHAPES)
def test_nf4_products_with_each_epilogue_match_the_dequantized_weights(n, k, batch, half, dot, xrows):
    from models.nf4_gemv import nf4_gemv, nf4_gemv_stacked

    generator = torch.Generator().manual_seed(n + k + batch)
    # on a GPU the nibbles are decoded by byte permutes, else by table loads; DOT: batches on the tensor cores;
    # XROWS: inputs loaded per row
    config = dict(SMALL, HALF=half, DOT=dot, XROWS=xrows)
    weight, w = _quantized(n, k, generator)
    x = torch.randn(batch, k, generator=generator).to(DTYPE).to(DEVICE)
    reference = x.float() @ w.T
    out = torch.full((batch, n), float("nan"), dtype=DTYPE, device=DEVICE)  # poisoned: every output written
    nf4_gemv(x, weight, out=out, config=config)
    assert _rel(out, reference) < 1e-2
    residual = torch.randn(batch, n, generator=generator).to(DTYPE).to(DEVICE)
    summed = nf4_gemv(x, weight, residual=residual, config=config)
    assert _rel(summed, reference.to(DTYPE).float() + residual.float()) < 1e-2
    up, u = _quantized(n, k, generator)
    expected = torch.nn.functional.silu(reference.to(DTYPE)) * (x.float() @ u.T).to(DTYPE)
    assert _rel(nf4_gemv(x, weight, up=up, config=config), expected.float()) < 1e-2
    third, t = _quantized(n + 5, k, generator)
    stacked = nf4_gemv_stacked(x, [weight, up, third], config=config)
    assert stacked.shape == (batch, 3 * n + 5)
    assert _rel(stacked, torch.cat([reference, x.float() @ u.T, x.float() @ t.T], dim=1)) < 1e-2


def test_a_weight_the_kernel_does_not_cover_is_refused():
    from bitsandbytes import functional as F

    from models.nf4_gemv import Nf4Weight

    packed, state = F.quantize_4bit(torch.randn(8, 96).to(DEVICE), blocksize=64, quant_type="nf4")
    assert Nf4Weight.from_state(packed, state) is None  # 96 is no multiple of 64: a scale block spans two rows


def test_norm_rotary_cache_write_and_attention_match_the_torch_ops():
    from models import scratch
    from models.decode_kernels import attention, rmsnorm, rope_cache
    from models.decode_step import TorchOps

    generator = torch.Generator().manual_seed(3)
    batch, heads, kv_heads, dim, length = 2, 4, 2, 16, 80

    def rand(*shape):
        return torch.randn(*shape, generator=generator).to(DTYPE).to(DEVICE)

    torch_ops = TorchOps()
    x, w = rand(batch, 48), rand(48)
    assert _rel(rmsnorm(x, w, 1e-5), torch_ops.rmsnorm(x, w, 1e-5).float()) < 2e-3
    positions = torch.arange(length, device=DEVICE)[:, None] * (
        1.0 / 10000 ** (torch.arange(dim // 2, device=DEVICE) / (dim // 2))
    )
    cos = torch.cat([positions.cos()] * 2, dim=-1).to(DTYPE)
    sin = torch.cat([positions.sin()] * 2, dim=-1).to(DTYPE)
    pos = torch.tensor([37, 37], device=DEVICE)
    caches = [rand(batch, kv_heads, length, dim) for _ in range(2)]
    ours = [c.clone() for c in caches]
    q, k, v = rand(batch, heads * dim), rand(batch, kv_heads * dim), rand(batch, kv_heads * dim)
    q_ours = q.clone()
    rope_cache(q_ours, k, v, cos, sin, pos, ours[0], ours[1], heads, kv_heads, dim)
    torch_ops.rope_cache(q, k, v, cos, sin, pos, caches[0], caches[1], heads, kv_heads, dim)
    assert torch.equal(ours[1], caches[1])  # values are copied as they are
    # rounded exactly where the eager ops round (compiled, only without floating-point contraction: with it a
    # product and the sum became one bf16 FMA)
    assert torch.equal(q_ours, q) and torch.equal(ours[0], caches[0])
    expected = torch_ops.attention(q, caches[0], caches[1], pos, heads, kv_heads, dim, dim**-0.5).float()
    # the default; the length shared among 3 programs a head; among more programs than it has blocks (some idle);
    # each with the parts combined by the head's last program (the default) and by a kernel of their own
    for tiling in (None, {"SPLITS": 3, "BLOCK_L": 8, "num_warps": 2}, {"SPLITS": 16, "BLOCK_L": 4, "num_warps": 2}):
        for fused in (1, 0):
            tiling = dict(tiling or {}, FUSED=fused)
            out = attention(q, caches[0], caches[1], pos, heads, kv_heads, dim, dim**-0.5, tiling=tiling)
            assert _rel(out, expected) < 1e-2, tiling
            # the last program of each head leaves its count at 0 for the next launch (and graph replay)
            assert not scratch.zeroed(q.device, "attention", batch * heads)[: batch * heads].any()
    one = attention(q[:1], caches[0][:1], caches[1][:1], pos[:1], heads, kv_heads, dim, dim**-0.5)  # batch 1's tiling
    assert _rel(one, expected[:1]) < 1e-2
    # sequences at different positions: each shares its own length among its programs
    apart = torch.tensor([37, 70], device=DEVICE)
    expected = torch_ops.attention(q, caches[0], caches[1], apart, heads, kv_heads, dim, dim**-0.5).float()
    for tiling in (None, {"SPLITS": 3, "BLOCK_L": 8, "num_warps": 2}):
        out = attention(q, caches[0], caches[1], apart, heads, kv_heads, dim, dim**-0.5, tiling=tiling)
        assert _rel(out, expected) < 1e-2, tiling


@pytest.fixture(scope="module")
def tiny_nf4_llama(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    from bench.random_checkpoints import word_tokenizer
    from models.llm import quantization_config

    folder = tmp_path_factory.mktemp("tiny-nf4")
    config = LlamaConfig(
        hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=300, max_position_embeddings=256,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)
    quantization = quantization_config("nf4", "cuda")
    quantization.bnb_4bit_compute_dtype = DTYPE
    model = LlamaForCausalLM.from_pretrained(folder, quantization_config=quantization, dtype=DTYPE, device_map=DEVICE)
    for module in model.modules():  # keep bitsandbytes' CPU backend from repacking the weights on first use
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
    return model.eval(), word_tokenizer(300)


@pytest.mark.parametrize("nf4_kernel", ["zhiku", "bitsandbytes"])
def test_decode_steps_through_the_kernels_match_the_torch_ops(tiny_nf4_llama, nf4_kernel):
    from models.captured_decoder import CapturedDecoder
    from models.decode_step import TorchOps, TritonOps
    from models.llm import SamplingParams

    model, tokenizer = tiny_nf4_llama
    ids = torch.randint(3, 300, (1, 20), generator=torch.Generator().manual_seed(5)).to(DEVICE)
    params = SamplingParams(temperature=0, repetition_penalty=1.0, max_new_tokens=6)
    reference = CapturedDecoder(model, tokenizer, 64, ops=TorchOps(), capture=False)
    expected, expected_logits = reference.generate(ids, params, record_logits=True)
    kernels = CapturedDecoder(model, tokenizer, 64, ops=TritonOps(nf4_kernel, SMALL), capture=False)
    tokens, logits = kernels.generate(ids, params, record_logits=True)
    assert torch.equal(tokens, expected)
    for ours, theirs in zip(logits, expected_logits, strict=True):
        assert torch.nn.functional.cosine_similarity(ours, theirs, dim=-1).item() > 0.9999
