"""The CUDA C NF4 kernels (models/nf4_cuda.py, compiled by NVRTC: nf4_gemv.cu and the tensor-core nf4_mma.cu) on a
real GPU (skipped elsewhere): against bitsandbytes' dequantized weights for each epilogue, shape and batch;
deterministic; the same bits whatever their tiling (nf4_mma.cu: for a given number of warps), launched overlapped or
not, and replayed from a CUDA graph."""

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
KERNELS = {"gemv": {"MMA": 0}, "mma": {"MMA": 1, "ASYNC": 0, "DEPTH": 2}, "ring": {"MMA": 1, "ASYNC": 1, "DEPTH": 4},
           "ahead": {"MMA": 1, "ASYNC": 1, "DEPTH": 2, "XAHEAD": 1, "PAIR": 0},
           "pair": {"MMA": 1, "ASYNC": 1, "DEPTH": 2, "XAHEAD": 1, "PAIR": 1},
           "few": {"MMA": 1, "ASYNC": 1, "DEPTH": 2, "XAHEAD": 1, "PAIR": 1, "WARPS": 3, "MINB": 1},
           "wide": {"MMA": 1, "ASYNC": 1, "DEPTH": 2, "XAHEAD": 1, "PAIR": 0, "WARPS": 16, "MINB": 1}}  # fmt: skip
# nf4_gemv.cu; nf4_mma.cu with its weights through registers, through a ring of shared memory (cp.async),
# through the ring with each step's inputs loaded during the step before (o and down's default from batch 3), and
# that with units of 32 rows in two slots (q·k·v's default; gate·up's units are always two slots: gate and up); blocks
# of 3 warps (fewer threads than a unit has sums: each adds several) and of 16


def _cuda(x, weights, epilogue, residual=None, config=None):
    """The product from the CUDA kernel itself (never a fallback), into NaN-poisoned outputs: every one written."""
    import torch

    from models import nf4_cuda

    cols = weights[0].n if epilogue == nf4_cuda.SILU_MUL else sum(w.n for w in weights)
    out = torch.full((x.shape[0], cols), float("nan"), dtype=x.dtype, device=x.device)
    assert nf4_cuda.launch(x, weights, epilogue, residual, out, config) is out, "the CUDA kernel declined"
    return out


def _replayed(product, like):
    """``product(out)`` captured in a CUDA graph (after a warm-up outside it) and replayed into zeroed outputs."""
    import torch

    out = torch.empty_like(like)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        product(out)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        product(out)
    out.zero_()
    graph.replay()
    torch.cuda.synchronize()
    return out


@pytest.mark.parametrize("n,k", SHAPES)
@pytest.mark.parametrize(
    "kernel,batch",
    [("gemv", b) for b in (1, 2, 3, 4)]
    + [("mma", b) for b in (1, 2, 3, 4, 5, 8)]
    + [("ring", b) for b in (1, 3, 4, 8)]
    + [("ahead", b) for b in (1, 3, 4, 8)]
    + [("pair", b) for b in (1, 3, 4, 8)]
    + [("few", b) for b in (3, 4)]
    + [("wide", 4)],
)
def test_each_epilogue_matches_the_dequantized_weights(n, k, kernel, batch):
    import torch

    from models import nf4_cuda
    from models.nf4_gemv import nf4_gemv

    assert nf4_cuda.available(torch.device("cuda")) is None
    config = KERNELS[kernel]
    generator = torch.Generator(device="cuda").manual_seed(n + k + batch)
    weight, w = _quantized(n, k, generator)
    up, u = _quantized(n, k, generator)
    third, t = _quantized(n + 5, k, generator)  # a last unit of rows past the weight's end
    x = torch.randn(batch, k, device="cuda", generator=generator).bfloat16()
    reference = x.float() @ w.T
    out = _cuda(x, [weight], nf4_cuda.PLAIN, config=config)
    assert _rel(out, reference) < 1e-2
    residual = torch.randn(batch, n, device="cuda", generator=generator).bfloat16()
    summed = _cuda(x, [weight], nf4_cuda.RESIDUAL, residual, config=config)
    assert _rel(summed, reference.bfloat16().float() + residual.float()) < 1e-2
    expected = torch.nn.functional.silu(reference.bfloat16()) * (x.float() @ u.T).bfloat16()
    assert _rel(_cuda(x, [weight, up], nf4_cuda.SILU_MUL, config=config), expected.float()) < 1e-2
    stacked = _cuda(x, [weight, up, third], nf4_cuda.PLAIN, config=config)
    assert stacked.shape == (batch, 3 * n + 5)
    for got, want in zip(stacked.split([n, n, n + 5], dim=1), (reference, x.float() @ u.T, x.float() @ t.T)):
        assert _rel(got, want) < 1e-2  # each weight's columns on their own
    assert _rel(stacked[:, -5:], (x.float() @ t.T)[:, -5:]) < 1e-2  # the partial unit at the very end
    # the Triton kernel computes the same sums in another order: close, not equal
    triton = nf4_gemv(x, weight, config={"KERNEL": "triton"})
    assert _rel(out, triton.float()) < 1e-2


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("half,nested", [(True, False), (False, False), (True, True)])
def test_fp16_inputs_and_scales_without_double_quantization(kernel, half, nested):
    import torch

    from models import nf4_cuda

    generator = torch.Generator(device="cuda").manual_seed(7)
    weight, w = _quantized(1024, 2048, generator, nested=nested)
    assert weight.nested == nested
    for batch in (1, 4):
        x = torch.randn(batch, 2048, device="cuda", generator=generator)
        x = x.half() if half else x.bfloat16()
        out = _cuda(x, [weight], nf4_cuda.PLAIN, config=KERNELS[kernel])
        assert out.dtype == x.dtype
        assert _rel(out, x.float() @ w.T) < 1e-2
        product = (x.float() @ w.T).to(x.dtype)
        silu = _cuda(x, [weight, weight], nf4_cuda.SILU_MUL, config=KERNELS[kernel])
        assert _rel(silu, (torch.nn.functional.silu(product) * product).float()) < 1e-2


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
    assert torch.equal(first, _replayed(lambda out: nf4_gemv(x, gate, up=up, out=out, config=CUDA), first))


@pytest.mark.parametrize("batch", [1, 4])
def test_the_tensor_core_kernel_gives_the_same_bits_for_a_given_number_of_warps(batch):
    import torch

    from models import grid_overlap, nf4_cuda
    from models.nf4_gemv import nf4_gemv

    generator = torch.Generator(device="cuda").manual_seed(11)
    down, _ = _quantized(5120, 13824, generator)
    x = torch.randn(batch, 13824, device="cuda", generator=generator).bfloat16()
    res = torch.randn(batch, 5120, device="cuda", generator=generator).bfloat16()
    mma = dict(CUDA, MMA=1, WARPS=8)
    first = _cuda(x, [down], nf4_cuda.RESIDUAL, res, config=mma)  # the kernel itself, never a fallback
    assert torch.equal(first, nf4_gemv(x, down, residual=res, config=mma))  # no atomics
    for tiling in ({"DEPTH": 3}, {"MINB": 1}, {"DEPTH": 3, "MINB": 1}, {"ASYNC": 0, "DEPTH": 2},
                   {"ASYNC": 0, "DEPTH": 3}, {"ASYNC": 1, "DEPTH": 2}, {"ASYNC": 1, "DEPTH": 5},
                   {"ASYNC": 1, "DEPTH": 8, "MINB": 1},
                   {"ASYNC": 1, "DEPTH": 4, "PREFETCH": 256}, {"ASYNC": 1, "DEPTH": 2, "XAHEAD": 1},
                   {"ASYNC": 1, "DEPTH": 4, "XAHEAD": 1}, {"PAIR": 1},
                   {"PAIR": 1, "ASYNC": 0, "DEPTH": 2}):  # fmt: skip
        # the ring (ASYNC) and the inputs a step ahead (XAHEAD) only change how the bytes arrive: the same sums in
        # the same order
        assert torch.equal(first, nf4_gemv(x, down, residual=res, config=dict(mma, **tiling))), tiling
    if grid_overlap.supported(x.device):
        assert torch.equal(first, nf4_gemv(x, down, residual=res, config=mma, pdl=True))
    gemv = nf4_gemv(x, down, residual=res, config=dict(CUDA, MMA=0))
    assert not torch.equal(first, gemv)  # another kernel: close, not equal
    assert _rel(first, gemv.float()) < 1e-2
    # a tiling of nf4_gemv.cu (R) without MMA means nf4_gemv.cu at any batch
    assert torch.equal(nf4_gemv(x, down, residual=res, config=dict(CUDA, R=2)), nf4_gemv(x, down, residual=res,
                       config=dict(CUDA, R=2, MMA=0)))  # fmt: skip
    assert torch.equal(first, _replayed(lambda out: nf4_gemv(x, down, residual=res, out=out, config=mma), first))


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


def test_the_tensor_core_kernel_reads_its_table_at_the_address_the_device_gave(monkeypatch):
    import torch

    from models import nf4_cuda

    generator = torch.Generator(device="cuda").manual_seed(13)
    gate, g = _quantized(1000, 576, generator)
    up, u = _quantized(1000, 576, generator)
    x = torch.randn(3, 576, device="cuda", generator=generator).bfloat16()
    fast = _cuda(x, [gate, up], nf4_cuda.SILU_MUL, config={"MMA": 1})
    expected = torch.nn.functional.silu((x.float() @ g.T).bfloat16()) * (x.float() @ u.T).bfloat16()
    assert _rel(fast, expected.float()) < 1e-2
    at = nf4_cuda._smem_ats[x.device.index]
    if torch.cuda.get_device_capability(x.device) >= (9, 0):
        assert at is not None and at > 0  # Hopper: the dynamic shared memory starts past the reserved 1 KB
    monkeypatch.setattr(nf4_cuda, "_smem_ats", {x.device.index: None})  # built with the run-time base instead
    monkeypatch.setattr(nf4_cuda, "_kernels", {})
    assert torch.equal(fast, _cuda(x, [gate, up], nf4_cuda.SILU_MUL, config={"MMA": 1}))
