"""Large answers are sent in bounded chunks, within a per-worker budget.

A page of `/api/v1/configs` can be megabytes (1,000 configs at their size
limits), and the SDK takes a page shorter than its size for the last one, so
a page cannot be cut short by bytes. Sent whole, its body sat in the worker
twice (the encoded body, and the transport's buffer of what the client had
not read) for as long as a client left it unread: six clients that request a
7 MiB page and read nothing grew the workers by about 86 MiB.

Here the page is encoded once (the rows and documents are freed before the
answer starts), reserved against ANSWER_BUFFER_BYTES, the worker's budget of
answer bytes not yet handed to the kernel, and sent in CHUNK_BYTES pieces,
each only when the previous one was taken (uvicorn's flow control), its
bytes given back to the budget (and freed) as it goes. When the budget is
spent, a new large answer is answered 503 with Retry-After at once (one that
waited would hold its page outside the budget); clients that read nothing are
dropped after HTTP_SEND_TIMEOUT, which gives their bytes back. One answer
larger than the whole budget is still sent when nothing else is held.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from service.api.errors import JSONAPI_MEDIA_TYPE, ServiceUnavailable
from service.api.jsonapi import encode

CHUNK_BYTES = 64 * 1024
# Answers smaller than this are sent whole, outside the budget: the common case costs nothing.
STREAMED_FROM_BYTES = 256 * 1024
RETRY_AFTER_SECONDS = 1


class AnswerBudget:
    """Bytes of large answers a worker holds that clients have not taken yet."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def refuse_when_spent(self) -> None:
        """503 before any work when the budget has no room at all."""
        if self.held >= self.limit:
            raise _spent()

    def reserve(self, size: int) -> None:
        """Hold `size` bytes, or 503 when they do not fit (an answer larger
        than the whole budget fits when nothing else is held)."""
        if self.held and self.held + size > self.limit:
            raise _spent()
        self.held += size

    def release(self, size: int) -> None:
        self.held -= size


def _spent() -> ServiceUnavailable:
    # Not waited for: a waiting answer would hold its page outside the budget.
    return ServiceUnavailable(
        "this worker holds as many bytes of large answers not yet read as it may "
        "(ANSWER_BUFFER_BYTES); retry shortly",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


class BudgetedAnswer(StreamingResponse):
    """A body sent piece by piece, its bytes reserved from the budget when the
    answer starts; each piece is dropped, and its bytes given back, once taken."""

    def __init__(self, budget: AnswerBudget, pieces: list[bytes]) -> None:
        self.budget, self.pieces = budget, deque(pieces)
        self.unsent = sum(map(len, pieces))
        super().__init__(
            self._taken_one_by_one(),
            media_type=JSONAPI_MEDIA_TYPE,
            headers={"Content-Length": str(self.unsent)},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Reserved here, not by the handler, so that nothing can drop the
        # answer between reserving and giving back (a failed commit would).
        size = self.unsent
        self.budget.reserve(size)
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.pieces.clear()
            self.budget.release(self.unsent)
            self.unsent = 0

    async def _taken_one_by_one(self) -> AsyncIterator[bytes]:
        while self.pieces:
            piece = self.pieces.popleft()
            yield piece
            # Asked for the next piece: this one was taken (flow control).
            self.unsent -= len(piece)
            self.budget.release(len(piece))


def list_answer(
    budget: AnswerBudget, resources: list[dict[str, Any]], meta: Mapping[str, Any]
) -> Response:
    """`{"data": resources, "meta": meta}` exactly as JsonApiResponse renders
    it; a large one sent in pieces within the worker's budget. The resources
    are encoded one by one into pieces of about CHUNK_BYTES (and the list
    emptied), so the page is held once, as bytes."""
    pieces: list[bytes] = []
    piece = bytearray(b'{"data":[')
    for index in range(len(resources)):
        if index:
            piece += b","
        piece += encode(resources[index])
        if len(piece) >= CHUNK_BYTES:
            pieces.append(bytes(piece))
            piece.clear()
    resources.clear()
    piece += b'],"meta":' + encode(dict(meta)) + b"}"
    pieces.append(bytes(piece))
    if sum(map(len, pieces)) < STREAMED_FROM_BYTES:
        return Response(b"".join(pieces), media_type=JSONAPI_MEDIA_TYPE)
    return BudgetedAnswer(budget, pieces)
