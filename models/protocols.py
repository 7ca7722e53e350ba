"""The small interfaces the rest of zhiku relies on; the concrete models live beside this file."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol

from models.llm import SamplingParams


class GeneratorUnavailable(RuntimeError):
    """The chat model cannot answer now (a remote chat server that is down, too slow or refuses); the message
    names the server and the reason. The answer flow then shows the evidence without the model's words."""


class TextGenerator(Protocol):
    """A chat model that streams text for a prompt built with its own chat template.

    ``prompt_ids`` returns what the same generator's ``stream`` takes, and ``len()`` of it is the prompt's length
    in tokens: the token ids for a local model, the messages with an estimate of their tokens for a remote one
    (``models.remote_llm``)."""

    name: str
    parameters: int | None  # the model's size: small models get short prompts and answers
    last_first_token_s: float | None  # of the latest stream: prompt in -> first token id out
    last_new_tokens: int
    last_repeating: bool  # the latest stream stopped in a repetition loop

    @property
    def context_length(self) -> int: ...

    def count_tokens(self, text: str) -> int: ...

    def truncate_tokens(self, text: str, max_tokens: int) -> str: ...

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]: ...

    def stream(self, prompt_ids: list[int], params: SamplingParams) -> Iterator[str]: ...


class ModelProvider(Protocol):
    """Hands out loaded models by name and holds them while in use (the VRAM governor)."""

    def acquire(self, name: str) -> AbstractContextManager[Any]: ...

    def loaded(self, name: str) -> bool: ...
