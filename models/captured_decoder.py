"""zhiku's own generation loop: the prompt's prefill and then one step per token, each replayed from a CUDA graph.

transformers runs each decode step as eager Python (~50 ms of host work per token for a 13B model against a
~2 ms memory floor) and declines to compile bitsandbytes models. Here the prompt runs through ``prefill_step``
(the eager model's arithmetic, captured once per prompt-length bucket at load), which writes its keys and
values straight into a static cache sized by the governor's reserve; every later token runs ``decode_step``
(zhiku's kernels, sampling on the GPU) as one CUDA graph replay. The host only replays, copies each new token
id to pinned memory and checks stop conditions a few steps behind the GPU; detokenising happens on the
consuming thread. Without captured graphs (the CPU) the static cache's previous prompt is reused: a prompt that
mostly starts the same way prefills only the rest, through the model itself. Image prompts prefill through the
model, and on CUDA so do batches (graphs are captured for batch 1).
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

from models.decode_step import DecodeState, LlamaParts, TorchOps, TritonOps, decode_step
from models.prefill_step import buckets, prefill_length, prefill_step, supported
from models.prefix_cache import common_prefix
from models.sampling import choose
from models.streaming import RepetitionStop, SamplingParams, StreamingGenerator, on_worker, run_on_worker

log = logging.getLogger(__name__)

LAG = 4  # steps the GPU may run ahead of the host's stop checks
MIN_REUSE = 16  # fewer shared prompt tokens are not worth a partial prefill
BATCH_POSITIONS = 256  # a batch's static cache holds a multiple of this many positions (``CapturedDecoder._state``)


class CapturedDecoder:
    """Streams like ``StreamingGenerator`` (same attributes), through the captured step where it can."""

    def __init__(self, model, tokenizer, max_len: int, ops=None, capture: bool | None = None,
                 prefill: bool = True) -> None:  # fmt: skip
        """``prefill``: text prompts prefill through ``prefill_step`` (on CUDA, graphs captured per length bucket
        for batch 1, at load); False leaves every prefill to the model (a vision model's prompts hold images)."""
        import torch

        self.model = model
        self._tokenizer = tokenizer
        self.parts = LlamaParts.of(model)
        device = self.parts.embed.device
        self.capture = device.type == "cuda" if capture is None else capture
        self.ops = ops or (TritonOps() if device.type == "cuda" else TorchOps())
        self.max_len = min(max_len, _context_of(model))
        unfit = supported(model) if prefill else ""
        if unfit:
            log.info("prompts prefill through the model itself: %s", unfit)
        prefill = prefill and not unfit
        self.prefill_sizes = buckets(self.max_len) if prefill and self.capture else []
        self.prefill_steps = prefill  # on the CPU (no capture) the step runs as it is, at the prompt's length
        self.eager = StreamingGenerator(model, tokenizer)  # prompts longer than the static cache
        self.eos = _eos_ids(model, tokenizer)
        self._lock = threading.Lock()
        self.last_first_token_s: float | None = None
        self.last_new_tokens = 0
        self.last_repeating = False
        self.last_reused = 0
        self.last_prefill_s = 0.0  # of the latest generation: prompt in -> its cache filled, first token chosen
        self.last_prefill_size: int | None = None  # the length it prefilled at through prefill_step; None: the model
        self._prefill_marks: list = []  # CUDA events of the latest prefill's phases (``last_prefill_phases_ms``)
        if device.type == "cuda":
            torch.cuda.empty_cache()  # free blocks left from loading would blur what the decoder adds below
        before = _memory(device)
        self.ops.prepare(self.parts)
        self.parts.rotary_tables(self.max_len)
        self._states: dict[int, DecodeState] = {}
        self._pool = torch.cuda.graph_pool_handle() if self.capture else None
        self._state(1)
        after = _memory(device)  # static cache, graph pool (reserved, not all live), rotary tables
        self.reserved_bytes = max(after[0] - before[0], after[1] - before[1])
        self.pooled_bytes = self.reserved_bytes - (after[0] - before[0])  # free blocks the graphs keep for replays

    # -- streaming (the generator protocol's side) -------------------------------------------------------------
    def stream_inputs(self, inputs: dict, params: SamplingParams, prefix=None) -> Iterator[str]:
        """Yield text for ``inputs`` (input_ids, attention_mask, pixel_values...); ``prefix`` is unused: the
        static cache itself keeps the previous prompt."""
        input_ids = inputs["input_ids"]
        if input_ids.shape[0] != 1 or input_ids.shape[1] >= self.max_len - 1:
            yield from self.eager.stream_inputs(inputs, params)
            self.last_first_token_s, self.last_new_tokens = self.eager.last_first_token_s, self.eager.last_new_tokens
            self.last_repeating, self.last_reused = self.eager.last_repeating, 0
            return
        tokens: queue.Queue = queue.Queue()
        cancel = threading.Event()
        loop = RepetitionStop(0)
        produced: list[int] = []
        first_at: list[float] = []

        def on_token(row: list[int]) -> bool:
            token = row[0]
            if not first_at:
                first_at.append(time.perf_counter())
            if cancel.is_set() or token in self.eos:
                return False
            produced.append(token)
            tokens.put(token)
            return not loop.check(produced) and len(produced) < params.max_new_tokens

        def run() -> None:
            try:
                self._generate(inputs, params, on_token, reuse="pixel_values" not in inputs)
            finally:
                tokens.put(None)

        with self._lock:
            started = time.perf_counter()
            done = run_on_worker(run)
            text = Detokenizer(self._tokenizer)
            try:
                while (token := tokens.get(timeout=600)) is not None:
                    piece = text.add(token)
                    if piece:
                        yield piece
                if tail := text.flush():
                    yield tail
            finally:
                cancel.set()
                done.result()  # raises what the decode loop raised
            self.last_first_token_s = (first_at[0] if first_at else time.perf_counter()) - started
            self.last_new_tokens = len(produced)
            self.last_repeating = loop.stopped

    def generate(self, input_ids, params: SamplingParams, record_logits: bool = False):
        """Token ids [B, new] for a batch of equal-length prompts, ``max_new_tokens`` each (no stop at EOS);
        with ``record_logits`` also the fp32 logits of every step (bench and checks)."""
        import torch

        rows: list[list[int]] = []
        logits: list = []

        def on_token(row: list[int]) -> bool:
            rows.append(row)
            return len(rows) < params.max_new_tokens

        def run():
            with self._lock:
                self._generate(
                    {"input_ids": input_ids}, params, on_token, reuse=False, logits=logits if record_logits else None
                )

        on_worker(run)
        return torch.tensor(rows).T, logits

    def forget(self, batch: int) -> None:
        """Free the static buffers and graphs of one batch size (made by ``generate`` for that size)."""
        import torch

        with self._lock:
            self._states.pop(batch, None)
            if self.capture and not self._states:
                # the last graph of the pool is gone and with it the pool: the next capture needs a new one
                self._pool = torch.cuda.graph_pool_handle()

    def release(self) -> None:
        """Free the static caches, graphs and weights' references (after any generation has ended)."""
        import gc

        with self._lock:
            self._states.clear()
            self._pool = None
            self.parts = None
            self.model = None
            self.eager.release()
        gc.collect()
        import torch

        if torch.cuda.is_available() and hasattr(torch._C, "_cuda_clearCublasWorkspaces"):
            # cuBLAS keeps a workspace per stream it ran on (the capture streams too) until told to let go
            torch._C._cuda_clearCublasWorkspaces()

    # -- the decode loop (on the model thread) ----------------------------------------------------------------
    def _generate(self, inputs: dict, params: SamplingParams, on_token: Callable[[list[int]], bool],
                  reuse: bool, logits: list | None = None) -> None:  # fmt: skip
        import torch

        input_ids = inputs["input_ids"]
        batch, length = input_ids.shape
        state = self._state(batch, length + params.max_new_tokens)
        greedy = params.temperature <= 0
        state.penalty.fill_(params.repetition_penalty)
        state.inv_temperature.fill_(1.0 / params.temperature if not greedy else 1.0)
        state.top_p.fill_(params.top_p)
        with torch.inference_mode():
            started = time.perf_counter()
            first = self._prefill(state, inputs, reuse, greedy)
            if logits is not None:
                logits.append(state.logits.clone())
            device = state.token.device
            pinned = device.type == "cuda"
            steps = min(params.max_new_tokens - 1, state.max_len - length)
            host = torch.empty((steps + 1, batch), dtype=torch.long, pin_memory=pinned)
            host[0].copy_(first)
            self.last_prefill_s = time.perf_counter() - started
            fed: list[int] = []  # batch 1: tokens fed into the cache by replays, for the next prompt's reuse
            pending: deque = deque()
            replays = 0
            go = on_token(host[0].tolist())
            for i in range(1, steps + 1):
                if not go:
                    break
                self._step(state, greedy)
                replays += 1
                host[i].copy_(state.token, non_blocking=pinned)
                if pinned:
                    event = torch.cuda.Event()
                    event.record()
                    pending.append((i, event))
                else:
                    pending.append((i, None))
                if logits is not None:
                    logits.append(state.logits.clone())
                while go and (len(pending) > LAG or (i == steps and pending)):
                    j, event = pending.popleft()
                    if event is not None:
                        event.synchronize()
                    go = on_token(host[j].tolist())
            if pinned:
                torch.cuda.current_stream().synchronize()
            if batch == 1:
                fed = host[:replays, 0].tolist()
                state.ids = input_ids[0].tolist() + fed

    def _prefill(self, state: DecodeState, inputs: dict, reuse: bool, greedy: bool):
        """Run the prompt through the model, its keys and values into the static cache; the first token."""
        input_ids = inputs["input_ids"]
        batch, length = input_ids.shape
        marks = self._prefill_marks = _marks(input_ids.device)
        _mark(marks)
        shared = 0
        if reuse and batch == 1:
            shared = min(common_prefix(state.ids, input_ids[0].tolist()), length - 1)
            shared = shared if shared >= MIN_REUSE else 0
        state.ids = []  # the cache is being overwritten
        size = self.last_prefill_size = self._prefill_size(state, inputs, shared)
        if size:
            shared = 0
            self._prefill_whole(state, input_ids, size)
            _mark(marks)
        else:
            self._prefill_eager(state, inputs, shared, marks)
        self.last_reused = shared
        _mark(marks)
        state.seen.zero_()
        state.seen.scatter_(1, input_ids, True)
        first = choose(state.logits, state.seen, state.penalty, state.inv_temperature, state.top_p, greedy)
        state.token.copy_(first)
        state.seen.scatter_(1, first[:, None], True)
        state.pos.fill_(length)
        _mark(marks)
        return first

    def _prefill_size(self, state: DecodeState, inputs: dict, shared: int) -> int | None:
        """The padded length the prompt prefills at through ``prefill_step``, or None for the model's own prefill
        (images, and the cases ``prefill_length`` leaves to it)."""
        if not self.prefill_steps or "pixel_values" in inputs:
            return None
        sizes = sorted(state.prefills) if self.capture else None
        return prefill_length(inputs["input_ids"].shape[1], shared, sizes)

    def _prefill_whole(self, state: DecodeState, input_ids, size: int) -> None:
        """The prompt, padded to ``size``, through the captured prefill of that size (or the step itself)."""
        length = input_ids.shape[1]
        state.prompt[:, :length].copy_(input_ids)
        state.prompt[:, length:size].zero_()
        state.last.fill_(length - 1)
        graph = state.prefills.get(size)
        if graph is not None:
            graph.replay()
        else:
            prefill_step(self.parts, self.ops, state, state.prompt[:, :size], state.last)

    def _prefill_eager(self, state: DecodeState, inputs: dict, shared: int, marks) -> None:
        """The model's own forward over the prompt after its ``shared`` start (whose keys and values the static
        cache holds), its keys and values then copied into the static cache."""
        from transformers import DynamicCache

        input_ids = inputs["input_ids"]
        length = input_ids.shape[1]
        cache = DynamicCache()
        for i in range(len(self.parts.layers)) if shared else ():
            cache.update(state.cache_k[i][:, :, :shared], state.cache_v[i][:, :, :shared], i)
        rest = dict(inputs, input_ids=input_ids[:, shared:])
        rest.pop("attention_mask", None)  # one unpadded sequence per row: a mask would cost SDPA its causal kernel
        out = self.model(**rest, past_key_values=cache, use_cache=True, logits_to_keep=1)
        _mark(marks)
        for i, layer in enumerate(cache.layers):
            state.cache_k[i][:, :, shared:length].copy_(layer.keys[:, :, shared:length])
            state.cache_v[i][:, :, shared:length].copy_(layer.values[:, :, shared:length])
        state.logits.copy_(out.logits[:, -1, :].float())

    @property
    def last_prefill_phases_ms(self) -> dict[str, float]:
        """GPU milliseconds of the latest prefill's phases (CUDA only; read after the generation has ended)."""
        marks = self._prefill_marks
        if not marks or len(marks) != 4:
            return {}
        names = ("model", "cache_copy", "first_token")
        return {name: marks[i].elapsed_time(marks[i + 1]) for i, name in enumerate(names)}

    def _step(self, state: DecodeState, greedy: bool) -> None:
        graph = state.graphs.get(greedy)
        if graph is not None:
            graph.replay()
        else:
            decode_step(self.parts, self.ops, state, greedy)

    def _state(self, batch: int, need: int | None = None) -> DecodeState:
        """The static buffers (and, on CUDA, the two captured graphs) of a batch size, made on first use. Batch 1's
        cache holds the whole reserve the governor counted (``max_len`` positions); a larger batch's holds the
        ``need`` positions of the call that makes it, rounded up to ``BATCH_POSITIONS``, and is made again, larger,
        for a call that needs more: four caches of the whole reserve would take four times what the governor
        counted (a 13B's 4,096 positions: 12.5 GiB beside batch 1's 3.1)."""
        size = self.max_len
        if batch > 1 and need is not None:
            size = min(size, -(-need // BATCH_POSITIONS) * BATCH_POSITIONS)
        state = self._states.get(batch)
        if state is not None and state.max_len < size:
            self._states.pop(batch)  # (its graphs go with it; the new ones are captured into the same pool)
            state = None
        if state is None:
            state = DecodeState.new(self.parts, batch, size)
            if self.capture:
                self._capture(state)
            self._states[batch] = state
        return state

    def _capture(self, state: DecodeState) -> None:
        import torch

        with torch.inference_mode():
            for greedy in (True, False):
                side = _warm_up_stream(state.token.device)
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(3):  # compiles and tunes the kernels, outside the capture
                        state.pos.zero_()
                        decode_step(self.parts, self.ops, state, greedy)
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                state.pos.zero_()
                with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
                    decode_step(self.parts, self.ops, state, greedy)
                state.graphs[greedy] = graph
            if state.token.shape[0] == 1:
                self._capture_prefills(state)
            torch.cuda.synchronize()
            state.pos.zero_()
            state.token.zero_()
            state.seen.zero_()

    def _capture_prefills(self, state: DecodeState) -> None:
        """One graph of ``prefill_step`` per bucket of ``prefill_sizes``, longest first, so that the shorter ones
        reuse its memory in the pool (graphs replay one at a time and keep nothing in it: their outputs are the
        static cache and logits). Each size runs once before its capture: CUDA loads kernels on first launch and
        cuBLAS picks them per shape."""
        import torch

        side = _warm_up_stream(state.token.device)
        for size in sorted(self.prefill_sizes, reverse=True):
            ids = state.prompt[:, :size]
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                prefill_step(self.parts, self.ops, state, ids, state.last)
            torch.cuda.current_stream().wait_stream(side)
            torch.cuda.synchronize()
            torch.cuda.empty_cache()  # the warm-up's activations, before the capture takes as much in the pool
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
                prefill_step(self.parts, self.ops, state, ids, state.last)
            state.prefills[size] = graph
        torch.cuda.synchronize()


def why_not_captured(model) -> str:
    """Why ``model`` cannot decode through the captured step, or "" when it can."""
    import importlib.util

    from models.decode_step import unsupported

    if importlib.util.find_spec("triton") is None:
        return "triton is not installed"
    decoder = model.get_decoder()
    return unsupported(decoder.config, decoder.embed_tokens.weight.dtype)


class Detokenizer:
    """Incremental text of a growing list of token ids, held back while a character is incomplete."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.shown = 0

    def add(self, token: int) -> str:
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""
        piece, self.shown = text[self.shown :], len(text)
        return piece

    def flush(self) -> str:
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        piece, self.shown = text[self.shown :], len(text)
        return piece


def _eos_ids(model, tokenizer) -> set[int]:
    ids = set()
    for source in (getattr(model, "generation_config", None), tokenizer):
        value = getattr(source, "eos_token_id", None)
        ids.update(value if isinstance(value, (list, tuple)) else [value] if value is not None else [])
    return ids


@functools.cache
def _warm_up_stream(device):
    """One side stream per device for warming steps up before capture: every new stream that runs a matmul gets
    a cuBLAS workspace of its own, which stays allocated for the life of the process."""
    import torch

    return torch.cuda.Stream(device)


def _marks(device) -> list:
    """A fresh list for ``_mark`` on CUDA; None elsewhere (nothing is recorded)."""
    return [] if device.type == "cuda" else None


def _mark(marks) -> None:
    if marks is not None:
        import torch

        event = torch.cuda.Event(enable_timing=True)
        event.record()
        marks.append(event)


def _context_of(model) -> int:
    config = model.get_decoder().config
    return int(getattr(config, "max_position_embeddings", 0) or 4096)


def _memory(device) -> tuple[int, int]:
    """Allocated and reserved bytes on a CUDA device (0, 0 elsewhere)."""
    import torch

    if device.type != "cuda":
        return 0, 0
    return torch.cuda.memory_allocated(device), torch.cuda.memory_reserved(device)
