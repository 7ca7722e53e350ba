"""The one place where zhiku is wired: ``build_services(settings)`` for app.py, both CLIs and the tests."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ingest.chunker import Chunker
from ingest.document import OcrSetting
from ingest.pipeline import Ingestor
from ingest.readers import open_document
from models.device import resolve_device
from models.embedder import Embedder
from models.footprint import Footprint
from models.governor import Governor, budget_bytes
from models.llm import Generator, LlmSpec, SamplingParams, estimate_footprint, parameter_count
from models.memory import memory_device
from models.packaged import ModelNotInstalled
from models.remote_llm import RemoteGenerator, RemoteSpec
from models.telemetry import Telemetry
from models.vision import VisionModel, VisionSpec, estimate_vision
from rag.answering import AnsweringContext, is_small
from rag.chroma_client import ChromaServerUnavailable
from rag.damage import ChunkStoreCheck, StoreDamaged, refuse_pending_rebuild
from rag.image_qa import ImageQAService
from rag.qa import QAService
from rag.registry import Registry
from rag.relevance import RelevanceRule
from rag.retriever import Retriever
from rag.shared_store import follow_shared_store
from rag.store import ChunkStore, EmbedderMismatch
from rag.writer_lock import WriterLock
from settings import Settings

log = logging.getLogger(__name__)

CHAT_MODEL, VISION_MODEL, EMBEDDER = "chat", "vision", "embedder"


class ChatServerNotSet(ValueError):
    """The remote chat backend is chosen but no server is configured."""


# What a user must fix before zhiku can start; entry points print these without a traceback.
StartupError = (EmbedderMismatch, ModelNotInstalled, StoreDamaged, ChatServerNotSet, ChromaServerUnavailable)


@dataclass
class Services:
    settings: Settings
    embedder: Embedder
    registry: Registry
    store: ChunkStore
    ingestor: Ingestor
    governor: Governor
    telemetry: Telemetry
    qa: QAService
    image_qa: ImageQAService

    def langchain_retriever(self, k: int | None = None, mode: str | None = None):
        """zhiku's search over this data directory as a LangChain ``BaseRetriever`` (``rag.langchain_retriever``);
        ``k`` defaults to ``ZHIKU_TOP_K``, ``mode`` to ``ZHIKU_RETRIEVAL_MODE``."""
        from rag.langchain_retriever import ZhikuRetriever

        return ZhikuRetriever(retriever=self.qa.context.retriever, k=k or self.settings.top_k, mode=mode)

    def close(self) -> None:
        self.telemetry.stop()
        for name in (CHAT_MODEL, VISION_MODEL):
            if name in self.governor.names():
                self.governor.unload(name)
        self.registry.close()
        self.store.close()


def llm_spec(settings: Settings) -> LlmSpec:
    return LlmSpec(
        model=settings.llm_model,
        gguf_file=settings.llm_gguf_file,
        quantization=settings.quantization,
        device=settings.device,
        cache_dir=settings.cache_dir,
        context_tokens=settings.context_tokens,
        decode=settings.decode,
        nf4_kernel=settings.nf4_kernel,
    )


def remote_spec(settings: Settings) -> RemoteSpec:
    if not settings.llm_base_url:
        raise ChatServerNotSet("ZHIKU_LLM_BACKEND=openai needs ZHIKU_LLM_BASE_URL (e.g. http://127.0.0.1:8000/v1)")
    return RemoteSpec(
        base_url=settings.llm_base_url,
        api_key=settings.llm_api_key,
        model=settings.llm_model,
        timeout_s=settings.llm_timeout_s,
        context_tokens=settings.context_tokens,
    )


def sampling_params(settings: Settings) -> SamplingParams:
    return SamplingParams(
        temperature=settings.temperature,
        top_p=settings.top_p,
        repetition_penalty=settings.repetition_penalty,
        max_new_tokens=settings.max_new_tokens,
    )


def opener(settings: Settings, ocr):
    """Open any file zhiku reads, with OCR as ``ZHIKU_OCR`` says (the engine loads on the first page it reads)."""
    from functools import partial

    return partial(open_document, ocr=OcrSetting(settings.ocr, ocr))


def ocr_engine(settings: Settings):
    """The OCR engine (not loaded until used), or None when ``ZHIKU_OCR=off``."""
    from ingest.ocr import Ocr

    return None if settings.ocr == "off" else Ocr(threads=settings.ocr_threads, model=settings.ocr_model)


def build_services(
    settings: Settings, *, keep_uploads: bool = False, rebuilding: bool = False, writer: WriterLock | None = None
) -> Services:
    """Open the store and registry, load the embedder; the chat model loads on first use.

    Every write goes through ``writer``, the data directory's lock shared with other zhiku processes (by default
    one that waits for another holder, logging who it is).

    Raises StoreDamaged when the registry or the chunk store cannot be read, or when a rebuild did not finish
    (``rebuilding`` is for that rebuild itself; see ``ingest.rebuild``).
    """
    remote = remote_spec(settings) if settings.llm_backend == "openai" else None  # before anything is opened
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if not rebuilding:  # a rebuild has just checked the store itself
        refuse_pending_rebuild(settings.data_dir)
    # reads the embedded store while the embedder loads (a Chroma server checks its own)
    check = ChunkStoreCheck(settings.chroma_dir, enabled=not rebuilding and not settings.chroma_url)
    registry = None
    try:
        device = resolve_device(settings.device)
        memory = memory_device(device)
        governor = Governor(memory, budget_bytes(settings.vram_budget_gb))
        before = memory.allocated_bytes()
        embedder = Embedder(settings.embed_model, device, settings.embed_batch_size)
        measured = max(0, memory.allocated_bytes() - before)
        governor.adopt(EMBEDDER, embedder, measured=measured, pinned=settings.pin_embedder)
        registry = Registry(settings.registry_path)
        check.result()
        store = ChunkStore(settings.chroma_dir, embedder, embedder.name, settings.keyword_dir, settings.chroma_url)
        if settings.chroma_url:  # other front-ends write to it too: this registry follows their documents
            follow_shared_store(store, registry)
            store.on_shared_change = lambda: follow_shared_store(store, registry)
    except BaseException:
        if registry is not None:
            registry.close()
        raise
    finally:
        check.cancel()
    chunker = Chunker(settings.chunk_size, settings.chunk_overlap, embedder.count_tokens, embedder.max_tokens - 2)
    ocr = ocr_engine(settings)
    ingestor = Ingestor(
        store,
        registry,
        chunker,
        max_bytes=int(settings.max_file_mb * 1_000_000),
        batch_size=settings.embed_batch_size,
        uploads_dir=settings.uploads_dir,
        keep_copies=keep_uploads,
        opener=opener(settings, ocr),
        writer=writer or WriterLock(settings.data_dir, on_wait=lambda message: log.warning("%s", message)),
    )
    spec = llm_spec(settings)
    if remote is not None:  # a chat server generates: nothing of it is held here
        governor.register(CHAT_MODEL, lambda: RemoteGenerator(remote), estimate=Footprint(0, 0, 0))
    else:
        governor.register(
            CHAT_MODEL, lambda: Generator(spec), estimate=lambda: estimate_footprint(spec, settings.context_tokens)
        )
    if settings.vision_model:
        vision = VisionSpec(
            settings.vision_model,
            settings.quantization,
            settings.device,
            settings.context_tokens,
            settings.decode,
            settings.nf4_kernel,
        )
        governor.register(
            VISION_MODEL, lambda: VisionModel(vision), estimate=lambda: estimate_vision(vision, settings.context_tokens)
        )
    telemetry = Telemetry()

    def record(model: str, timings: dict[str, float]) -> None:
        if "first_token_ms" in timings:
            telemetry.record_generation(
                model, timings["first_token_ms"], timings.get("tokens_per_s", 0.0), int(timings.get("answer_tokens", 0))
            )

    context = AnsweringContext(
        Retriever(store, embedder, settings.retrieval_mode),
        governor,
        sampling_params(settings),
        settings.top_k,
        RelevanceRule(settings.min_score, settings.sure_score, settings.min_coverage),
        on_generation=record,
    )

    def small_chat_model() -> bool:  # a remote model's size is unknown: taken as large
        return settings.llm_backend == "local" and is_small(parameter_count(spec))

    def answer_mode():
        if settings.answer_mode != "auto":
            return settings.answer_mode
        return "both" if small_chat_model() else "generate"

    def rewrite():
        if settings.followup_rewrite != "auto":
            return settings.followup_rewrite
        return "rules" if small_chat_model() else "model"

    qa = QAService(context, chat_model=CHAT_MODEL, answer_mode=answer_mode, rewrite=rewrite)
    image_qa = ImageQAService(
        context,
        max_image_bytes=int(settings.max_image_mb * 1_000_000),
        vision_model=VISION_MODEL if settings.vision_model else None,
        text_qa=qa,
        ocr=ocr,
        ocr_with_vision=settings.vision_ocr,
    )
    return Services(settings, embedder, registry, store, ingestor, governor, telemetry, qa, image_qa)
