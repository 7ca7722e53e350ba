"""Which torch device zhiku runs on."""

from __future__ import annotations


def resolve_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"ZHIKU_DEVICE={requested} but no CUDA device is available")
    return requested
