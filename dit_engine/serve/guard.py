"""The ASGI middleware in front of every endpoint: the API key, the body's size and its deadline."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from starlette.datastructures import Headers

from dit_engine.serve.responses import error


class _BodyTooLarge(Exception):
    """The body passed ``serve.max_body_mb`` while it was arriving."""


class Guard:
    """ASGI middleware in front of every endpoint: the API key (401), then the whole body read
    here, counted as it arrives whatever its framing (Content-Length or chunked): past
    ``serve.max_body_mb`` it answers 413 at once, and a body that has not arrived within
    ``serve.request_timeout_s`` 408. The endpoint then reads the body from memory."""

    def __init__(self, app: Any, serve: Any):
        self.app = app
        self.serve = serve
        self.max_body = int(serve.max_body_mb * 1024 * 1024)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        serve, headers = self.serve, Headers(scope=scope)
        if serve.api_key and scope["path"] != "/health":
            token = headers.get("authorization", "")
            if not secrets.compare_digest(token.encode(), f"Bearer {serve.api_key}".encode()):
                await error(401, "missing or wrong API key: send Authorization: Bearer <serve.api_key>",
                            "authentication_error")(scope, receive, send)
                return
        too_large = error(413, f"the body is over {self.max_body} bytes; the limit is "
                               f"serve.max_body_mb={serve.max_body_mb:g} MB")
        length = headers.get("content-length", "")
        if length.isascii() and length.isdigit() and int(length) > self.max_body:  # refused before a byte is read
            await too_large(scope, receive, send)
            return
        try:
            body = await asyncio.wait_for(self._body(receive), timeout=serve.request_timeout_s)
        except _BodyTooLarge:
            await too_large(scope, receive, send)
            return
        except asyncio.TimeoutError:
            await error(408, f"the body did not arrive within serve.request_timeout_s={serve.request_timeout_s:g} s")(
                scope, receive, send)
            return
        if body is None:  # the client left while sending it
            return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the client's disconnect

        await self.app(scope, replay, send)

    async def _body(self, receive: Any) -> bytes | None:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise _BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
