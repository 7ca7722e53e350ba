"""The chat generator: one causal LM, loaded once, streaming tokens through TextIteratorStreamer."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from models.chat_templates import LLAMA2_CHAT
from models.device import resolve_device
from models.gguf_cache import converted_dir
from models.packaged import smollm2_gguf

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.7
    top_p: float = 0.95
    repetition_penalty: float = 1.1
    max_new_tokens: int = 512


@dataclass(frozen=True)
class LlmSpec:
    """What to load: a model path or hub id (or a GGUF file inside it), how to quantize, where."""

    model: str = ""
    gguf_file: str = ""
    quantization: str = "auto"
    device: str = "auto"
    cache_dir: Path = Path("data/cache")


def quantization_config(quantization: str, device: str):
    """bitsandbytes config for nf4/int8, None for full precision. ``auto`` means NF4 on CUDA only."""
    quantization = effective_quantization(quantization, device)
    if quantization not in ("nf4", "int8"):
        return None
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(f"quantization={quantization} needs bitsandbytes: pip install bitsandbytes") from exc
    import torch
    from transformers import BitsAndBytesConfig

    if quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def _dtype(quantization: str, device: str):
    import torch

    if quantization in ("bf16", "nf4", "int8") or (quantization == "auto" and device.startswith("cuda")):
        return torch.bfloat16
    return torch.float32


def resolve_source(spec: LlmSpec) -> str:
    """A folder or hub id transformers can load without ``gguf_file`` (GGUF is converted once, cached)."""
    if not spec.model:
        return str(converted_dir(smollm2_gguf(), spec.cache_dir))
    if spec.gguf_file:
        return str(converted_dir(Path(spec.model) / spec.gguf_file, spec.cache_dir))
    return spec.model


def effective_quantization(quantization: str, device: str) -> str:
    if quantization == "auto":
        return "nf4" if device.startswith("cuda") else "fp32"
    return quantization


def estimate_footprint(spec: LlmSpec, context_tokens: int | None = None, batch: int = 1):
    """Footprint of the configured model, from its config alone (converting a GGUF default first)."""
    from transformers import AutoConfig

    from models.footprint import estimate

    device = resolve_device(spec.device)
    config = AutoConfig.from_pretrained(resolve_source(spec), local_files_only=True)
    return estimate(config, effective_quantization(spec.quantization, device), context_tokens, batch)


class Generator:
    """A causal LM with its tokenizer. One generation runs at a time; others wait for the lock."""

    def __init__(self, spec: LlmSpec) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        started = time.perf_counter()
        self.device = resolve_device(spec.device)
        source = resolve_source(spec)
        self.name = spec.model or "SmolLM2-135M-Instruct (GGUF Q4_1, packaged)"
        quant = quantization_config(spec.quantization, self.device)
        kwargs = {"dtype": _dtype(spec.quantization, self.device), "local_files_only": True}
        if quant is not None:
            kwargs["quantization_config"] = quant
            kwargs["device_map"] = self.device
        self.tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
        if not getattr(self.tokenizer, "chat_template", None):
            log.info("%s has no chat template; using the Llama-2 [INST] <<SYS>> format", self.name)
            self.tokenizer.chat_template = LLAMA2_CHAT
        self.model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
        if quant is None:
            self.model.to(self.device)
        self.model.eval()
        self._lock = threading.Lock()
        # One long-lived thread runs every generate: on CUDA, the first generate in a new thread runs at half
        # speed (measured: bench/stream_overhead.py), so a thread per answer would always be the slow one.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zhiku-generate")
        self.last_first_token_s: float | None = None  # of the latest stream: prompt in -> first token id out
        self.last_new_tokens = 0
        self._warm_up()
        self.load_seconds = time.perf_counter() - started
        log.info("loaded %s on %s in %.1f s", self.name, self.device, self.load_seconds)

    @property
    def context_length(self) -> int:
        config = self.model.config
        for attr in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            value = getattr(config, attr, None)
            if value:
                return int(value)
        return 2048

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def truncate_tokens(self, text: str, max_tokens: int) -> str:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return text if len(ids) <= max_tokens else self.tokenizer.decode(ids[:max_tokens])

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of the chat messages with the model's chat template and a generation prompt."""
        encoded = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if hasattr(encoded, "keys"):
            encoded = encoded["input_ids"]
        return list(encoded)

    def stream(self, prompt_ids: list[int], params: SamplingParams) -> Iterator[str]:
        """Yield decoded text pieces as the model produces them."""
        import torch

        streamer = _TimedStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        input_ids = torch.tensor([prompt_ids], device=self.model.device)
        sample = params.temperature > 0
        kwargs = dict(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            streamer=streamer,
            max_new_tokens=params.max_new_tokens,
            repetition_penalty=params.repetition_penalty,
            do_sample=sample,
            pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
        )
        if sample:
            kwargs.update(temperature=params.temperature, top_p=params.top_p)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(**kwargs)
            except BaseException as exc:  # surfaced to the caller below
                errors.append(exc)
                streamer.end()

        with self._lock:
            started = time.perf_counter()
            done = self._worker.submit(run)
            yield from streamer
            done.result()
            self.last_first_token_s = (streamer.first_token_at or time.perf_counter()) - started
            self.last_new_tokens = streamer.new_tokens
        if errors:
            raise errors[0]

    def _warm_up(self) -> None:
        """Pay the generation thread's one-time start-up cost now rather than in the first answer."""
        ids = self.tokenizer("Hello", add_special_tokens=False)["input_ids"] or [0]
        for _ in self.stream(ids, SamplingParams(temperature=0, max_new_tokens=2, repetition_penalty=1.0)):
            pass

    def unload(self) -> None:
        """Drop the weights so the memory can be reclaimed."""
        import gc

        self._worker.shutdown(wait=True)
        self.model = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass


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


def _TimedStreamer(*args, **kwargs):  # noqa: N802 - a class made lazily so transformers loads on first use
    return _timed_streamer_class()(*args, **kwargs)
