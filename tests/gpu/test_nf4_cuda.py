"""The CUDA C NF4 kernel (models/nf4_cuda.py, compiled by NVRTC) on a real GPU (skipped elsewhere): against
bitsandbytes' dequantized weights for each epilogue, shape and batch; deterministic; the same bits whatever its
tiling, launched overlapped or not, and replayed from a CUDA graph."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.requires_gpu

SHAPES = [(5120, 5120), (13824, 5120), (5120, 13824), (1000, 576), (37, 128), (96, 11008), (1536, 576), (40, 1088)]


def _quantized(n: int, k: int, generator, nested: bool = True):
    import torch
    from bitsandbytes import functional as F

    from models.nf4_gemv import Nf4Weight

    weight = (torch.randn(n, k, device="cuda", generator=generator) * 0.02).to(torch.bfloat16)
    packed, state = F.quantize_4bit(weight, blocksize=64, compress_statistics=nested, quant_type="nf4")
    return Nf4Weight.from_state(packed, state), F.dequantize_4bit(packed, state).float()


def _rel(out, reference) -> float:
    assert out.float().isfinite().all(), "unwritten or non-finite outputs"
    return float((out.float() - reference).norm() / reference.norm())


CUDA = {"KERNEL": "cuda"}


def _cuda(x, weights, epilogue, residual=None):
    """The product from the CUDA kernel itself (never a fallback), into NaN-poisoned outputs: every one written."""
    import torch

    from models import nf4_cuda

    cols = weights[0].n if epilogue == nf4_cuda.SILU_MUL else sum(w.n for w in weights)
    out = torch.full((x.shape[0], cols), float("nan"), dtype=x.dtype, device=x.device)
    assert nf4_cuda.launch(x, weights, epilogue, residual, out) is out, "the CUDA kernel declined"
    return out


@pytest.mark.parametrize("n,k", SHAPES)
@pytest.mark.parametrize("batch", [1, 2, 3, 4])
def test_each_epilogue_matches_the_dequantized_weights(n, k, batch):
    import torch

    from models import nf4_cuda
    from models.nf4_gemv import nf4_gemv

    assert nf4_cuda.available(torch.device("cuda")) is None
    generator = torch.Generator(device="cuda").manual_seed(n + k + batch)
    weight, w = _quantized(n, k, generator)
    up, u = _quantized(n, k, generator)
    third, t = _quantized(n + 5, k, generator)  # a last unit of rows past the weight's end
    x = torch.randn(batch, k, device="cuda", generator=generator).bfloat16()
    reference = x.float() @ w.T
    out = _cuda(x, [weight], nf4_cuda.PLAIN)
    assert _rel(out, reference) < 1e-2
    residual = torch.randn(batch, n, device="cuda", generator=generator).bfloat16()
    summed = _cuda(x, [weight], nf4_cuda.RESIDUAL, residual)
    assert _rel(summed, reference.bfloat16().float() + residual.float()) < 1e-2
    expected = torch.nn.functional.silu(reference.bfloat16()) * (x.float() @ u.T).bfloat16()
    assert _rel(_cuda(x, [weight, up], nf4_cuda.SILU_MUL), expected.float()) < 1e-2
    stacked = _cuda(x, [weight, up, third], nf4_cuda.PLAIN)
    assert stacked.shape == (batch, 3 * n + 5)
    for got, want in zip(stacked.split([n, n, n + 5], dim=1), (reference, x.float() @ u.T, x.float() @ t.T)):
        assert _rel(got, want) < 1e-2  # each weight's columns on their own
    assert _rel(stacked[:, -5:], (x.float() @ t.T)[:, -5:]) < 1e-2  # the partial unit at the very end
    # the Triton kernel computes the same sums in another order: close, not equal
    triton = nf4_gemv(x, weight, config={"KERNEL": "triton"})
    assert _rel(out, triton.float()) < 1e-2


def test_fp16_inputs_and_scales_without_double_quantization():
    import torch

    from models import nf4_cuda

    generator = torch.Generator(device="cuda").manual_seed(7)
    weight, w = _quantized(1024, 2048, generator, nested=False)
    assert not weight.nested
    for batch in (1, 4):
        x = torch.randn(batch, 2048, device="cuda", generator=generator).half()
        out = _cuda(x, [weight], nf4_cuda.PLAIN)
        assert out.dtype == torch.float16
        assert _rel(out, x.float() @ w.T) < 1e-2
        product = (x.float() @ w.T).half()
        assert (
            _rel(_cuda(x, [weight, weight], nf4_cuda.SILU_MUL), (torch.nn.functional.silu(product) * product).float())
            < 1e-2
        )


def test_the_same_bits_whatever_the_tiling_the_launch_or_a_graph_replay():
    import torch

    from models import grid_overlap, nf4_cuda
    from models.nf4_gemv import nf4_gemv

    generator = torch.Generator(device="cuda").manual_seed(3)
    gate, _ = _quantized(13824, 5120, generator)
    up, _ = _quantized(13824, 5120, generator)
    x = torch.randn(1, 5120, device="cuda", generator=generator).bfloat16()
    first = _cuda(x, [gate, up], nf4_cuda.SILU_MUL)
    assert torch.equal(first, nf4_gemv(x, gate, up=up, config=CUDA))  # deterministic: no atomics
    assert not torch.equal(first, nf4_gemv(x, gate, up=up, config={"KERNEL": "triton"}))  # so a fallback would show
    for tiling in ({"R": 1}, {"DEPTH": 2}, {"R": 4, "WARPS": 4, "MINB": 4}, {"R": 8, "MINB": 1, "DEPTH": 2}):
        assert torch.equal(first, nf4_gemv(x, gate, up=up, config=dict(CUDA, **tiling))), tiling
    if grid_overlap.supported(x.device):
        assert torch.equal(first, nf4_gemv(x, gate, up=up, config=CUDA, pdl=True))
    out = torch.empty_like(first)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        nf4_gemv(x, gate, up=up, out=out, config=CUDA)  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        nf4_gemv(x, gate, up=up, out=out, config=CUDA)
    out.zero_()
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(first, out)


def test_a_source_nvrtc_refuses_leaves_the_triton_kernel_to_answer(monkeypatch, tmp_path):
    import torch

    from models import nf4_cuda
    from models.nf4_gemv import nf4_gemv

    broken = tmp_path / "broken.cu"
    broken.write_text(nf4_cuda.SOURCE.read_text().replace("acc[j][s] = hfma2(", "acc[j][s] = hfma3("))
    monkeypatch.setattr(nf4_cuda, "SOURCE", broken)
    monkeypatch.setattr(nf4_cuda, "_kernels", {})  # nothing compiled yet
    monkeypatch.setattr(nf4_cuda, "_failed", [])
    generator = torch.Generator(device="cuda").manual_seed(5)
    weight, w = _quantized(256, 1024, generator)
    x = torch.randn(1, 1024, device="cuda", generator=generator).bfloat16()
    assert _rel(nf4_gemv(x, weight), x.float() @ w.T) < 1e-2  # answered by the Triton kernel
    assert "hfma3" in nf4_cuda.available(x.device)  # and the reason is kept (and logged once)
