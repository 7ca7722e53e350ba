"""The chat generator: one causal LM, loaded once, streaming tokens through TextIteratorStreamer."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from models.chat_templates import LLAMA2_CHAT
from models.device import resolve_device
from models.gguf_cache import converted_dir
from models.packaged import smollm2_gguf
from models.prefix_cache import PREFIX_TOKENS, PrefixCache
from models.streaming import SamplingParams, StreamsText, decoder_for

__all__ = ["Generator", "LlmSpec", "SamplingParams", "estimate_footprint", "parameter_count", "quantization_config"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LlmSpec:
    """What to load: a model path or hub id (or a GGUF file inside it), how to quantize, where."""

    model: str = ""
    gguf_file: str = ""
    quantization: str = "auto"
    device: str = "auto"
    cache_dir: Path = Path("data/cache")
    context_tokens: int | None = None  # the KV reserve the governor counts; the captured decoder's cache size
    decode: str = "auto"  # auto: captured decode step where supported (CUDA, Llama family); eager: generate()
    nf4_kernel: str = "zhiku"  # NF4 products of the captured step: "zhiku" (CUDA, else Triton), "triton", bitsandbytes


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


def torch_dtype(quantization: str, device: str):
    import torch

    if effective_quantization(quantization, device) in ("bf16", "nf4", "int8"):
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
    context = (context_tokens or getattr(config, "max_position_embeddings", 4096)) + PREFIX_TOKENS  # kept prefix
    return estimate(config, effective_quantization(spec.quantization, device), context, batch)


@functools.cache
def parameter_count(spec: LlmSpec) -> int:
    """The configured model's parameters, from its config alone (a GGUF default is converted first)."""
    from transformers import AutoConfig

    from models.footprint import count_parameters

    counts = count_parameters(AutoConfig.from_pretrained(resolve_source(spec), local_files_only=True), ())
    return counts.linear + counts.dense


WARM_UP_TOKENS = 1536  # prompt length of the warm-up on a GPU: about a RAG prompt's


class Generator(StreamsText):
    """A causal LM with its tokenizer. One generation runs at a time; others wait for the lock."""

    def __init__(self, spec: LlmSpec) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        started = time.perf_counter()
        self.device = resolve_device(spec.device)
        source = resolve_source(spec)
        self.name = spec.model or "SmolLM2-135M-Instruct (GGUF Q4_1, packaged)"
        quant = quantization_config(spec.quantization, self.device)
        kwargs = {"dtype": torch_dtype(spec.quantization, self.device), "local_files_only": True}
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
        self.parameters = int(self.model.num_parameters())  # 4-bit weights counted unpacked
        self._streaming = decoder_for(self.model, self.tokenizer, spec.decode, spec.context_tokens, spec.nf4_kernel)
        self._prefix = PrefixCache()
        self._warm_up()
        self.load_seconds = time.perf_counter() - started
        log.info("loaded %s on %s in %.1f s", self.name, self.device, self.load_seconds)

    @property
    def context_length(self) -> int:
        """Tokens of prompt and answer together: the model's context, or the captured decoder's cache."""
        config = self.model.config
        for attr in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            value = getattr(config, attr, None)
            if value:
                return self._capped(int(value))
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

        input_ids = torch.tensor([prompt_ids], device=self.model.device)
        yield from self._streaming.stream_inputs(
            {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}, params, self._prefix
        )

    def unload(self) -> None:
        self._prefix.clear()
        super().unload()

    @property
    def last_reused_tokens(self) -> int:
        """Prompt tokens of the latest generation whose keys and values came from the previous prompt."""
        return getattr(self._streaming, "last_reused", self._prefix.last_reused)

    def _warm_up(self) -> None:
        """Pay one-time start-up costs now rather than in the first answers: the generation thread's, and each
        kind of prefill a chat makes: a fresh prompt, one whose start is reused with a few new tokens after it
        (a masked attention), and the same prompt again (one new token over a long cache).

        On a GPU each kind runs at the length of a real RAG prompt: CUDA loads a kernel's module on its first
        launch, and cuBLAS and SDPA pick other kernels for 1,500 tokens than for 24 (measured on an H100 after a
        24-token warm-up: a 1,500-token prompt whose start was reused took 1.4 s the first time, 0.1 s later).
        With the captured decoder, text prompts replay the prefill graphs captured (and run once) at load whatever
        their start, so there this warms the generation thread and the decode loop; with transformers' generate
        (``decode="eager"``) the three kinds still take different kernels."""
        long = str(self.device).startswith("cuda")
        length = min(WARM_UP_TOKENS, self.context_length - 64) if long else 24
        word = self.tokenizer(" Hello", add_special_tokens=False)["input_ids"] or [0]
        ids = (word * length)[:length]
        other = self.tokenizer(" world", add_special_tokens=False)["input_ids"] or [1]
        tail = (other * 40)[:40] if long else []
        params = SamplingParams(temperature=0, max_new_tokens=2, repetition_penalty=1.0)
        followed = ids[: len(ids) - len(tail)] + tail
        for prompt in (ids, followed, followed) if long else (ids, ids):
            for _ in self.stream(prompt, params):
                pass
