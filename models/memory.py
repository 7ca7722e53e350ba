"""Where models live: a CUDA GPU, or the CPU whose 'device memory' is RAM. Same questions for both."""

from __future__ import annotations

import gc
import os
from typing import Protocol


class MemoryDevice(Protocol):
    name: str

    def total_bytes(self) -> int: ...

    def free_bytes(self) -> int: ...

    def allocated_bytes(self) -> int:
        """Bytes this process holds on the device, by the allocator's count (RSS on the CPU)."""
        ...

    def peak_bytes(self) -> int: ...

    def release_cached(self) -> None:
        """Return freed memory to the device after references were dropped."""
        ...


class CudaMemory:
    def __init__(self, index: int = 0) -> None:
        import torch

        self._torch = torch
        self.index = index
        self.name = f"cuda:{index} ({torch.cuda.get_device_name(index)})"

    def total_bytes(self) -> int:
        return self._torch.cuda.mem_get_info(self.index)[1]

    def free_bytes(self) -> int:
        return self._torch.cuda.mem_get_info(self.index)[0]

    def allocated_bytes(self) -> int:
        return self._torch.cuda.memory_allocated(self.index)

    def peak_bytes(self) -> int:
        return self._torch.cuda.max_memory_allocated(self.index)

    def release_cached(self) -> None:
        gc.collect()
        self._torch.cuda.empty_cache()


class CpuMemory:
    """RAM as the budgeted device: free is what the OS says is available, allocated is this process's RSS."""

    name = "cpu (RAM)"

    def total_bytes(self) -> int:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")

    def free_bytes(self) -> int:
        try:
            with open("/proc/meminfo") as handle:
                for line in handle:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")

    def allocated_bytes(self) -> int:
        try:
            with open("/proc/self/statm") as handle:
                return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            return 0

    def peak_bytes(self) -> int:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def release_cached(self) -> None:
        gc.collect()


def memory_device(device: str) -> MemoryDevice:
    if device.startswith("cuda"):
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        return CudaMemory(index)
    return CpuMemory()
