"""zhiku: python app.py [--host H] [--port P] [--data-dir D] opens the web UI."""

from offline import enforce_offline

enforce_offline()

import argparse  # noqa: E402
import logging  # noqa: E402
import threading  # noqa: E402

from settings import Settings  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="zhiku 知库: local, offline question answering over your PDFs")
    p.add_argument("--host", help="bind address (default 127.0.0.1, setting ZHIKU_HOST)")
    p.add_argument("--port", type=int, help="port (default 7860, setting ZHIKU_PORT)")
    p.add_argument("--data-dir", help="data directory (default ./data, setting ZHIKU_DATA_DIR)")
    return p.parse_args(argv)


def preload(services) -> None:
    """Load the chat model in the background so the first question does not wait for it."""
    from services import CHAT_MODEL

    try:
        with services.governor.acquire(CHAT_MODEL):
            pass
    except Exception:  # noqa: BLE001 - the first question reports the same error to the user
        logging.getLogger("zhiku").exception("preloading the chat model failed")


def main(argv=None) -> None:
    args = parse_args(argv)
    overrides = {k: v for k, v in {"host": args.host, "port": args.port, "data_dir": args.data_dir}.items() if v}
    settings = Settings(**overrides)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from services import StartupError, build_services
    from ui.web import UnsafeBind, ZhikuUI, check_bind, launch

    try:
        check_bind(settings)
    except UnsafeBind as exc:
        raise SystemExit(f"zhiku cannot start: {exc}") from None

    try:
        services = build_services(settings, keep_uploads=True)
    except StartupError as exc:
        raise SystemExit(f"zhiku cannot start: {exc}") from None
    threading.Thread(target=services.ingestor.recover, name="zhiku-recover", daemon=True).start()
    services.telemetry.start()
    if settings.preload_llm:
        threading.Thread(target=preload, args=(services,), name="zhiku-preload", daemon=True).start()
    print(f"zhiku: data in {settings.data_dir.resolve()}; open http://{settings.host}:{settings.port}")
    launch(ZhikuUI(services).build(), settings)


if __name__ == "__main__":
    main()
