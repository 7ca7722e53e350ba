"""Where zhiku's chunks live: an embedded Chroma in the data directory, or a Chroma server (``ZHIKU_CHROMA_URL``)
that several zhiku front-ends share. Telemetry is off either way."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit


class ChromaServerUnavailable(RuntimeError):
    """The configured Chroma server cannot be reached or used; the message names it and says why."""


def open_client(directory: Path, url: str = ""):
    """A chromadb client: persistent in ``directory``, or over HTTP to the server at ``url``."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    settings = ChromaSettings(anonymized_telemetry=False, allow_reset=False)
    if not url:
        directory.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(directory), settings=settings)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ChromaServerUnavailable(f"ZHIKU_CHROMA_URL must be like http://127.0.0.1:8000, not {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 8000)
    try:
        client = chromadb.HttpClient(host=parts.hostname, port=port, ssl=parts.scheme == "https", settings=settings)
        client.heartbeat()
    except Exception as exc:  # noqa: BLE001 - the reason, with the server named, is what the user needs
        raise ChromaServerUnavailable(
            f"The Chroma server at {url} is not reachable ({type(exc).__name__}: {exc}). Start it (e.g. "
            f"`chroma run --path /srv/zhiku-chroma --host 127.0.0.1 --port {port}`) or unset ZHIKU_CHROMA_URL."
        ) from exc
    return client
