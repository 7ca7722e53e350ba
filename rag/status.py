"""What the System panel and ``python -m rag status`` show: models against the budget, and GPU readings."""

from __future__ import annotations

from dataclasses import asdict

from models.footprint import GIB
from models.governor import GovernorState
from models.telemetry import GpuReading

MODEL_HEADERS = ["model", "resident", "pinned", "in use", "estimate GiB", "measured GiB", "counted GiB", "load s"]


def _gib(n: int | None) -> float | None:
    return None if n is None else round(n / GIB, 2)


def model_rows(state: GovernorState) -> list[list]:
    return [
        [
            m.name,
            "yes" if m.resident else "no",
            "yes" if m.pinned else "no",
            m.in_use,
            _gib(m.estimate),
            _gib(m.measured),
            _gib(m.footprint) if m.resident else None,
            None if m.load_seconds is None else round(m.load_seconds, 2),
        ]
        for m in state.models
    ]


def status_dict(state: GovernorState, reading: GpuReading) -> dict:
    return {
        "device": state.device,
        "budget_bytes": state.budget,
        "committed_bytes": state.committed,
        "device_total_bytes": state.device_total,
        "device_free_bytes": state.device_free,
        "allocated_bytes": state.allocated,
        "models": [asdict(m) for m in state.models],
        "gpu": reading.as_dict(),
        "events": state.events[-20:],
    }


def status_lines(state: GovernorState, reading: GpuReading) -> list[str]:
    lines = [
        f"device: {state.device}",
        f"budget: {_gib(state.budget)} GiB; models counted: {_gib(state.committed)} GiB; "
        f"device free {_gib(state.device_free)} of {_gib(state.device_total)} GiB",
    ]
    if reading.gpu_name is None:
        lines.append("GPU: none (no NVIDIA driver); memory, temperature, power and utilisation are not available")
    else:
        lines.append(
            f"GPU: {reading.gpu_name}; memory {_fmt(_gib(reading.memory_used))}/{_fmt(_gib(reading.memory_total))} "
            f"GiB; {_fmt(reading.temperature_c)} °C; {_fmt(reading.power_w)} W; {_fmt(reading.utilization_pct)} % busy"
        )
    rows = [MODEL_HEADERS] + [[_fmt(v) for v in row] for row in model_rows(state)]
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(MODEL_HEADERS))]
    lines.append("")
    lines += ["  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip() for row in rows]
    return lines


def _fmt(value) -> str:
    return "—" if value is None else str(value)
