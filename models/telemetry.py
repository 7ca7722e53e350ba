"""GPU readings through NVML, and a rolling history for the System panel. Absent values stay absent."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuReading:
    """One sample; None where the value is not available (no GPU, or the driver does not report it)."""

    time: float
    gpu_name: str | None = None
    memory_used: int | None = None
    memory_total: int | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    utilization_pct: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


class Nvml:
    """nvidia-ml-py, opened once; ``available`` is False on machines without an NVIDIA driver."""

    def __init__(self, index: int = 0) -> None:
        self.available = False
        self.error: str | None = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(self._handle)
            self.name = name.decode() if isinstance(name, bytes) else name
            self.available = True
        except ImportError:
            self.error = "nvidia-ml-py is not installed"
        except Exception as exc:  # noqa: BLE001 - NVMLError_LibraryNotFound and friends on a CPU machine
            self.error = f"NVML unavailable: {exc}"

    def read(self) -> GpuReading:
        now = time.time()
        if not self.available:
            return GpuReading(now)
        nvml, handle = self._nvml, self._handle
        memory = _try(lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
        return GpuReading(
            time=now,
            gpu_name=self.name,
            memory_used=int(memory.used) if memory else None,
            memory_total=int(memory.total) if memory else None,
            temperature_c=_try(lambda: float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))),
            power_w=_try(lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0),
            utilization_pct=_try(lambda: float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)),
        )


def _try(read):
    try:
        return read()
    except Exception:  # noqa: BLE001 - a value the driver does not report is shown as absent
        return None


@dataclass(frozen=True)
class GenerationRecord:
    time: float
    model: str
    first_token_ms: float
    tokens_per_s: float
    tokens: int


class Telemetry:
    """Samples the GPU every ``interval`` seconds in a background thread; keeps ``minutes`` of history."""

    def __init__(self, nvml: Nvml | None = None, interval: float = 2.0, minutes: float = 10.0) -> None:
        self.nvml = nvml or Nvml()
        self.interval = interval
        size = max(10, int(minutes * 60 / interval))
        self.readings: deque[GpuReading] = deque(maxlen=size)
        self.generations: deque[GenerationRecord] = deque(maxlen=size)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> GpuReading:
        reading = self.nvml.read()
        self.readings.append(reading)
        return reading

    def record_generation(self, model: str, first_token_ms: float, tokens_per_s: float, tokens: int) -> None:
        self.generations.append(GenerationRecord(time.time(), model, first_token_ms, tokens_per_s, tokens))

    def start(self) -> None:
        if self._thread is not None:
            return

        def run() -> None:
            while not self._stop.is_set():
                self.sample()
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=run, name="zhiku-telemetry", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
