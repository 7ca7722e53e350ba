"""zhiku: python app.py [--host H] [--port P] [--data-dir D] opens the web UI."""

from offline import enforce_offline

enforce_offline()

import argparse  # noqa: E402
import logging  # noqa: E402
import queue  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

from settings import Settings  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="zhiku 知库: local, offline question answering over your documents")
    p.add_argument("--host", help="bind address (default 127.0.0.1, setting ZHIKU_HOST)")
    p.add_argument("--port", type=int, help="port (default 7860, setting ZHIKU_PORT)")
    p.add_argument("--data-dir", help="data directory (default ./data, setting ZHIKU_DATA_DIR)")
    return p.parse_args(argv)


def preload(services) -> None:
    """Load the chat model in the background so the first question does not wait for it."""
    from models.protocols import GeneratorUnavailable
    from services import CHAT_MODEL

    try:
        with services.governor.acquire(CHAT_MODEL):
            pass
    except GeneratorUnavailable as exc:  # a chat server that is down: said plainly; each question tries again
        logging.getLogger("zhiku").warning("the chat model is not available yet: %s", exc)
    except Exception:  # noqa: BLE001 - the first question reports the same error to the user
        logging.getLogger("zhiku").exception("preloading the chat model failed")


def serve_rebuild(settings, damage):
    """Serve the rebuild page until the user rebuilds the store; returns the services opened on the new one."""
    from ingest.rebuild import known_documents, rebuild
    from rag.writer_lock import WriterLock
    from services import build_services
    from ui.repair import RepairUI
    from ui.web import launch

    rebuilt: queue.Queue = queue.Queue(maxsize=1)
    writer = WriterLock(settings.data_dir, on_wait=lambda message: logging.getLogger("zhiku").warning("%s", message))

    def run_rebuild(progress) -> str:
        with writer.hold("rebuilding the index"):  # no other zhiku process writes to a half-made store
            open_services = lambda: build_services(settings, keep_uploads=True, rebuilding=True, writer=writer)
            result = rebuild(settings, open_services, progress=progress)
        rebuilt.put(result.services)
        return result.summary()

    page = RepairUI(damage, known_documents(settings), run_rebuild).build()
    launch(page, settings, block=False)
    print(f"zhiku: {damage}\nOpen http://{settings.host}:{settings.port} to rebuild it.", flush=True)
    services = rebuilt.get()
    time.sleep(1.0)  # let the summary reach the page; its reload does not depend on it
    page.close()
    return services


def main(argv=None) -> None:
    args = parse_args(argv)
    overrides = {k: v for k, v in {"host": args.host, "port": args.port, "data_dir": args.data_dir}.items() if v}
    settings = Settings(**overrides)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from services import StartupError, StoreDamaged, build_services
    from ui.web import UnsafeBind, ZhikuUI, check_bind, launch

    try:
        check_bind(settings)
    except UnsafeBind as exc:
        raise SystemExit(f"zhiku cannot start: {exc}") from None

    services = damage = None
    try:
        services = build_services(settings, keep_uploads=True)
    except StoreDamaged as exc:
        # Only the message is kept: the traceback's frames would keep the failed start's embedder in memory.
        damage = StoreDamaged(exc.part, exc.path, exc.reason)
    except StartupError as exc:
        raise SystemExit(f"zhiku cannot start: {exc}") from None
    if damage is not None:
        try:
            services = serve_rebuild(settings, damage)
        except StartupError as exc:
            raise SystemExit(f"zhiku cannot start: {exc}") from None
    threading.Thread(target=services.ingestor.recover, name="zhiku-recover", daemon=True).start()
    services.telemetry.start()
    if settings.preload_llm:
        threading.Thread(target=preload, args=(services,), name="zhiku-preload", daemon=True).start()
    print(f"zhiku: data in {settings.data_dir.resolve()}; open http://{settings.host}:{settings.port}")
    launch(ZhikuUI(services).build(), settings, services=services)


if __name__ == "__main__":
    main()
