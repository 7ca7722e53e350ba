"""Turn a GGUF checkpoint into a plain transformers folder once, so later starts skip dequantizing (~13 s)."""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import threading
from pathlib import Path

from models.streaming import on_worker

log = logging.getLogger(__name__)
_converting = threading.Lock()  # one conversion at a time in this process (preload and status may race)


def cache_key(gguf_path: Path) -> str:
    import transformers

    stat = gguf_path.stat()
    ident = f"{gguf_path.resolve()}|{stat.st_size}|{int(stat.st_mtime)}|{transformers.__version__}"
    return f"{gguf_path.stem}-{hashlib.sha256(ident.encode()).hexdigest()[:12]}"


def converted_dir(gguf_path: Path, cache_dir: Path) -> Path:
    """Folder holding the converted model; built (atomically) on first use."""
    target = cache_dir / "models" / cache_key(gguf_path)
    with _converting:
        if not (target / "config.json").is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            log.info("converting %s to a transformers checkpoint under %s (one time)", gguf_path.name, target)
            # on the model thread: dequantizing here on another thread halved decoding for this whole process
            on_worker(_convert, gguf_path, target)
    return target


def _convert(gguf_path: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    config = loaded.config
    # transformers refuses save_pretrained of a GGUF-loaded model: copy its weights into a plain one.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if (target / "config.json").is_file():  # another process finished the same conversion first
            return
        raise
