"""The vision model: LLaVA through transformers' native classes, loaded and quantized like the chat model."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from models.device import resolve_device
from models.llm import effective_quantization, quantization_config, torch_dtype
from models.streaming import SamplingParams, StreamsText, decoder_for

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
# LLaVA-1.5's conversation format, for processors without a multimodal chat template of their own
LLAVA_PROMPT = "{system}USER: <image>\n{question} ASSISTANT:"
# the template llava-hf/llava-1.5-*-hf ships with its processor (system text is rendered without a role)
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}"
    "{% endif %}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' ' }}{% endfor %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


class RejectedImage(Exception):
    """The image cannot be used; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def load_image(path: Path, max_bytes: int, max_pixels: int = 40_000_000):
    """Open and check an image file (PNG, JPEG, WebP) and return it as RGB."""
    from PIL import Image, UnidentifiedImageError

    try:
        size = path.stat().st_size
    except OSError as exc:
        raise RejectedImage(f"cannot read the file: {exc.strerror or exc}") from exc
    if size == 0:
        raise RejectedImage("empty file (0 bytes)")
    if size > max_bytes:
        raise RejectedImage(f"file is {size / 1e6:.3g} MB, over the {max_bytes / 1e6:g} MB limit")
    try:
        with Image.open(path) as probe:
            kind = probe.format
            width, height = probe.size
            if kind not in ("PNG", "JPEG", "WEBP"):
                raise RejectedImage(f"{kind or 'unknown'} images are not supported; use PNG, JPEG or WebP")
            if width * height > max_pixels:
                raise RejectedImage(f"image is {width}×{height} pixels, over the {max_pixels / 1e6:g} megapixel limit")
            probe.verify()
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except RejectedImage:
        raise
    except UnidentifiedImageError as exc:
        raise RejectedImage("not an image (PNG, JPEG or WebP expected)") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise RejectedImage(f"broken or truncated image ({exc})") from exc


@dataclass(frozen=True)
class VisionSpec:
    model: str
    quantization: str = "auto"
    device: str = "auto"
    context_tokens: int | None = None  # the KV reserve the governor counts; the captured decoder's cache size
    decode: str = "auto"  # as LlmSpec.decode: the language model decodes through the captured step
    nf4_kernel: str = "zhiku"  # as LlmSpec.nf4_kernel


class VisionModel(StreamsText):
    """LlavaForConditionalGeneration + AutoProcessor; one generation at a time on its own worker thread."""

    def __init__(self, spec: VisionSpec) -> None:
        from transformers import AutoProcessor, LlavaForConditionalGeneration

        started = time.perf_counter()
        self.device = resolve_device(spec.device)
        self.name = spec.model
        quant = quantization_config(spec.quantization, self.device)
        kwargs = {"dtype": torch_dtype(spec.quantization, self.device), "local_files_only": True}
        if quant is not None:
            kwargs["quantization_config"] = quant
            kwargs["device_map"] = self.device
        self.processor = AutoProcessor.from_pretrained(spec.model, local_files_only=True)
        self.model = LlavaForConditionalGeneration.from_pretrained(spec.model, **kwargs)
        if quant is None:
            self.model.to(self.device)
        self.model.eval()
        self.quantization = effective_quantization(spec.quantization, self.device)
        self._streaming = decoder_for(
            self.model, self.processor.tokenizer, spec.decode, spec.context_tokens, spec.nf4_kernel, prefill=False
        )
        self._warm_up()
        self.load_seconds = time.perf_counter() - started
        log.info("loaded vision model %s on %s in %.1f s", self.name, self.device, self.load_seconds)

    @property
    def context_length(self) -> int:
        """Tokens of prompt (image tokens included) and answer: the language model's, or the decoder's cache."""
        return self._capped(int(getattr(self.model.config.text_config, "max_position_embeddings", 2048)))

    def count_tokens(self, text: str) -> int:
        return len(self.processor.tokenizer(text, add_special_tokens=False)["input_ids"])

    def truncate_tokens(self, text: str, max_tokens: int) -> str:
        ids = self.processor.tokenizer(text, add_special_tokens=False)["input_ids"]
        return text if len(ids) <= max_tokens else self.processor.tokenizer.decode(ids[:max_tokens])

    def prompt(self, question: str, system: str = "") -> str:
        """The model's own chat template with an image slot, or LLaVA-1.5's format when it has none."""
        template = getattr(self.processor, "chat_template", None) or ""
        if "image" in template:  # a multimodal template (a text-only one inherited from the tokenizer is not)
            messages = []
            if system:
                messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
            messages.append({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]})
            return self.processor.apply_chat_template(messages, add_generation_prompt=True)
        return LLAVA_PROMPT.format(system=f"{system}\n" if system else "", question=question)

    def prompt_length(self, image, prompt: str) -> int:
        """Tokens of the prompt once the processor has expanded the image into its patch tokens."""
        return int(self.processor(images=image, text=prompt, return_tensors="pt")["input_ids"].shape[1])

    def stream(self, image, prompt: str, params: SamplingParams) -> Iterator[str]:
        inputs = self.processor(images=image, text=prompt, return_tensors="pt")
        dtype = next(p.dtype for p in self.model.parameters() if p.dtype.is_floating_point)
        inputs = {
            k: (v.to(self.model.device, dtype=dtype) if k == "pixel_values" else v.to(self.model.device))
            for k, v in inputs.items()
        }
        yield from self._streaming.stream_inputs(inputs, params)

    def _warm_up(self) -> None:
        from PIL import Image

        image = Image.new("RGB", (32, 32), (128, 128, 128))
        for _ in self.stream(image, self.prompt("Hi"), SamplingParams(temperature=0, max_new_tokens=2)):
            pass


def estimate_vision(spec: VisionSpec, context_tokens: int | None = None):
    """Footprint from the config: vision tower, projector and language model (all Linear layers quantized)."""
    from transformers import AutoConfig

    from models.footprint import estimate

    device = resolve_device(spec.device)
    config = AutoConfig.from_pretrained(spec.model, local_files_only=True)
    return estimate(config, effective_quantization(spec.quantization, device), context_tokens)
