"""A chat model served elsewhere: any OpenAI-compatible server (vLLM, llama.cpp's server, TGI, another zhiku's
``zhiku-llm``) generates, zhiku streams its answer. Chosen with ``ZHIKU_LLM_BACKEND=openai``.

zhiku then holds no chat model in local memory. The server takes messages, not token ids, and no standard endpoint
counts tokens, so prompts are measured by ``estimate_tokens``: a deliberately high count (Chinese characters 1.5
tokens each, other text a token per 3 characters, 8 per message for the chat template), so that a prompt fitted
to the context here fits there. The context is the server's ``max_model_len`` where it reports one (vLLM), else
``ZHIKU_CONTEXT_TOKENS``, else 4,096.

Every failure to reach or use the server becomes ``ChatServerUnavailable``, whose message names the server and the
reason (not reachable, timed out, refused the key, no such model, an error status), and the answer falls back to
the evidence (``rag.qa``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from models.protocols import GeneratorUnavailable
from models.streaming import SamplingParams

DEFAULT_CONTEXT = 4096
LIST_TIMEOUT_S = 5.0  # the model list at load: a server that is down is reported at once


class ChatServerUnavailable(GeneratorUnavailable):
    """The chat server cannot answer; the message says which server and why."""


@dataclass(frozen=True)
class RemoteSpec:
    base_url: str  # e.g. http://127.0.0.1:8000/v1
    api_key: str = ""
    model: str = ""  # the server's model id; empty = the first it lists
    timeout_s: float = 60.0  # to connect, and between two pieces of a streamed answer
    context_tokens: int | None = None


@dataclass(frozen=True)
class MessagesPrompt:
    """What ``RemoteGenerator.stream`` takes: the chat messages, sized by ``estimate_tokens``."""

    messages: tuple[dict[str, str], ...]
    tokens: int

    def __len__(self) -> int:
        return self.tokens


def estimate_tokens(text: str) -> int:
    """A count meant to be at or above what a Llama, Qwen or GPT tokenizer makes of ``text``."""
    cjk = sum(1 for c in text if "\u2e80" <= c <= "\u9fff" or "\uf900" <= c <= "\ufaff" or "\uff00" <= c <= "\uffef")
    return int(1.5 * cjk + (len(text) - cjk) / 3) + 1


class RemoteGenerator:
    """The TextGenerator protocol over an OpenAI-compatible ``/v1/chat/completions``, streamed."""

    parameters = None  # unknown: treated as a large model (full prompts, the model rewrites follow-ups)
    reserved_bytes = 0  # no cache held here
    local_bytes = 0  # what the governor counts for it: the model lives on the server

    def __init__(self, spec: RemoteSpec) -> None:
        from openai import OpenAI

        started = time.perf_counter()
        self.spec = spec
        self.url = spec.base_url.rstrip("/")
        self._client = OpenAI(base_url=self.url, api_key=spec.api_key or "none", timeout=spec.timeout_s,
                              max_retries=0)  # fmt: skip
        listed = self._list_models()
        self.model = spec.model or (listed[0]["id"] if listed else "")
        if not self.model:
            raise ChatServerUnavailable(f"the chat server at {self.url} lists no models; set ZHIKU_LLM_MODEL")
        known = {m["id"]: m for m in listed}
        if listed and self.model not in known:
            raise ChatServerUnavailable(
                f"the chat server at {self.url} has no model {self.model!r} (it has: {', '.join(known)})"
            )
        served = known.get(self.model, {}).get("max_model_len")
        self._context = int(spec.context_tokens or served or DEFAULT_CONTEXT)
        self.name = f"{self.model} at {self.url}"
        self.last_first_token_s: float | None = None
        self.last_new_tokens = 0
        self.last_repeating = False
        self.load_seconds = time.perf_counter() - started

    @property
    def context_length(self) -> int:
        return self._context

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    def truncate_tokens(self, text: str, max_tokens: int) -> str:
        """The longest start of ``text`` whose estimate is at most ``max_tokens``."""
        if estimate_tokens(text) <= max_tokens:
            return text
        low, high = 0, len(text)
        while low < high:
            middle = (low + high + 1) // 2
            low, high = (middle, high) if estimate_tokens(text[:middle]) <= max_tokens else (low, middle - 1)
        return text[:low]

    def prompt_ids(self, messages: list[dict[str, str]]) -> MessagesPrompt:
        tokens = sum(estimate_tokens(m.get("content", "")) + 8 for m in messages) + 8
        return MessagesPrompt(tuple(dict(m) for m in messages), tokens)

    def stream(self, prompt: MessagesPrompt, params: SamplingParams) -> Iterator[str]:
        """Yield the server's answer as it streams; ChatServerUnavailable if it cannot."""
        extra = {"repetition_penalty": params.repetition_penalty} if params.repetition_penalty != 1.0 else None
        self.last_first_token_s, self.last_new_tokens, self.last_repeating = None, 0, False
        started = time.perf_counter()
        pieces = 0
        try:
            stream = self._client.chat.completions.create(
                model=self.model,
                messages=list(prompt.messages),
                stream=True,  # no stream_options: not every server takes them; the pieces are counted instead
                temperature=params.temperature,
                top_p=params.top_p,
                max_tokens=params.max_new_tokens,
                extra_body=extra,
            )
            for chunk in stream:
                if getattr(chunk, "usage", None) is not None and chunk.usage.completion_tokens:
                    self.last_new_tokens = chunk.usage.completion_tokens  # a server that reports it anyway
                for choice in chunk.choices or ():
                    text = choice.delta.content if choice.delta else None
                    if text:
                        if self.last_first_token_s is None:
                            self.last_first_token_s = time.perf_counter() - started
                        pieces += 1
                        yield text
        except Exception as exc:  # noqa: BLE001 - every failure of the server becomes one clear message
            raise ChatServerUnavailable(self._reason(exc)) from exc
        self.last_new_tokens = self.last_new_tokens or pieces  # servers stream about one token a piece

    def unload(self) -> None:
        self._client.close()

    # -- helpers ----------------------------------------------------------------------------------------------
    def _list_models(self) -> list[dict]:
        try:
            page = self._client.with_options(timeout=min(LIST_TIMEOUT_S, self.spec.timeout_s)).models.list()
            return [m.model_dump() for m in page.data]
        except Exception as exc:  # noqa: BLE001 - the reason, named, is what the user needs
            raise ChatServerUnavailable(self._reason(exc)) from exc

    def _reason(self, exc: Exception) -> str:
        import openai

        where = f"the chat server at {self.url}"
        if isinstance(exc, openai.APITimeoutError):
            return f"{where} did not answer within {self.spec.timeout_s:g} s (ZHIKU_LLM_TIMEOUT_S)"
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc.__context__
            return f"{where} is not reachable ({cause or exc})"
        if isinstance(exc, openai.AuthenticationError):
            return f"{where} refused the API key (401); check ZHIKU_LLM_API_KEY"
        if isinstance(exc, openai.NotFoundError):
            return f"{where} answered 404 for model {self.model if hasattr(self, 'model') else '?'!r}: {exc.message}"
        if isinstance(exc, openai.APIStatusError):
            return f"{where} answered {exc.status_code}: {exc.message}"
        return f"{where} failed: {type(exc).__name__}: {exc}"
