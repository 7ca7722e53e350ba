"""models/nf4_gemv.cu and nf4_mma.cu without a GPU: NVRTC compiles them for each GPU generation zhiku supports, in
every variant ``models.nf4_cuda`` launches by default, and the compiled code keeps everything in registers (no
local memory: a spill would cost far more than it saves). Runs where NVRTC is installed (CI installs
nvidia-cuda-nvrtc and sets ZHIKU_REQUIRE_NVRTC=1, making a missing NVRTC a failure); the kernels' results are
checked on a GPU in tests/gpu/test_nf4_cuda.py."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from models import nf4_cuda


@pytest.fixture(scope="module")
def nvrtc():
    try:
        nf4_cuda._nvrtc()
    except nf4_cuda.CudaError as exc:
        if os.environ.get("ZHIKU_REQUIRE_NVRTC") == "1":
            pytest.fail(f"NVRTC is required here: {exc}")
        pytest.skip(str(exc))


def _cuobjdump() -> str:
    import triton

    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    if not path.is_file():
        pytest.skip("Triton's cuobjdump is not installed")
    return str(path)


def _variants():
    for batch in (1, 2, 3, 4, 8):
        for epilogue in (nf4_cuda.PLAIN, nf4_cuda.RESIDUAL, nf4_cuda.SILU_MUL):
            for k in (5120, 13824):
                for mma in (False, True):  # nf4_gemv.cu, and the tensor-core nf4_mma.cu
                    config = nf4_cuda.default_config(batch, epilogue, k, mma)
                    if batch > nf4_cuda.MAX_BATCH and not config.get("MMA"):
                        continue
                    defines = dict(config, B=batch, EPILOGUE=epilogue, NESTED=1, XF16=0, PDL=1)
                    if not mma:  # where nf4_gemv.cu keeps the inputs
                        defines["XHOLES"] = int(nf4_cuda.input_layout(batch, k)[0])
                    else:  # as launch gives it: whole steps of 128 weights
                        defines["HALF"] = nf4_cuda.mma_half(batch, k)
                    yield defines
                    if mma:  # the other way the weights may arrive (registers, or the ring), as launch may pick
                        yield dict(defines, ASYNC=1 - defines["ASYNC"], DEPTH=2 if defines["ASYNC"] else 4, XAHEAD=0)
                        if epilogue != nf4_cuda.SILU_MUL:  # units of 32 rows in two slots
                            yield dict(defines, PAIR=1)


def _dump(cubin: bytes, tmp_path: Path, what: str) -> str:  # cuobjdump -res-usage or -sass of a cubin
    path = tmp_path / "kernel.cubin"
    path.write_bytes(cubin)
    return subprocess.run([_cuobjdump(), what, str(path)], capture_output=True, text=True, check=True).stdout


def _resources(cubin: bytes, tmp_path: Path) -> dict:
    """Registers, stack and local memory of a cubin's most demanding function: nf4_mma.cu's cubin also holds the
    small nf4_mma_smem_at, reported after the kernel (reading the last figures read that one's)."""
    usage: dict = {}
    for key, value in re.findall(r"(REG|STACK|LOCAL):(\d+)", _dump(cubin, tmp_path, "-res-usage")):
        usage[key] = max(usage.get(key, 0), int(value))
    return usage


def test_every_default_variant_compiles_for_hopper_without_spilling(nvrtc, tmp_path):
    seen = set()
    for defines in _variants():
        key = tuple(sorted(defines.items()))
        if key in seen:
            continue
        seen.add(key)
        # the tensor-core kernel also as built once the device said where shared memory starts (Hopper: 1 KB in)
        for build in (defines, dict(defines, SMEM_AT=1024)) if defines.get("MMA") else (defines,):
            usage = _resources(nf4_cuda.compile_cubin(build, "sm_90"), tmp_path)
            assert usage["STACK"] == 0 and usage["LOCAL"] == 0, (build, usage)
            assert usage["REG"] <= 65536 // (32 * defines["WARPS"] * defines["MINB"]), (build, usage)
    assert len(seen) >= 8
    assert any(dict(key)["B"] == 1 for key in seen) and any(dict(key).get("MMA") for key in seen)


@pytest.mark.parametrize("arch", ["sm_80", "sm_86", "sm_89"])
def test_it_compiles_for_ampere_and_ada_with_fp16_and_plain_scales(nvrtc, arch, tmp_path):
    # an RTX 4090 is sm_89; no programmatic dependent launch there (the PTX for it is left out below sm_90)
    for batch, epilogue, mma in ((1, nf4_cuda.SILU_MUL, False), (3, nf4_cuda.RESIDUAL, False),
                                 (1, nf4_cuda.SILU_MUL, True), (4, nf4_cuda.RESIDUAL, True)):  # fmt: skip
        defines = dict(nf4_cuda.default_config(batch, epilogue, 4096, mma), B=batch, EPILOGUE=epilogue, NESTED=0,
                       XF16=1, PDL=1, **({} if mma else {"XHOLES": 1}))  # fmt: skip
        usage = _resources(nf4_cuda.compile_cubin(defines, arch), tmp_path)
        assert usage["STACK"] == 0 and usage["LOCAL"] == 0, (arch, defines, usage)


def test_a_broken_source_is_reported_with_the_compiler_log(nvrtc, monkeypatch, tmp_path):
    broken = tmp_path / "broken.cu"
    broken.write_text(nf4_cuda.SOURCE.read_text().replace("acc[j][s] = hfma2(", "acc[j][s] = hfma3("))
    monkeypatch.setattr(nf4_cuda, "SOURCE", broken)
    with pytest.raises(nf4_cuda.CudaError, match="hfma3"):
        nf4_cuda.compile_cubin(next(_variants()), "sm_90")


def _thread_index_reads(cubin: bytes, tmp_path: Path) -> int:
    return len(re.findall(r"S2R R\d+, SR_TID\.X", _dump(cubin, tmp_path, "-sass")))


def _with_threadidx(monkeypatch, tmp_path: Path) -> None:
    """NF4 kernels compile from a copy of nf4_mma.cu with the thread index taken from threadIdx.x again."""
    source = nf4_cuda.MMA_SOURCE.read_text()
    plain = re.sub(r'  u32 tid;\n  asm volatile\("mov\.u32 %0, %%tid\.x;" : "=r"\(tid\)\);\n'
                   r"  const int lane = tid & 31, warp = tid >> 5;",
                   "  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;", source)  # fmt: skip
    plain = plain.replace("scale[j], h, 4)", "scale[j], ((lane >> 2) << 2) | h)")
    plain = plain.replace("scale[j], 2 | h, 4)", "scale[j], ((lane >> 2) << 2) | 2 | h)")
    assert plain.count("threadIdx.x") == source.count("threadIdx.x") + 2 and "h, 4)" not in plain  # (all undone)
    (tmp_path / "plain.cu").write_text(plain)
    monkeypatch.setattr(nf4_cuda, "MMA_SOURCE", tmp_path / "plain.cu")


def test_the_tensor_core_kernel_reads_the_thread_index_once_and_keeps_its_registers(nvrtc, monkeypatch, tmp_path):
    # at 128 registers a thread the compiler remade the lane's addresses from SR_TID.X at each step, each read a
    # ~20-cycle wait (Nsight Compute, docs/benchmarks.md section 6, session 11): the kernel takes the index once
    # through asm and gives the scale shuffles their lane within a group of 4 as an immediate. Where K may end
    # halfway through a step (HALF=1) that build reads the index fewer times; in the build of whole steps (HALF=0,
    # every 13B shape) the copy with threadIdx.x spills to local memory instead, and measured 3 % slower a decode
    # step at batch 4 on an H200 (session 12)
    qkv = dict(nf4_cuda.MMA_CONFIG, B=4, EPILOGUE=nf4_cuda.PLAIN, NESTED=1, XF16=0, PDL=1, SMEM_AT=1024)
    ours = {half: nf4_cuda.compile_cubin(dict(qkv, HALF=half), "sm_90") for half in (1, 0)}
    _with_threadidx(monkeypatch, tmp_path)
    theirs = {half: nf4_cuda.compile_cubin(dict(qkv, HALF=half), "sm_90") for half in (1, 0)}
    assert _thread_index_reads(ours[1], tmp_path) * 1.3 < _thread_index_reads(theirs[1], tmp_path)
    assert _resources(ours[0], tmp_path)["STACK"] == 0 < _resources(theirs[0], tmp_path)["STACK"]


def test_whole_steps_compile_without_the_tests_for_a_missing_block(nvrtc, tmp_path):
    # launch gives HALF=0 where K is a multiple of 128 (every 13B shape): every step has both scale blocks and a row
    # past the end is scaled like the last row (its sums are never written), so the copies and the scales test
    # nothing: 1.6 % off the decode step at batch 4 on an H200 (session 12). The same sums: tests/gpu checks the bits
    shapes = ((4, 5120), (3, 13824), (4, 576), (4, 1088), (8, 5120))  # (batch, K)
    assert [nf4_cuda.mma_half(batch, k) for batch, k in shapes] == [0, 0, 1, 1, 1]
    for epilogue in (nf4_cuda.PLAIN, nf4_cuda.SILU_MUL):
        defines = dict(nf4_cuda.MMA_CONFIG, B=4, EPILOGUE=epilogue, NESTED=1, XF16=0, PDL=1, SMEM_AT=1024)
        sass = {half: _dump(nf4_cuda.compile_cubin(dict(defines, HALF=half), "sm_90"), tmp_path, "-sass")
                for half in (1, 0)}  # fmt: skip
        selects = {half: len(re.findall(r"\bSEL\b", text)) for half, text in sass.items()}
        instructions = {half: len(re.findall(r"/\*[0-9a-f]{4,5}\*/", text)) for half, text in sass.items()}
        assert selects[0] * 2 < selects[1], selects
        assert instructions[0] < 0.97 * instructions[1], instructions


def test_without_a_cuda_device_the_kernel_declines():
    import torch

    assert nf4_cuda.available(torch.device("cpu")) == "not a CUDA device"
    assert nf4_cuda.launch(torch.zeros(1, 64, dtype=torch.bfloat16), [], nf4_cuda.PLAIN, None, None) is None


def test_a_pipeline_depth_the_kernel_does_not_have_is_refused_at_compile_time(nvrtc):
    with pytest.raises(nf4_cuda.CudaError, match="DEPTH is 2 or 3"):
        nf4_cuda.compile_cubin(dict(next(_variants()), DEPTH=4), "sm_90")
    ring = dict(nf4_cuda.MMA_CONFIG, ASYNC=1, B=4, EPILOGUE=0, NESTED=1, XF16=0, PDL=1)
    with pytest.raises(nf4_cuda.CudaError, match="2 to 8 with ASYNC"):
        nf4_cuda.compile_cubin(dict(ring, DEPTH=9), "sm_90")


def test_the_ring_of_shared_memory_shrinks_to_what_the_device_has():
    ring = dict(nf4_cuda.MMA_CONFIG, ASYNC=1, WARPS=8, DEPTH=4, PAIR=0)
    h100, rtx4090 = 227 * 1024, 99 * 1024  # shared memory one block may have
    assert nf4_cuda._ring_that_fits(ring, nf4_cuda.PLAIN, h100) == ring
    assert nf4_cuda._ring_that_fits(dict(ring, PAIR=1), nf4_cuda.PLAIN, h100) == dict(ring, PAIR=1)
    # an RTX 4090: the pair table (67 KB) leaves room for 2 steps of 8 warps, not 4; for units of 32 rows (two
    # slots a step), only with units of 16 again, rather than no ring
    assert nf4_cuda._ring_that_fits(ring, nf4_cuda.PLAIN, rtx4090) == dict(ring, DEPTH=2)
    assert nf4_cuda._ring_that_fits(dict(ring, PAIR=1), nf4_cuda.PLAIN, rtx4090) == dict(ring, DEPTH=2)
    assert nf4_cuda.mma_shared(dict(ring, DEPTH=2), nf4_cuda.PLAIN) <= rtx4090
    # gate and up need twice the ring: none fits there, the weights then come through registers
    assert nf4_cuda._ring_that_fits(ring, nf4_cuda.SILU_MUL, rtx4090) == dict(ring, ASYNC=0, DEPTH=2, XAHEAD=0)
    assert nf4_cuda._ring_that_fits(dict(ring, ASYNC=0, DEPTH=3), nf4_cuda.SILU_MUL, 0)["DEPTH"] == 3  # untouched


def test_batches_from_three_go_to_the_tensor_cores_with_their_own_tiling_for_o_and_down():
    for batch in (1, 2):
        assert not nf4_cuda.default_config(batch, nf4_cuda.PLAIN, 5120).get("MMA")
    for batch in (3, 4, 8):
        assert nf4_cuda.default_config(batch, nf4_cuda.PLAIN, 5120) == nf4_cuda.MMA_CONFIG
        assert nf4_cuda.default_config(batch, nf4_cuda.SILU_MUL, 5120) == nf4_cuda.MMA_CONFIG
        assert nf4_cuda.default_config(batch, nf4_cuda.RESIDUAL, 13824) == nf4_cuda.MMA_RESIDUAL_CONFIG
    assert nf4_cuda.default_config(1, nf4_cuda.PLAIN, 5120, mma=True)["MMA"] == 1  # asked for
    assert "MMA" not in nf4_cuda.default_config(4, nf4_cuda.PLAIN, 5120, mma=False)
