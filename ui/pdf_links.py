"""Source links: ``/zhiku/pdf/<document name>#page=N`` serves the copy of a PDF that zhiku keeps in its data
directory, to the logged-in user only, so a citation opens the document at the cited page.

The name is looked up in the registry and never used as a path: only files under the uploads folder of the
data directory can be served. A document ingested in place from a folder (``python -m ingest DIR``) has no
kept copy and gets no link.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from fastapi import HTTPException, Request  # module level: FastAPI reads the handler's annotations by name
from fastapi.responses import FileResponse
from fastapi.routing import APIRoute

from ui.login import logged_in

PREFIX = "/zhiku/pdf/"


def pdf_link(name: str, page: int) -> str:
    return f"{PREFIX}{quote(name, safe='')}#page={page}"


def add_pdf_route(app, stored_file: Callable[[str], Path | None], data_dir: Path) -> None:
    """Serve kept PDFs on Gradio's FastAPI ``app``, behind its login when one is configured."""
    root = data_dir.resolve()

    def serve(name: str, request: Request):
        if not logged_in(app, request):
            raise HTTPException(status_code=401, detail="Not authenticated / 未登录")
        file = stored_file(name)
        if file is None or root not in file.resolve().parents or not file.is_file():
            raise HTTPException(
                status_code=404, detail=f"{name}: no stored copy in the data directory / 没有保存的副本"
            )
        disposition = f"inline; filename*=UTF-8''{quote(file.name)}"
        return FileResponse(file, media_type="application/pdf", headers={"Content-Disposition": disposition})

    # First in the list: Gradio's own routes must not shadow it; it is added after the server started.
    app.router.routes.insert(0, APIRoute(PREFIX + "{name:path}", serve, methods=["GET"]))
