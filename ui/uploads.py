"""Names for uploaded files: keep the user's name (Chinese included), never a path."""

from __future__ import annotations

import re
import unicodedata

_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')


def upload_name(raw: str) -> str:
    """The base name with path parts and characters unsafe in file names removed."""
    name = unicodedata.normalize("NFC", raw.replace("\\", "/").rsplit("/", 1)[-1])
    name = _UNSAFE.sub("_", name).strip(" .")
    return name or "document.pdf"
