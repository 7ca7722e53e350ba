"""Reuse of the previous prompt's key/value cache for the start the next prompt shares with it.

Every RAG prompt of one language starts with the same chat-template header and system prompt, and a
follow-up's prompt starts with the conversation so far: those tokens' keys and values are kept after a
generation (at most ``max_tokens`` of them, so a 13B model holds ~0.2 GiB more, not a whole context) and
handed to the next generation that starts with the same tokens, which then prefills only the rest.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Sequence

log = logging.getLogger(__name__)
PREFIX_TOKENS = 256  # prompt tokens kept; the governor's estimate counts them beside the context


def cut(cache, length: int) -> None:
    """Keep the first ``length`` tokens of ``cache`` (transformers 5: ``crop(-n)`` removes the last ``n``)."""
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class PrefixCache:
    def __init__(self, max_tokens: int = PREFIX_TOKENS, min_tokens: int = 16) -> None:
        self.max_tokens = max_tokens
        self.min_tokens = min_tokens  # fewer shared tokens are not worth the copy
        self._ids: list[int] = []
        self._cache = None
        self._lock = threading.Lock()
        self.enabled = True
        self.last_reused = 0  # prompt tokens the latest generation did not have to prefill

    def take(self, prompt_ids: Sequence[int]):
        """A copy of the kept cache cut to the tokens ``prompt_ids`` shares with it, or None."""
        with self._lock:
            self.last_reused = 0
            if self._cache is None or not self.enabled:
                return None
            # at least one prompt token must be left to compute the first new token's logits from
            shared = min(common_prefix(self._ids, prompt_ids), len(prompt_ids) - 1)
            if shared < self.min_tokens:
                return None
            try:
                cache = copy.deepcopy(self._cache)
                cut(cache, shared)
            except Exception:  # noqa: BLE001 - a cache type without crop (sliding windows): stop reusing, say so
                log.warning(
                    "this model's cache cannot be cut to a prefix; prompts are prefilled in full", exc_info=True
                )
                self.enabled, self._cache = False, None
                return None
            self.last_reused = shared
            return cache

    def keep(self, prompt_ids: Sequence[int], cache) -> None:
        """Keep the first ``max_tokens`` of ``prompt_ids``' keys and values from a finished generation's cache."""
        if cache is None or not self.enabled:
            return
        n = min(len(prompt_ids), self.max_tokens)
        try:
            cut(cache, n)
        except Exception:  # noqa: BLE001 - see take()
            log.warning("this model's cache cannot be cut to a prefix; prompts are prefilled in full", exc_info=True)
            self.enabled = False
            return
        with self._lock:
            self._ids, self._cache = list(prompt_ids[:n]), cache

    def clear(self) -> None:
        with self._lock:
            self._ids, self._cache = [], None
