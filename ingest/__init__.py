"""Files -> pages -> chunks -> store. ``python -m ingest`` is the headless command."""
