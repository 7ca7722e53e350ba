"""The store, retrieval, prompts and the question-answering flow with citations."""
