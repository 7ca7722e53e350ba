"""The VRAM governor: which models stay resident within a memory budget.

Every loadable model is registered with an estimated footprint; after loading, the allocator's measured
delta (plus the model's runtime reserve: KV cache and workspace) replaces the estimate. ``acquire`` makes a
model resident and holds it while in use: a model in use is never evicted; otherwise least-recently-used,
unpinned models are evicted until the new one fits. A model that can never fit fails at once, naming the
sizes. An out-of-memory error during loading evicts every idle model and retries once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from models.footprint import GIB, Footprint, gib
from models.memory import MemoryDevice

log = logging.getLogger(__name__)


class DoesNotFit(RuntimeError):
    """The model can never be resident within the budget."""


class OutOfMemory(RuntimeError):
    """Loading or running failed for lack of memory even after evicting idle models."""


@dataclass
class ModelEntry:
    name: str
    load: Callable[[], Any]
    estimator: Callable[[], Footprint] | None = None  # evaluated on first need (reading a config can be slow)
    pinned: bool = False
    model: Any = None
    measured: int | None = None  # allocator delta after loading (weights), replaces the estimate
    held: int = 0  # of that delta, what the model keeps for running (a static KV cache, graph pools)
    in_use: int = 0
    last_used: float = 0.0
    loads: int = 0
    load_seconds: float | None = None
    _footprint: Footprint | None = None

    @property
    def estimated(self) -> Footprint:
        if self._footprint is None:
            assert self.estimator is not None
            self._footprint = self.estimator()
        return self._footprint

    @property
    def estimate(self) -> int:
        """Bytes expected before loading: weights + KV cache + workspace."""
        return self.estimated.total

    @property
    def reserve(self) -> int:
        """Runtime memory on top of the weights (KV cache, workspace), or what the model already holds for it."""
        return max(self.estimated.kv_cache + self.estimated.workspace, self.held)

    @property
    def resident(self) -> bool:
        return self.model is not None

    @property
    def footprint(self) -> int:
        """Bytes counted against the budget: measured weights + reserve once loaded, else the estimate."""
        return self.measured + self.reserve if self.measured is not None else self.estimate


@dataclass(frozen=True)
class ModelState:
    name: str
    resident: bool
    pinned: bool
    in_use: int
    estimate: int
    measured: int | None
    footprint: int
    loads: int
    load_seconds: float | None


@dataclass(frozen=True)
class GovernorState:
    device: str
    budget: int
    committed: int  # footprints of the resident models
    device_total: int
    device_free: int
    allocated: int
    models: list[ModelState]
    events: list[str] = field(default_factory=list)


def is_out_of_memory(exc: BaseException) -> bool:
    """A CUDA out-of-memory error (or MemoryError on the CPU)."""
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except ImportError:  # pragma: no cover
        pass
    return isinstance(exc, MemoryError)


class Governor:
    def __init__(self, device: MemoryDevice, budget_bytes: int | None = None, wait_seconds: float = 600) -> None:
        self.device = device
        self._setting = budget_bytes
        self._entries: dict[str, ModelEntry] = {}
        self._cond = threading.Condition()
        self._loading: str | None = None
        self._wait_seconds = wait_seconds
        self.events: deque[str] = deque(maxlen=200)
        # budget: the smaller of the setting and what the device has free now (plus what we will hold)
        self._free_at_start = device.free_bytes()

    # -- registry -----------------------------------------------------------------------------------------

    def register(
        self,
        name: str,
        load: Callable[[], Any],
        estimate: Footprint | Callable[[], Footprint],
        pinned: bool = False,
    ) -> None:
        """Make ``name`` loadable; ``estimate`` may be a function, evaluated when the size is first needed."""
        estimator = estimate if callable(estimate) else (lambda: estimate)
        with self._cond:
            self._entries[name] = ModelEntry(name, load, estimator, pinned)

    def adopt(self, name: str, model: Any, measured: int, pinned: bool = True) -> None:
        """Account for a model loaded outside the governor (the embedder, at start-up)."""
        with self._cond:
            entry = ModelEntry(name, lambda: model, None, pinned, model, measured, last_used=time.monotonic())
            entry._footprint = Footprint(measured, 0, 0)
            entry.loads = 1
            self._entries[name] = entry
            self._event(f"adopted {name}: {gib(measured)}")

    @property
    def budget(self) -> int:
        available = self._free_at_start
        return min(self._setting, available) if self._setting is not None else available

    # -- use ----------------------------------------------------------------------------------------------

    @contextmanager
    def acquire(self, name: str) -> Iterator[Any]:
        """Make ``name`` resident and hold it (never evicted) until the block ends."""
        model = self._acquire(name)
        try:
            yield model
        except BaseException as exc:
            if is_out_of_memory(exc):
                self._event(f"out of memory while {name} was running; evicting idle models")
                with self._cond:
                    self._evict_idle(exclude=name)
            raise
        finally:
            self.release(name)

    def names(self) -> list[str]:
        with self._cond:
            return list(self._entries)

    def loaded(self, name: str) -> bool:
        with self._cond:
            return self._entries[name].resident

    def loading(self) -> str | None:
        return self._loading

    def release(self, name: str) -> None:
        with self._cond:
            entry = self._entries[name]
            entry.in_use -= 1
            entry.last_used = time.monotonic()
            self._cond.notify_all()

    def pin(self, name: str, pinned: bool = True) -> None:
        with self._cond:
            self._entries[name].pinned = pinned
            self._event(f"{'pinned' if pinned else 'unpinned'} {name}")

    def unload(self, name: str) -> bool:
        """Unload an idle model; False if it is in use or not resident."""
        with self._cond:
            entry = self._entries[name]
            if not entry.resident or entry.in_use:
                return False
            self._unload(entry, "unloaded on request")
            return True

    def state(self) -> GovernorState:
        with self._cond:
            models = [
                ModelState(
                    e.name, e.resident, e.pinned, e.in_use, e.estimate, e.measured, e.footprint, e.loads, e.load_seconds
                )
                for e in self._entries.values()
            ]
            committed = self._committed()
            events = list(self.events)
        return GovernorState(
            self.device.name,
            self.budget,
            committed,
            self.device.total_bytes(),
            self.device.free_bytes(),
            self.device.allocated_bytes(),
            models,
            events,
        )

    # -- policy -------------------------------------------------------------------------------------------

    def _acquire(self, name: str) -> Any:
        deadline = time.monotonic() + self._wait_seconds
        with self._cond:
            entry = self._entries[name]
            while True:
                if entry.resident:
                    entry.in_use += 1
                    entry.last_used = time.monotonic()
                    return entry.model
                if self._loading is None:
                    self._make_room(entry)  # raises DoesNotFit; returns False when it must wait
                    if self._committed() + entry.footprint <= self.budget:
                        break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DoesNotFit(
                        f"{name} needs {gib(entry.footprint)} but models in use hold {gib(self._committed())} "
                        f"of the {gib(self.budget)} budget, and they were not released in time"
                    )
                self._cond.wait(timeout=min(remaining, 1.0))
            self._loading = name
            entry.in_use += 1  # reserved: nobody evicts it while it loads
        try:
            model = self._load(entry)
        except BaseException:
            with self._cond:
                entry.in_use -= 1
                self._loading = None
                self._cond.notify_all()
            raise
        with self._cond:
            entry.model = model
            entry.last_used = time.monotonic()
            self._loading = None
            self._cond.notify_all()
        return model

    def _make_room(self, entry: ModelEntry) -> None:
        """Evict LRU idle unpinned models until ``entry`` fits; raise if it can never fit."""
        pinned = sum(e.footprint for e in self._entries.values() if e.resident and e.pinned and e is not entry)
        if entry.footprint + pinned > self.budget:
            self._event(
                f"refused {entry.name}: needs {gib(entry.footprint)}, budget {gib(self.budget)}"
                + (f" with {gib(pinned)} pinned" if pinned else "")
            )
            raise DoesNotFit(
                f"{entry.name} needs {gib(entry.footprint)} but the memory budget is {gib(self.budget)}"
                + (f" and pinned models hold {gib(pinned)}" if pinned else "")
                + f" on {self.device.name}. Raise ZHIKU_VRAM_BUDGET_GB, choose a smaller quantization "
                "(ZHIKU_QUANTIZATION=nf4) or a shorter context (ZHIKU_CONTEXT_TOKENS)."
            )
        idle = sorted(
            (e for e in self._entries.values() if e.resident and not e.pinned and not e.in_use and e is not entry),
            key=lambda e: e.last_used,
        )
        for victim in idle:
            if self._committed() + entry.footprint <= self.budget:
                break
            self._unload(victim, f"evicted (least recently used) to make room for {entry.name}")

    def _load(self, entry: ModelEntry) -> Any:
        for attempt in (1, 2):
            before = self.device.allocated_bytes()
            started = time.perf_counter()
            try:
                self._event(f"loading {entry.name}: estimate {gib(entry.footprint)}, budget {gib(self.budget)}")
                model = entry.load()
            except BaseException as exc:
                if not is_out_of_memory(exc) or attempt == 2:
                    if is_out_of_memory(exc):
                        self._event(f"out of memory loading {entry.name} again; giving up")
                        raise OutOfMemory(
                            f"out of memory loading {entry.name} ({gib(entry.footprint)} estimated) on "
                            f"{self.device.name} even after evicting idle models: {exc}"
                        ) from exc
                    raise
                self._event(f"out of memory loading {entry.name}; evicting idle models and retrying once")
                with self._cond:
                    self._evict_idle(exclude=entry.name)
                continue
            entry.load_seconds = time.perf_counter() - started
            delta = max(0, self.device.allocated_bytes() - before)
            delta = getattr(model, "local_bytes", delta)  # a model that knows it holds nothing here (a remote one)
            # what the model holds beside its weights (a static cache, graph pools); ``pooled_bytes`` of it are free
            # blocks kept for its CUDA graphs, which the allocated count does not include
            delta += int(getattr(model, "pooled_bytes", 0) or 0)
            entry.held = min(delta, int(getattr(model, "reserved_bytes", 0) or 0))
            entry.measured = delta - entry.held
            entry.loads += 1
            held = f", {gib(entry.held)} of it held by the decoder" if entry.held else ""
            self._event(
                f"loaded {entry.name} in {entry.load_seconds:.1f} s: measured {gib(entry.measured)} "
                f"(+{gib(entry.reserve)} reserve{held}), estimate was {gib(entry.estimate)}"
            )
            return model
        raise AssertionError("unreachable")

    def _evict_idle(self, exclude: str) -> None:
        for e in list(self._entries.values()):
            if e.resident and not e.in_use and not e.pinned and e.name != exclude:
                self._unload(e, "evicted after out of memory")
        self.device.release_cached()

    def _unload(self, entry: ModelEntry, why: str) -> None:
        model, entry.model = entry.model, None
        unload = getattr(model, "unload", None)
        if callable(unload):
            unload()
        del model
        self.device.release_cached()
        self._event(f"{why}: {entry.name} ({gib(entry.footprint)})")

    def _committed(self) -> int:
        return sum(e.footprint for e in self._entries.values() if e.resident or e.name == self._loading)

    def _event(self, message: str) -> None:
        stamped = f"{time.strftime('%H:%M:%S')} {message}"
        self.events.append(stamped)
        log.info(message)


def budget_bytes(gb: float | None) -> int | None:
    return None if gb is None else int(gb * GIB)
