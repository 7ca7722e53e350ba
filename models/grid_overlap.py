"""Programmatic dependent launch (Hopper and later): a decode step's next kernel starts while this one ends.

At batch 1 a decode step is ~300 short kernels in a row, and a kernel that streams weights runs below the memory's
speed while its first programs ramp up and its last ones drain. Launched as a programmatic dependent launch, the
next kernel is started once every program of the current one has started (``gdc_launch_dependents``); it requests
what does not depend on the current one (its weights) at once and waits (``gdc_wait``) before it reads anything
the current one writes. A CUDA graph captures these launches as programmatic edges, so replays overlap the same way.

Every kernel launched this way must call ``gdc_wait`` before its first dependent read and before any write; both
calls are no-ops in a kernel launched the ordinary way.
"""

from __future__ import annotations

import triton.language as tl

try:
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
except ImportError:  # a Triton without grid dependency control: kernels are compiled with PDL=0 and never call them

    @tl.core.extern
    def gdc_wait(_semantic=None):
        raise NotImplementedError("this Triton has no grid dependency control")

    @tl.core.extern
    def gdc_launch_dependents(_semantic=None):
        raise NotImplementedError("this Triton has no grid dependency control")


def supported(device) -> bool:
    """Whether kernels on ``device`` can be launched as programmatic dependent launches (compute capability 9.0+,
    a Triton that knows it, compiled kernels rather than the interpreter)."""
    import os

    import torch
    import triton.language.extra.cuda as cuda_extra

    if getattr(device, "type", str(device)) != "cuda" or os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return False
    if not hasattr(cuda_extra, "gdc_wait"):
        return False
    try:
        from triton.backends.nvidia.compiler import CUDAOptions
    except ImportError:
        return False
    if "launch_pdl" not in getattr(CUDAOptions, "__dataclass_fields__", {}):
        return False
    return torch.cuda.get_device_capability(device)[0] >= 9


def pdl_options(pdl: bool) -> dict:
    """The keyword arguments a kernel with a ``PDL`` constexpr is launched with."""
    return {"PDL": 1, "launch_pdl": True} if pdl else {"PDL": 0}
