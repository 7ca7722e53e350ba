"""The NF4 products in CUDA C (``models/nf4_gemv.cu``; batches on the tensor cores: ``models/nf4_mma.cu``), compiled
at run time by NVRTC and launched on PyTorch's stream.

The Triton kernel (``models.nf4_gemv``) spends about 5 instructions per weight, half of them decoding nibbles,
which holds it at 38 % of the copy bandwidth on an H100 and 26 % on an H200. In CUDA C a byte becomes its two
weights' fp16 pair by one byte permute and one conflict-free shared-memory load (see the .cu file): about 2.8
instructions per weight in all, and 56 % of the copy bandwidth on an H200 (docs/benchmarks.md, section 6).

Nothing here needs the CUDA toolkit: NVRTC ships with PyTorch's CUDA wheels (``nvidia-cuda-nvrtc``) and the
driver loads the compiled code. Where NVRTC or the driver cannot be found, or a shape does not fit (batch > 8,
inputs too long for shared memory), ``launch`` returns None and callers use the Triton kernel. Where only the
tensor-core kernel fails (or the GPU predates bf16 mma, compute capability 8.0), batches of up to 4 go to
nf4_gemv.cu.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import logging
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("nf4_gemv.cu")
MMA_SOURCE = Path(__file__).with_name("nf4_mma.cu")  # the products on the tensor cores (MMA=1)
COMMON = Path(__file__).with_name("nf4_common.cuh")  # what both include
MAX_BATCH = 4  # nf4_gemv.cu's; nf4_mma.cu takes up to 8 sequences (the columns of one mma)
MMA_MAX_BATCH = 8
LUT_BYTES = 256 * 64 * 4 + 3 * 256 * 4  # the pair table (a 256-byte row per byte value), 3 nested code tables
HOLE_CHUNKS = 256 * 8  # 16-byte chunks of inputs that fit in the unused halves of the pair table's rows
CUDA_KEYS = ("R", "WARPS", "MINB", "DEPTH", "MMA", "ASYNC", "PREFETCH", "XAHEAD", "PAIR")
# the smallest batch whose products run on the tensor cores by default (nf4_mma.cu): at batch 4 on an H200 each
# product of the 13B step took 13-38 % less time than on nf4_gemv.cu (whose HFMA2 per pair and sequence limits it
# there), at batch 1 7-31 % more with its best tilings (docs/benchmarks.md section 6). Batches 2 and 3 were not
# timed: nf4_gemv.cu's times between its batch 1 and 4 put batch 2 on its side.
MMA_FROM_BATCH = 3
# its tilings, the fastest at batch 4 on an H200 (bench/gpu_kernels.py --products, docs/benchmarks.md section 6):
# the weights through a ring of 2 steps per warp (ASYNC), the inputs loaded a step ahead (XAHEAD), blocks of 8
# warps, two a multiprocessor (gate·up's too: its ring of 4 steps left room for one). The same for o and down now
# (it was 16 warps, 4 steps), kept apart because their best tiling has differed. PAIR (units of 32 rows) for q·k·v:
# 21.2 µs against 22.2-22.6 at batch 4; o and down, with a third as many rows, were 18-28 % slower with it (fewer
# units than blocks)
MMA_CONFIG = {"MMA": 1, "WARPS": 8, "MINB": 2, "DEPTH": 2, "ASYNC": 1, "PREFETCH": 0, "XAHEAD": 1, "PAIR": 1}
MMA_RESIDUAL_CONFIG = dict(MMA_CONFIG, PAIR=0)


def default_config(batch: int, epilogue: int, k: int, mma: bool | None = None) -> dict:
    """The tensor-core kernel's tiling (``MMA_CONFIG``, ``MMA_RESIDUAL_CONFIG`` for o and down: warps per block, blocks
    per multiprocessor, DEPTH, ASYNC, PREFETCH, XAHEAD, PAIR; ``launch`` shortens the ring to the device's shared
    memory) from ``MMA_FROM_BATCH`` sequences on, or where ``mma`` asks for it; otherwise nf4_gemv.cu's: rows per warp
    (R), warps per block, blocks per multiprocessor the compiler must allow for (registers), and DEPTH: steps whose
    bytes a warp has requested (2: the next one while it computes this one). The fastest of each product of the 13B step
    on an H200 (bench/gpu_kernels.py --products, docs/benchmarks.md section 6): at batch 1, 4 rows per warp one step
    ahead, but gate·up (2 rows of each) two steps ahead, and rows of 8,192 weights or more (down) 2 rows per warp with 3
    blocks per multiprocessor; larger batches need more registers per row, so fewer rows per warp and more warps."""
    if mma if mma is not None else batch >= MMA_FROM_BATCH:
        return dict(MMA_RESIDUAL_CONFIG if epilogue == RESIDUAL else MMA_CONFIG)
    if batch == 1:
        if epilogue == SILU_MUL:
            return {"R": 2, "WARPS": 8, "MINB": 2, "DEPTH": 3}
        if k >= 8192:
            return {"R": 2, "WARPS": 8, "MINB": 3, "DEPTH": 2}
        return {"R": 4, "WARPS": 8, "MINB": 2, "DEPTH": 2}
    return {"R": 1 if epilogue == SILU_MUL else 2, "WARPS": 16, "MINB": 1, "DEPTH": 3}


PLAIN, RESIDUAL, SILU_MUL = 0, 1, 2

_lock = threading.Lock()
_kernels: dict = {}
_failed: list[str] = []  # why the CUDA kernels are unavailable, once known
_mma_failed: list[str] = []  # why the tensor-core kernel alone is, once known


class CudaError(RuntimeError):
    pass


@functools.cache
def _nvrtc() -> ctypes.CDLL:
    for name in ("libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"):
        try:
            return ctypes.CDLL(name)
        except OSError:
            pass
    for root in sys.path:  # the nvidia-cuda-nvrtc wheel: site-packages/nvidia/cu13/lib or nvidia/cuda_nvrtc/lib
        for path in sorted(glob.glob(os.path.join(root, "nvidia", "*", "lib", "libnvrtc.so.*")), reverse=True):
            if ".alt." in path:
                continue
            try:  # NVRTC opens its builtins by name: load them first, from the same folder
                for builtins in glob.glob(os.path.join(os.path.dirname(path), "libnvrtc-builtins.so.*")):
                    if ".alt." not in builtins:
                        ctypes.CDLL(builtins, mode=ctypes.RTLD_GLOBAL)
                return ctypes.CDLL(path)
            except OSError:
                pass
    raise CudaError("NVRTC (libnvrtc) was not found; PyTorch's CUDA wheels bring it (nvidia-cuda-nvrtc)")


def compile_cubin(defines: dict, arch: str) -> bytes:
    """The kernel compiled for ``arch`` (e.g. "sm_90") with ``defines`` (-D NAME=VALUE), as a CUBIN: nf4_gemv.cu,
    or nf4_mma.cu where MMA=1."""
    lib = _nvrtc()
    prog = ctypes.c_void_p()
    path = MMA_SOURCE if defines.get("MMA") else SOURCE
    headers = (ctypes.c_char_p * 1)(COMMON.read_bytes())  # what both kernels #include
    names = (ctypes.c_char_p * 1)(COMMON.name.encode())
    source, source_name = path.read_bytes(), path.name.encode()
    _nvrtc_check(lib, lib.nvrtcCreateProgram(ctypes.byref(prog), source, source_name, 1, headers, names))
    options = [f"--gpu-architecture={arch}", "-std=c++17", "-default-device"]
    options += [f"-D{name}={int(value)}" for name, value in sorted(defines.items())]
    array = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
    try:
        result = lib.nvrtcCompileProgram(prog, len(options), array)
        if result != 0:
            size = ctypes.c_size_t()
            lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
            text = ctypes.create_string_buffer(size.value)
            lib.nvrtcGetProgramLog(prog, text)
            raise CudaError(f"compiling models/{path.name} failed:\n{text.value.decode(errors='replace')}")
        size = ctypes.c_size_t()
        _nvrtc_check(lib, lib.nvrtcGetCUBINSize(prog, ctypes.byref(size)))
        cubin = ctypes.create_string_buffer(size.value)
        _nvrtc_check(lib, lib.nvrtcGetCUBIN(prog, cubin))
        return cubin.raw
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def _nvrtc_check(lib, result: int) -> None:
    if result != 0:
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        raise CudaError(f"NVRTC: {lib.nvrtcGetErrorString(result).decode()}")


# -- the driver ----------------------------------------------------------------------------------------------------


class _Weights(ctypes.Structure):
    """``struct Weights`` of the .cu file."""

    _fields_ = [
        ("packed", ctypes.c_void_p * 3),
        ("absmax", ctypes.c_void_p * 3),
        ("nested_code", ctypes.c_void_p * 3),
        ("nested_absmax", ctypes.c_void_p * 3),
        ("offset", ctypes.c_float * 3),
        ("n", ctypes.c_int * 3),
        ("col0", ctypes.c_int * 3),
        ("units_end", ctypes.c_int * 3),
    ]


class _LaunchAttribute(ctypes.Structure):  # CUlaunchAttribute: id, padding, a 64-byte value union
    _fields_ = [("id", ctypes.c_int), ("pad", ctypes.c_char * 4), ("value", ctypes.c_int), ("rest", ctypes.c_char * 60)]


class _LaunchConfig(ctypes.Structure):  # CUlaunchConfig
    _fields_ = [
        ("grid", ctypes.c_uint * 3),
        ("block", ctypes.c_uint * 3),
        ("shared", ctypes.c_uint),
        ("stream", ctypes.c_void_p),
        ("attrs", ctypes.POINTER(_LaunchAttribute)),
        ("num_attrs", ctypes.c_uint),
    ]


PROGRAMMATIC_STREAM_SERIALIZATION = 6  # CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION
MAX_DYNAMIC_SHARED = 8  # CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
MAX_SHARED_OPTIN = 97  # CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN


@functools.cache
def _driver() -> ctypes.CDLL:
    lib = ctypes.CDLL("libcuda.so.1")
    ptr, num = ctypes.c_void_p, ctypes.c_int
    lib.cuLaunchKernel.argtypes = [ptr] + [ctypes.c_uint] * 7 + [ptr] * 3
    lib.cuLaunchKernelEx.argtypes = [ctypes.POINTER(_LaunchConfig), ptr, ptr, ptr]
    lib.cuGetErrorString.argtypes = [num, ctypes.POINTER(ctypes.c_char_p)]
    lib.cuModuleLoadData.argtypes = [ctypes.POINTER(ptr), ctypes.c_char_p]
    lib.cuModuleUnload.argtypes = [ptr]
    lib.cuModuleGetFunction.argtypes = [ctypes.POINTER(ptr), ptr, ctypes.c_char_p]
    lib.cuFuncSetAttribute.argtypes = [ptr, num, num]
    lib.cuOccupancyMaxActiveBlocksPerMultiprocessor.argtypes = [ctypes.POINTER(num), ptr, num, ctypes.c_size_t]
    lib.cuDeviceGetAttribute.argtypes = [ctypes.POINTER(num), num, num]
    return lib


def _check(lib, result: int, what: str) -> None:
    if result != 0:
        text = ctypes.c_char_p()
        lib.cuGetErrorString(result, ctypes.byref(text))
        raise CudaError(f"{what}: CUDA error {result} ({(text.value or b'?').decode()})")


@dataclass
class Kernel:
    function: ctypes.c_void_p
    module: ctypes.c_void_p
    threads: int
    sms: int
    occupancy: dict  # dynamic shared bytes -> blocks per multiprocessor


def kernel(device, defines: dict) -> Kernel:
    """The kernel compiled with ``defines`` for ``device`` (compiled and loaded once per process). nf4_mma.cu is
    built with SMEM_AT once ``_smem_at`` has read it on the device (the first build, without it, reads it)."""
    import torch

    key = (device.index, tuple(sorted(defines.items())))
    with _lock:
        if key in _kernels:
            return _kernels[key]
        major, minor = torch.cuda.get_device_capability(device)
        arch, mma = f"sm_{major}{minor}", bool(defines.get("MMA"))
        lib = _driver()
        with torch.cuda.device(device):
            torch.empty(1, device=device)  # PyTorch's context is current on this thread
            at = _smem_ats.get(device.index)
            module, function = _load(lib, compile_cubin(dict(defines, SMEM_AT=at) if mma and at else defines, arch),
                                     b"nf4_mma" if mma else b"nf4_gemv")  # fmt: skip
            if mma and device.index not in _smem_ats and not torch.cuda.is_current_stream_capturing():
                at = _smem_at(device, module)
                if at is not None:
                    lib.cuModuleUnload(module)  # the build that read it
                    module, function = _load(lib, compile_cubin(dict(defines, SMEM_AT=at), arch), b"nf4_mma")
            _check(lib, lib.cuFuncSetAttribute(function, MAX_DYNAMIC_SHARED, shared_limit(device)), "shared memory")
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        found = _kernels[key] = Kernel(function, module, 32 * defines["WARPS"], sms, {})
        return found


def _load(lib, cubin: bytes, name: bytes):
    module, function = ctypes.c_void_p(), ctypes.c_void_p()
    _check(lib, lib.cuModuleLoadData(ctypes.byref(module), cubin), "loading the NF4 kernel")
    _check(lib, lib.cuModuleGetFunction(ctypes.byref(function), module, name), "finding the kernel")
    return module, function


_smem_ats: dict = {}


def _smem_at(device, module) -> int | None:
    """The shared-memory address at which nf4_mma.cu's dynamic shared memory starts on ``device`` (read once by its
    ``nf4_mma_smem_at`` kernel, launched like the products: one block per cluster, the same dynamic size), or None
    where it does not fit an instruction's immediate offset (kept per device: None then means the run-time base)."""
    import torch

    if device.index not in _smem_ats:
        lib, probe = _driver(), ctypes.c_void_p()
        _check(lib, lib.cuModuleGetFunction(ctypes.byref(probe), module, b"nf4_mma_smem_at"), "finding the probe")
        _check(lib, lib.cuFuncSetAttribute(probe, MAX_DYNAMIC_SHARED, LUT_BYTES), "shared memory")
        out = torch.zeros(1, dtype=torch.int64, device=device)
        pointer = ctypes.c_void_p(out.data_ptr())
        args = (ctypes.c_void_p * 1)(ctypes.cast(ctypes.pointer(pointer), ctypes.c_void_p))
        stream = ctypes.c_void_p(torch.cuda.current_stream(device).cuda_stream)
        _check(lib, lib.cuLaunchKernel(probe, 1, 1, 1, 32, 1, 1, LUT_BYTES, stream, args, None), "the probe")
        at = int(out.item())
        _smem_ats[device.index] = at if 0 < at < 1 << 23 else None  # 0: the plain build is the same
    return _smem_ats[device.index]


def blocks_per_sm(found: Kernel, shared: int) -> int:
    if shared not in found.occupancy:
        lib, blocks = _driver(), ctypes.c_int()
        _check(lib, lib.cuOccupancyMaxActiveBlocksPerMultiprocessor(ctypes.byref(blocks), found.function,
                                                                    found.threads, shared), "occupancy")  # fmt: skip
        found.occupancy[shared] = max(1, blocks.value)
    return found.occupancy[shared]


@functools.cache
def shared_limit(device) -> int:
    """The most dynamic shared memory one block may have on ``device``."""
    lib, value = _driver(), ctypes.c_int()
    _check(lib, lib.cuDeviceGetAttribute(ctypes.byref(value), MAX_SHARED_OPTIN, device.index or 0), "attribute")
    return value.value


def available(device) -> str | None:
    """None where the CUDA kernel can run on ``device``, else why not (said once, then remembered)."""
    if getattr(device, "type", str(device)) != "cuda":
        return "not a CUDA device"
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return "Triton's interpreter is on"
    if _failed:
        return _failed[0]
    try:
        _nvrtc()
        _driver()
    except (OSError, CudaError) as exc:
        _give_up(str(exc))
        return _failed[0]
    return None


def _give_up(reason: str) -> None:
    """From now on the Triton kernel runs instead (said once in the log)."""
    if not _failed:
        log.warning("zhiku's CUDA NF4 kernel is unavailable, the Triton kernel runs instead: %s", reason)
        _failed.append(reason)


def launch(x, weights, epilogue: int, residual, out, config=None, pdl: bool = False):
    """``models.nf4_gemv._launch``'s product on the CUDA kernel, or None where it does not fit or CUDA refused it
    (the caller then uses the Triton kernel). The caller has checked that x [B, K] fits the weights. ``config``:
    MMA (1: nf4_mma.cu, 0: nf4_gemv.cu), R, WARPS, MINB, DEPTH (``default_config``'s keys) override the defaults."""
    import torch

    if available(x.device) is not None:
        return None
    batch, k = x.shape
    if batch > MMA_MAX_BATCH or x.dtype not in (torch.bfloat16, torch.float16) or not 1 <= len(weights) <= 3:
        return None
    given = {key: v for key, v in (config or {}).items() if key in CUDA_KEYS}
    mma = bool(given["MMA"]) if "MMA" in given else (False if "R" in given else None)  # R: nf4_gemv.cu's tiling
    if mma is not False and not _mma_usable(x.device):
        if mma or batch > MAX_BATCH:
            return None
        mma = False
    config = dict(default_config(batch, epilogue, k, mma), **given)
    if config.get("MMA"):
        config = {key: config[key] for key in MMA_CONFIG}
        if not config["ASYNC"]:
            config["XAHEAD"] = 0  # (the register path loads each step's inputs in the step)
        if epilogue == SILU_MUL:
            config["PAIR"] = 0  # (gate and up are its pair)
        depths = range(2, 9) if config["ASYNC"] else (2, 3)
        if (
            config["DEPTH"] not in depths
            or not 1 <= config["WARPS"] <= 16
            or config["MINB"] < 1
            or config["PREFETCH"] not in (0, 128, 256)
            or config["XAHEAD"] not in (0, 1)
            or config["PAIR"] not in (0, 1)
        ):
            raise ValueError(f"nf4_cuda: no such tiling {config}")
        config = _ring_that_fits(config, epilogue, shared_limit(x.device))
    else:
        config = dict(config, MMA=0)
        if config["DEPTH"] not in (2, 3) or not 1 <= config["WARPS"] <= 32 or config["R"] < 1 or config["MINB"] < 1:
            raise ValueError(f"nf4_cuda: no such tiling {config}")
        if batch > MAX_BATCH or config["R"] * batch > 32:  # one lane writes each (row, sequence) of a warp's rows
            return None
    if any(w.packed.data_ptr() % 16 or (w.nested and w.nested_block & (w.nested_block - 1)) for w in weights):
        return None
    try:
        with torch.cuda.device(x.device):
            return _launch(x, weights, epilogue, residual, out, config, pdl)
    except CudaError as exc:  # NVRTC or the driver refused it: the same products from another kernel
        if not config["MMA"]:
            _give_up(str(exc))
            return None
        log.warning("zhiku's tensor-core NF4 kernel is unavailable, batches use nf4_gemv.cu or Triton: %s", exc)
        _mma_failed.append(str(exc))
        return None if "MMA" in given else launch(x, weights, epilogue, residual, out, config=given, pdl=pdl)


def mma_half(batch: int, k: int) -> int:
    """nf4_mma.cu's HALF: 0 (every step of 128 weights whole, so the copies and scales test nothing; 1.6 % off the
    decode step at batch 4 on an H200, docs/benchmarks.md section 6, session 12) where K is a multiple of 128, up
    to batch 4; 1 where K may end halfway through a step, and above batch 4, where that build at 128 registers a
    thread kept a lane's constant in local memory (batches 7 and 8)."""
    return int(k % 128 != 0 or batch > 4)


def _mma_usable(device) -> bool:
    """The tensor-core kernel has not failed, and the GPU has bf16 mma (compute capability 8.0 and later)."""
    import torch

    return not _mma_failed and torch.cuda.get_device_capability(device) >= (8, 0)


def _launch(x, weights, epilogue: int, residual, out, config: dict, pdl: bool):
    import torch

    batch, k = x.shape
    first = weights[0]
    mma = bool(config["MMA"])
    rows = (32 if config.get("PAIR") else 16) if mma else config["R"]
    holes, shared = (False, mma_shared(config, epilogue)) if mma else input_layout(batch, k)
    if shared > shared_limit(x.device):
        return None
    if x.stride(1) != 1 or x.stride(0) % 8 or x.data_ptr() % 16:  # the kernel reads inputs as 16-byte chunks
        x = x.clone(memory_format=torch.contiguous_format)
    pair = epilogue == SILU_MUL
    out_cols = first.n if pair else sum(w.n for w in weights)
    if out is None:
        out = torch.empty((batch, out_cols), dtype=x.dtype, device=x.device)
    defines = {key: config[key] for key in CUDA_KEYS if key in config and key != "MMA"}  # R: nf4_gemv.cu's alone
    defines.update(B=batch, EPILOGUE=epilogue, NESTED=int(first.nested), XF16=int(x.dtype == torch.float16),
                   PDL=int(pdl))  # fmt: skip
    if mma:
        defines.update(MMA=1, HALF=mma_half(batch, k))
    else:
        defines["XHOLES"] = int(holes)
    found = kernel(x.device, defines)

    params = _Weights()
    units_end, col = 0, 0
    padded = (list(weights) + [first, first])[:3]
    for i, w in enumerate(padded):
        params.packed[i] = w.packed.data_ptr()
        params.absmax[i] = w.absmax.data_ptr()
        params.nested_code[i] = w.nested_code.data_ptr()
        params.nested_absmax[i] = w.nested_absmax.data_ptr()
        params.offset[i] = w.offset
        params.n[i] = w.n
        params.col0[i] = col
        if i < len(weights) and not (pair and i > 0):
            units_end += _ceil(w.n, rows)
            col += w.n
        params.units_end[i] = units_end
    units = units_end
    if mma:  # a block takes a unit (16 rows) at a time, its warps splitting K: as many blocks as fit at once
        grid = min(units, found.sms * blocks_per_sm(found, shared))
    else:
        capacity = found.sms * blocks_per_sm(found, shared) * config["WARPS"]
        per_warp = _ceil(units, capacity)  # units per warp at most; then as few warps as that allows
        grid = _ceil(_ceil(units, per_warp), config["WARPS"])

    res = residual if residual is not None else out
    shift = max(first.nested_block, 1).bit_length() - 1
    values = [
        ctypes.c_void_p(x.data_ptr()), ctypes.c_int(x.stride(0)), ctypes.c_void_p(out.data_ptr()),
        ctypes.c_int(out.stride(0)), ctypes.c_void_p(res.data_ptr()), ctypes.c_int(res.stride(0)),
        ctypes.c_void_p(first.code.data_ptr()), ctypes.c_int(k), ctypes.c_int(units), ctypes.c_int(shift), params,
    ]  # fmt: skip
    args = (ctypes.c_void_p * len(values))(*[ctypes.cast(ctypes.pointer(v), ctypes.c_void_p) for v in values])
    stream = ctypes.c_void_p(torch.cuda.current_stream(x.device).cuda_stream)
    lib = _driver()
    if pdl:
        attr = _LaunchAttribute(id=PROGRAMMATIC_STREAM_SERIALIZATION, value=1)
        cfg = _LaunchConfig((grid, 1, 1), (found.threads, 1, 1), shared, stream, ctypes.pointer(attr), 1)
        _check(lib, lib.cuLaunchKernelEx(ctypes.byref(cfg), found.function, args, None), "launching the NF4 kernel")
    else:
        _check(lib, lib.cuLaunchKernel(found.function, grid, 1, 1, found.threads, 1, 1, shared, stream, args,
                                       None), "launching the NF4 kernel")  # fmt: skip
    return out


def _ring_that_fits(config: dict, epilogue: int, limit: int) -> dict:
    """``config`` with as many ring steps as the device's shared memory holds (down to 2), then units of 16 rows
    (PAIR's 32 take two slots of the ring), and without the ring (ASYNC=0, registers) where not even that fits: an
    RTX 4090's block has 99 KB, an H100's 227 KB. The sums and their order are the same either way: so are the
    bits."""
    while config["ASYNC"] and mma_shared(config, epilogue) > limit:
        if config["DEPTH"] > 2:
            config = dict(config, DEPTH=config["DEPTH"] - 1)
        elif config.get("PAIR"):  # (gate·up has two slots either way: launch has set it to 0)
            config = dict(config, PAIR=0)
        else:
            config = dict(config, ASYNC=0, DEPTH=2, XAHEAD=0)
    return config


def mma_shared(config: dict, epilogue: int) -> int:
    """The shared memory a block of nf4_mma.cu needs: the pair table, and with ASYNC each warp's ring of DEPTH
    steps (1,408 bytes per step and slot of 16 rows, a weight's or PAIR's half: 16 rows x 64 bytes, then three
    words per lane)."""
    slots = 2 if epilogue == SILU_MUL or config.get("PAIR") else 1
    return LUT_BYTES + (config["WARPS"] * config["DEPTH"] * slots * 1408 if config.get("ASYNC") else 0)


def input_layout(batch: int, k: int) -> tuple[bool, int]:
    """Where the kernel keeps the inputs (XHOLES: in the pair table's unused halves) and the shared memory a block
    then needs. The inputs take K rounded up to 1,024 per sequence, in 16-byte chunks."""
    chunks = batch * _ceil(k, 1024) * 128
    holes = chunks <= HOLE_CHUNKS
    return holes, LUT_BYTES + (0 if holes else chunks * 16)


def _ceil(a: int, b: int) -> int:
    return -(-a // b)
