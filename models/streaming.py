"""Streaming generation shared by the chat and vision models: one long-lived worker thread for all of them.

On CUDA the first ``generate`` in a new thread decodes at half speed (bench/stream_overhead.py), so a
thread per answer would always be the slow one, and so would a thread per model when the governor swaps
models in and out: every generation in the process runs on one worker thread (one GPU runs one at a time).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from models.prefix_cache import PrefixCache

log = logging.getLogger(__name__)

REPEAT_TOKENS = 16  # a run of this many tokens generated a second time is a loop, not an answer


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.7
    top_p: float = 0.95
    repetition_penalty: float = 1.1
    max_new_tokens: int = 512


class StreamingGenerator:
    """Runs ``model.generate`` on its worker thread and yields text; records time to first token."""

    def __init__(self, model, tokenizer) -> None:
        self.model = model
        self._tokenizer = tokenizer
        self._lock = threading.Lock()  # one generation of this model at a time
        self.last_first_token_s: float | None = None  # of the latest stream: inputs in -> first token id out
        self.last_new_tokens = 0
        self.last_repeating = False  # the latest stream was stopped in a repetition loop

    def stream_inputs(self, inputs: dict, params: SamplingParams, prefix: PrefixCache | None = None) -> Iterator[str]:
        """Yield decoded text pieces for ``inputs`` (tensors for ``generate``: input_ids, pixel_values...).

        With ``prefix``, the keys and values of the start this prompt shares with the previous one are reused.
        """
        import torch
        from transformers import StoppingCriteriaList

        streamer = _timed_streamer_class()(self._tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        sample = params.temperature > 0
        kwargs = dict(
            **inputs,
            streamer=streamer,
            max_new_tokens=params.max_new_tokens,
            repetition_penalty=params.repetition_penalty,
            do_sample=sample,
            pad_token_id=self._tokenizer.pad_token_id or self._tokenizer.eos_token_id,
        )
        if sample:
            kwargs.update(temperature=params.temperature, top_p=params.top_p)
        prompt_ids = inputs["input_ids"][0].tolist()
        loop = RepetitionStop(len(prompt_ids))
        kwargs["stopping_criteria"] = StoppingCriteriaList([loop])
        errors: list[BaseException] = []

        def run() -> None:  # every torch op on the worker thread, the cache copy included: see on_worker
            try:
                if prefix is not None:
                    kwargs.update(past_key_values=prefix.take(prompt_ids), return_dict_in_generate=True)
                with torch.inference_mode():
                    out = self.model.generate(**kwargs)
                if prefix is not None:
                    prefix.keep(prompt_ids, getattr(out, "past_key_values", None))
            except BaseException as exc:  # surfaced to the caller below
                errors.append(exc)
                streamer.end()

        with self._lock:
            started = time.perf_counter()
            done = _worker().submit(run)
            yield from streamer
            done.result()
            self.last_first_token_s = (streamer.first_token_at or time.perf_counter()) - started
            self.last_new_tokens = streamer.new_tokens
            self.last_repeating = loop.stopped
        if errors:
            raise errors[0]

    def release(self) -> None:
        """Drop the weights so the memory can be reclaimed (after any generation of this model has ended)."""
        import gc

        with self._lock:
            self.model = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass


class RepetitionStop:
    """A stopping criterion: the generation repeats a run of ``n`` tokens it has already produced (a greedy
    loop writes one sentence over and over). The caller trims the repeated text (``rag.answering``)."""

    def __init__(self, prompt_length: int, n: int = REPEAT_TOKENS) -> None:
        self.prompt_length = prompt_length
        self.n = n
        self.seen: set[tuple[int, ...]] = set()
        self.stopped = False

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        done = self.check(input_ids[0, self.prompt_length :].tolist())
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)

    def check(self, new: list[int]) -> bool:
        """Whether the generated ids ``new`` (checked after each new token) end in a run seen before."""
        done = False
        if len(new) >= self.n:
            run = tuple(new[-self.n :])
            done = run in self.seen
            self.seen.add(run)
        self.stopped = self.stopped or done
        return done


def decoder_for(model, tokenizer, decode: str, context_tokens: int | None, nf4_kernel: str = "zhiku",
                prefill: bool = True):  # fmt: skip
    """The streaming decoder of a loaded model: zhiku's captured decode step where it applies (``decode`` auto
    on CUDA, a Llama-family language model, Triton present), else transformers' ``generate``. ``prefill``:
    text prompts prefill through captured graphs too (False for a vision model, whose prompts hold images).

    If the captured step fails to build (a kernel that does not compile on this GPU, say), the model still
    answers through ``generate``; the warning says why, and ``decode_path`` reads ``eager``.
    """
    if decode == "eager" or model.device.type != "cuda":
        return StreamingGenerator(model, tokenizer)
    from models.captured_decoder import CapturedDecoder, why_not_captured
    from models.decode_step import TritonOps

    reason = why_not_captured(model)
    if reason:
        log.info("decoding with transformers' generate: %s", reason)
        return StreamingGenerator(model, tokenizer)
    import torch

    max_len = context_tokens or getattr(model.get_decoder().config, "max_position_embeddings", 4096)
    try:  # on the model thread: a CUDA graph capture must not see other CUDA work
        return on_worker(CapturedDecoder, model, tokenizer, max_len, TritonOps(nf4_kernel), None, prefill)
    except torch.OutOfMemoryError:
        raise  # the governor evicts idle models and retries the load
    except Exception as exc:  # noqa: BLE001 - any other failure to build it: fall back, loudly
        log.warning("the captured decode step failed to build (%s); decoding with transformers' generate", exc,
                    exc_info=True)  # fmt: skip
        torch.cuda.empty_cache()
        return StreamingGenerator(model, tokenizer)


class StreamsText:
    """For a loaded model that streams through ``self._streaming``: timings of its latest answer, and unload."""

    _streaming: StreamingGenerator
    model: object

    @property
    def decoder(self):
        """The streaming decoder itself (``CapturedDecoder`` or ``StreamingGenerator``), for benchmarks and checks."""
        return self._streaming

    def _capped(self, context: int) -> int:
        """A model's context, capped by its captured decoder's static cache (prompt and answer must fit in it)."""
        return min(context, getattr(self._streaming, "max_len", context))

    @property
    def decode_path(self) -> str:
        """``captured`` (zhiku's decode step in CUDA graphs) or ``eager`` (transformers' generate)."""
        return "eager" if isinstance(self._streaming, StreamingGenerator) else "captured"

    @property
    def reserved_bytes(self) -> int:
        """Memory the decoder holds beside the weights from load on (static KV cache, graph pool)."""
        return getattr(self._streaming, "reserved_bytes", 0)

    @property
    def pooled_bytes(self) -> int:
        """Of ``reserved_bytes``: the graph pools' free blocks (the allocator counts them reserved, not allocated)."""
        return getattr(self._streaming, "pooled_bytes", 0)

    @property
    def last_first_token_s(self) -> float | None:
        return self._streaming.last_first_token_s

    @property
    def last_new_tokens(self) -> int:
        return self._streaming.last_new_tokens

    @property
    def last_repeating(self) -> bool:
        return self._streaming.last_repeating

    def unload(self) -> None:
        """Drop the weights so the memory can be reclaimed."""
        self._streaming.release()
        self.model = None


def on_worker(fn, *args):
    """``fn(*args)`` on the process's model thread, which all of zhiku's torch work shares.

    On a CPU, once torch has run on a second thread, decoding runs at half speed for the rest of the process
    (SmolLM2 on 2 cores: 22.8 -> 10.7 tokens/s after one embedding on the request thread; docs/benchmarks.md,
    section 5; each thread likely gets its own OpenMP pool). So the embedder runs here too, between generations.
    """
    return run_on_worker(lambda: fn(*args)).result()


def run_on_worker(fn) -> Future:
    """Start ``fn()`` on the model thread; from that thread itself, run it now (a finished future)."""
    if threading.current_thread().name.startswith(WORKER_NAME):
        done: Future = Future()
        try:
            done.set_result(fn())
        except BaseException as exc:  # handed to whoever reads the future
            done.set_exception(exc)
        return done
    return _worker().submit(fn)


WORKER_NAME = "zhiku-generate"


@functools.cache
def _worker() -> ThreadPoolExecutor:
    """The process's generation thread, started on first use and kept for the life of the process."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix=WORKER_NAME)


@functools.cache
def _timed_streamer_class():
    from transformers import TextIteratorStreamer

    class TimedStreamer(TextIteratorStreamer):
        """Records when the first generated token id arrives; text only flushes at word ends, later."""

        first_token_at: float | None = None
        new_tokens = 0
        _prompt_seen = False

        def put(self, value) -> None:
            if self._prompt_seen:
                if self.first_token_at is None:
                    self.first_token_at = time.perf_counter()
                self.new_tokens += int(value.numel()) if hasattr(value, "numel") else 1
            self._prompt_seen = True
            super().put(value)

    return TimedStreamer
