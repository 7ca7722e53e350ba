"""An OpenAI-compatible API on the UI's server, so other tools can ask zhiku: ``GET /v1/models`` and
``POST /v1/chat/completions`` (``stream: true`` for server-sent events ending with ``data: [DONE]``).

The last user message is the question; the user and assistant messages before it are the conversation (a
follow-up is rewritten with it before the search, as in the chat). System messages are ignored: zhiku's own
prompt makes the model answer from the documents. The answer carries what the chat shows beside it in an extra
field ``zhiku`` of the completion (and of the last streamed chunk): ``sources`` (as ``rag ask --json`` prints
them: file, page, location, score, text, evidence...), ``extract``, ``unsupported``, ``standalone_question``,
``notes``. With a login configured (required off loopback), the API wants it too: the password as the bearer
token (``api_key`` in OpenAI's clients; percent-encoded, ``urllib.parse.quote(password)``, if it is not ASCII, since
HTTP headers are) or the UI's login cookie.

The model ``zhiku-llm`` is the chat model itself: the messages go to it as they are, no search, so that another
zhiku (``ZHIKU_LLM_BACKEND=openai``) or any tool can use this one's model.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from urllib.parse import unquote

from fastapi import Request  # module level: FastAPI reads the handlers' annotations by name
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from models.streaming import SamplingParams
from rag.followup import Turn
from ui.login import logged_in

MODEL_ID = "zhiku"  # answers from the documents
CHAT_MODEL_ID = "zhiku-llm"  # the chat model itself: the messages go to it as they are (another zhiku's generator)
LOGIN_REQUIRED = "a login is required: the UI's password as the bearer token"


class BadRequest(ValueError):
    """The request cannot be answered; the message says why (an OpenAI-style 400)."""


def conversation(messages) -> tuple[str, list[Turn]]:
    """The question (the last user message) and the turns before it (user, then the assistant's answer)."""
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list")
    turns: list[Turn] = []
    question = None
    for message in messages:
        if not isinstance(message, dict):
            raise BadRequest("each message must be an object with 'role' and 'content'")
        role, content = message.get("role"), _text(message.get("content"))
        if role == "user":
            if question is not None:
                turns.append(Turn(question))
            question = content
        elif role == "assistant" and question is not None:
            turns.append(Turn(question, content))
            question = None
    if not question or not question.strip():
        raise BadRequest("the last message must be the user's question, and not empty")
    return question, turns


def _text(content) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def chat_messages(messages) -> list[dict[str, str]]:
    """The messages for the plain chat model: system, user and assistant turns, ending with the user's."""
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list")
    out = []
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant"):
            raise BadRequest("each message must be an object with a role of system, user or assistant")
        out.append({"role": message["role"], "content": _text(message.get("content"))})
    if out[-1]["role"] != "user" or not out[-1]["content"].strip():
        raise BadRequest("the last message must be the user's, and not empty")
    return out


SAMPLING_FIELDS = {  # request field -> (SamplingParams field, least value)
    "temperature": ("temperature", 0.0),
    "top_p": ("top_p", 1e-6),
    "max_tokens": ("max_new_tokens", 1),
    "repetition_penalty": ("repetition_penalty", 1.0),
}


def sampling(body: dict, defaults: SamplingParams) -> SamplingParams:
    """zhiku's sampling settings, with what the request sets instead (OpenAI's names; repetition_penalty too)."""
    changes = {}
    for name, (field, low) in SAMPLING_FIELDS.items():
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low:
            raise BadRequest(f"'{name}' must be a number of at least {low:g}")
        changes[field] = int(value) if field == "max_new_tokens" else float(value)
    if changes.get("top_p", 1.0) > 1.0:
        raise BadRequest("'top_p' must be at most 1")
    return replace(defaults, **changes)


def add_openai_routes(app, qa, auth: tuple[str, str] | None) -> None:
    """``/v1/models`` and ``/v1/chat/completions`` on Gradio's FastAPI ``app``, answering through ``qa``."""

    def allowed(request: Request) -> bool:
        if auth is None:
            return True
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            token = header[7:].strip()
            for candidate in (token, unquote(token)):  # headers are ASCII: a non-ASCII password comes %-encoded
                if secrets.compare_digest(candidate.encode(), auth[1].encode()):
                    return True
        return logged_in(app, request)  # the UI's login cookie

    def models(request: Request):
        if not allowed(request):
            return _error(401, LOGIN_REQUIRED, "invalid_api_key")
        listed = [
            {"id": name, "object": "model", "created": 0, "owned_by": "zhiku"} for name in (MODEL_ID, CHAT_MODEL_ID)
        ]
        return {"object": "list", "data": listed}

    async def completions(request: Request):
        if not allowed(request):
            return _error(401, LOGIN_REQUIRED, "invalid_api_key")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "the body must be JSON", "invalid_request_error")
        try:
            if not isinstance(body, dict):
                raise BadRequest("the body must be a JSON object")
            if body.get("model") == CHAT_MODEL_ID:
                return await _plain_chat(qa, chat_messages(body.get("messages")), sampling(body, qa.context.params),
                                         bool(body.get("stream")))  # fmt: skip
            question, history = conversation(body.get("messages"))
        except BadRequest as exc:
            return _error(400, str(exc), "invalid_request_error")
        answers = qa.stream(question, history=history)
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if body.get("stream"):  # Starlette iterates a plain generator in its thread pool
            return StreamingResponse(_events(answers, ident, created), media_type="text/event-stream")
        try:
            answer = await run_in_threadpool(_last, answers)  # the generation, not on the event loop
        except Exception as exc:  # noqa: BLE001 - the client gets the reason, as the chat shows it
            return _error(500, f"the answer failed: {exc}", "server_error")
        return _completion(answer.text or "", ident, created, MODEL_ID, _extra(answer))

    routes = [
        APIRoute("/v1/models", models, methods=["GET"]),
        APIRoute("/v1/chat/completions", completions, methods=["POST"]),
    ]
    for route in reversed(routes):  # first in the list: Gradio's own routes must not shadow them
        app.router.routes.insert(0, route)


async def _plain_chat(qa, messages: list[dict[str, str]], params: SamplingParams, stream: bool):
    """The chat model's reply to ``messages`` (``zhiku-llm``), streamed or whole."""
    ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    pieces = qa.chat(messages, params)
    if stream:
        return StreamingResponse(_sse(pieces, ident, created, CHAT_MODEL_ID), media_type="text/event-stream")
    try:
        text = await run_in_threadpool(lambda: "".join(pieces))
    except ValueError as exc:  # the messages do not fit the model's context
        return _error(400, str(exc), "invalid_request_error")
    except Exception as exc:  # noqa: BLE001 - the client gets the reason
        return _error(500, f"the chat model failed: {exc}", "server_error")
    return _completion(text, ident, created, CHAT_MODEL_ID)


def _last(answers: Iterator):
    *_, answer = answers  # the finished answer: the stream's last update
    return answer


def _completion(text: str, ident: str, created: int, model: str, extra: dict | None = None) -> dict:
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
    whole = {"id": ident, "object": "chat.completion", "created": created, "model": model, "choices": [choice],
             "usage": None}  # fmt: skip
    if extra is not None:
        whole[MODEL_ID] = extra
    return whole


def _events(answers: Iterator, ident: str, created: int) -> Iterator[str]:
    """A zhiku answer as server-sent events: the text each update adds, then zhiku's extra field at the end."""
    latest: list = []

    def added() -> Iterator[str]:
        sent = ""
        for answer in answers:
            latest[:] = [answer]
            text = answer.text or ""
            if text.startswith(sent) and len(text) > len(sent):
                yield text[len(sent) :]
                sent = text

    return _sse(added(), ident, created, MODEL_ID, lambda: _extra(latest[0]) if latest else {})


def _sse(pieces: Iterator[str], ident: str, created: int, model: str, extra=lambda: None) -> Iterator[str]:
    """Server-sent events: the role, then each piece of text, then the end (with ``extra()`` as the field
    ``zhiku`` when it gives one); an error after the start goes to the client as an event."""

    def chunk(delta: dict, finish: str | None = None, fields: dict | None = None) -> str:
        data = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip
        if fields is not None:
            data[MODEL_ID] = fields
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    try:
        for piece in pieces:
            if piece:
                yield chunk({"content": piece})
    except Exception as exc:  # noqa: BLE001 - the stream has started: the error goes to the client as an event
        yield f"data: {json.dumps({'error': {'message': str(exc), 'type': 'server_error'}}, ensure_ascii=False)}\n\n"
        yield "data: [DONE]\n\n"
        return
    yield chunk({}, "stop", extra())
    yield "data: [DONE]\n\n"


def _extra(answer) -> dict:
    whole = answer.as_dict()
    keys = ("sources", "extract", "unsupported", "standalone_question", "notes", "language", "answer_mode")
    return {key: whole[key] for key in keys}


def _error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": None}}, status_code=status)
