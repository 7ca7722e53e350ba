"""Loaded models: the embedder and the chat generator. Imports neither rag nor ingest."""
