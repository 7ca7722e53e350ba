"""Zeroed device buffers that kernels share across launches: per-unit arrival counts that each launch leaves at
zero again (the last program to arrive resets its count), so one buffer serves every launch and every replay of a
captured graph, with no memset per launch.

A buffer is made on a kernel's first launch, which is outside any graph capture (warm-ups run first, and the
kernels are compiled then). Launches on a device run one at a time (``models.streaming``: one worker thread runs
every generation), so they share it. A buffer that grows is replaced, and the old one kept: a graph captured
before may still use it.
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_buffers: dict = {}  # (device index, name) -> int32 tensor of zeros
_kept: list = []


def zeroed(device, name: str, words: int):
    """An int32 tensor of at least ``words`` zeros on ``device``, the same one for every call with ``name`` (while
    it is large enough)."""
    import torch

    key = (device.index or 0, name)
    with _lock:
        have = _buffers.get(key)
        if have is None or have.numel() < words:
            if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
                raise RuntimeError(f"scratch {name!r}: first made inside a graph capture (warm up outside it first)")
            have = _buffers[key] = torch.zeros(words, dtype=torch.int32, device=device)
            _kept.append(have)
        return have
