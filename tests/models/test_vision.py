"""The LLaVA loader on a tiny random model the test builds: prompts, streaming, NF4, image checks, footprint."""

from pathlib import Path

import pytest

from models.llm import SamplingParams
from models.vision import RejectedImage, VisionModel, VisionSpec, estimate_vision, load_image
from tests.fixtures.vision import make_png

LIMIT = 20_000_000


def test_loads_prompts_with_the_image_slot_and_streams(tiny_llava, red_png):
    model = VisionModel(VisionSpec(str(tiny_llava), quantization="fp32", device="cpu"))
    prompt = model.prompt("What is this?", "Be brief.")
    assert prompt == "Be brief. USER: <image>\nWhat is this? ASSISTANT:"
    image = load_image(red_png, LIMIT)
    assert model.prompt_length(image, prompt) == model.count_tokens(prompt) - 1 + 4  # <image> -> 4 patches
    text = "".join(model.stream(image, prompt, SamplingParams(temperature=0, max_new_tokens=6)))
    assert text and model.last_new_tokens == 6 and model.last_first_token_s > 0
    model.unload()
    assert model.model is None


def test_loads_in_nf4_vision_tower_and_language_model(tiny_llava, red_png):
    from bitsandbytes.nn import Linear4bit

    model = VisionModel(VisionSpec(str(tiny_llava), quantization="nf4", device="cpu"))
    quantized = {name.split(".")[1] for name, m in model.model.named_modules() if isinstance(m, Linear4bit)}
    assert {"vision_tower", "language_model"} <= quantized
    image = load_image(red_png, LIMIT)
    assert "".join(model.stream(image, model.prompt("Hi"), SamplingParams(temperature=0, max_new_tokens=3)))


def test_footprint_covers_tower_projector_and_language_model(tiny_llava):
    import torch
    from transformers import LlavaForConditionalGeneration

    footprint = estimate_vision(VisionSpec(str(tiny_llava), quantization="fp32", device="cpu"), context_tokens=512)
    model = LlavaForConditionalGeneration.from_pretrained(tiny_llava, dtype=torch.float32)
    params = sum(p.numel() for p in model.parameters())
    assert footprint.weights == params * 4  # every parameter counted once, tied or not
    assert footprint.kv_cache == 2 * 2 * 2 * 16 * 512 * 4  # layers x kv heads x head dim x tokens x fp32


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
        (lambda p: p.write_text("not an image at all"), "not an image (PNG, JPEG or WebP expected)"),
        (lambda p: p.write_bytes(make_png(p).read_bytes()[:60]), "broken or truncated image"),
    ],
)
def test_bad_images_are_refused_with_a_reason(tmp_path, make, reason):
    path = tmp_path / "picture.png"
    make(path)
    with pytest.raises(RejectedImage) as info:
        load_image(path, LIMIT)
    assert info.value.reason.startswith(reason)


def test_gif_and_oversized_images_are_refused(tmp_path):
    from PIL import Image

    gif = tmp_path / "anim.gif"
    Image.new("RGB", (8, 8)).save(gif, format="GIF")
    with pytest.raises(RejectedImage, match="GIF images are not supported"):
        load_image(gif, LIMIT)
    big = make_png(tmp_path / "big.png", size=(400, 300))
    with pytest.raises(RejectedImage, match=r"over the 0.0001 MB limit"):
        load_image(big, 100)
    with pytest.raises(RejectedImage, match=r"400×300 pixels, over the 0.1 megapixel limit"):
        load_image(big, LIMIT, max_pixels=100_000)
    assert load_image(Path(big), LIMIT).size == (400, 300)
