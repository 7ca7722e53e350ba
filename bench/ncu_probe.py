"""The 13B step's NF4 products and decode attention, each launched twice eagerly, for Nsight Compute to profile.

Run on a CUDA machine with bitsandbytes (docs/benchmarks.md section 6 says what it found):
    ncu --clock-control none -k regex:"^(nf4_gemv|nf4_mma|attention_split_kernel|attention_combine_kernel)$" \\
        --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section Occupancy \\
        --section LaunchStats --section SourceCounters --section MemoryWorkloadAnalysis -o probe \\
        python bench/ncu_probe.py
    ncu -i probe.ncu-rep --page source --csv --print-source sass > source.csv   # stall samples per instruction
Launch order: at batch 4 q·k·v, gate·up, o, down (tensor cores, nf4_mma.cu), twice; at batch 1 q·k·v and gate·up
(nf4_gemv.cu), twice; then the attention (split, combine) at batch 4 and 1 over 1,503 positions of 4,096, twice.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import torch

    from bench.gpu_kernels import quantized
    from models.decode_kernels import attention
    from models.nf4_gemv import Nf4Weight, nf4_gemv, nf4_gemv_stacked

    g = torch.Generator(device="cuda").manual_seed(0)
    square = [Nf4Weight.from_state(*quantized(5120, 5120, g)) for _ in range(4)]
    gate, up = (Nf4Weight.from_state(*quantized(13824, 5120, g)) for _ in range(2))
    down = Nf4Weight.from_state(*quantized(5120, 13824, g))
    for batch in (4, 1):
        x, x_down = (torch.randn(batch, k, device="cuda", generator=g).bfloat16() for k in (5120, 13824))
        res = torch.randn(batch, 5120, device="cuda", generator=g).bfloat16()
        for _ in range(2):
            nf4_gemv_stacked(x, square[:3])
            nf4_gemv(x, gate, up=up)
            if batch == 4:
                nf4_gemv(x, square[3], residual=res)
                nf4_gemv(x_down, down, residual=res)
    for batch in (4, 1):
        cache = torch.randn(2, batch, 40, 4096, 128, device="cuda", generator=g).bfloat16()
        q = torch.randn(batch, 40 * 128, device="cuda", generator=g).bfloat16()
        pos = torch.full((batch,), 1502, dtype=torch.long, device="cuda")
        for _ in range(2):
            attention(q, cache[0], cache[1], pos, 40, 40, 128, 0.088)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
