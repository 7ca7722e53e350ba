"""A model loaded on first use (or warmed up in the background), once, shared by every caller."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class LazyModel(Generic[T]):
    def __init__(self, name: str, load: Callable[[], T]) -> None:
        self.name = name
        self._load = load
        self._model: T | None = None
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self.load_seconds: float | None = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def get(self) -> T:
        """The model, loading it now if needed; a failed load is retried on the next call."""
        if self._model is not None:
            return self._model
        with self._lock:
            if self._model is None:
                started = time.perf_counter()
                try:
                    self._model = self._load()
                    self._error = None
                except BaseException as exc:
                    self._error = exc
                    raise
                self.load_seconds = time.perf_counter() - started
        return self._model

    def warm_up(self) -> threading.Thread:
        """Start loading in the background; errors are logged and raised again by the next ``get``."""

        def run() -> None:
            try:
                self.get()
            except Exception:  # noqa: BLE001 - reported to the user by the next get()
                log.exception("loading %s failed", self.name)

        thread = threading.Thread(target=run, name=f"load-{self.name}", daemon=True)
        thread.start()
        return thread

    def unload(self) -> None:
        with self._lock:
            model, self._model = self._model, None
        unload = getattr(model, "unload", None)
        if callable(unload):
            unload()
