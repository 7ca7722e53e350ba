"""The small interfaces the rest of zhiku relies on; the concrete models live beside this file."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from models.llm import SamplingParams


class TextGenerator(Protocol):
    """A chat model that streams text for a prompt built with its own chat template."""

    name: str

    @property
    def context_length(self) -> int: ...

    def count_tokens(self, text: str) -> int: ...

    def truncate_tokens(self, text: str, max_tokens: int) -> str: ...

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]: ...

    def stream(self, prompt_ids: list[int], params: SamplingParams) -> Iterator[str]: ...


class ModelHandle(Protocol):
    """Something that hands out a loaded model on demand (today LazyModel, later the VRAM governor)."""

    @property
    def loaded(self) -> bool: ...

    def get(self) -> TextGenerator: ...
