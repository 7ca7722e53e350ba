"""Environment that keeps every library offline and silent; entry points call this before heavy imports."""

import os

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "ANONYMIZED_TELEMETRY": "False",
    "TOKENIZERS_PARALLELISM": "false",
}


def enforce_offline() -> None:
    """Set the variables before transformers, gradio or chromadb are imported (they read them at import)."""
    for key, value in OFFLINE_ENV.items():
        os.environ[key] = value
