"""Each account's share of a worker: requests in flight, and so pool connections.

One tenant's heavy reads used to take every pooled connection of a worker
(and its turns on the event loop) while another tenant's requests waited:
63 ms at the median against 3 ms when quiet. This pure ASGI middleware lets
one account have at most ACCOUNT_POOL_SHARE of a worker's pool connections'
worth of requests in flight (DATABASE_POOL_SIZE + DATABASE_MAX_OVERFLOW, at
least one); its further requests wait, in order, before they take a
connection, while other accounts' requests go ahead. A request that waits
longer than WAIT_SECONDS, or finds QUEUE_PER_SLOT times its account's share
already waiting, is answered 503 with Retry-After (counted and logged under
the route it was for, though routing has not run). A request takes its
slot once its whole body has arrived (ContentNegotiation, outside this
middleware, has read it), not while a client sends a slow body, and holds it
until its answer starts (its connection is back in the pool by then), not
while a client reads a long answer.

A request is known to be an account's by its API key: the middleware keeps,
per worker, which account each key that authenticated belongs to (the
dependency that authenticates a caller leaves it in the request's scope).
Keys not yet known on a worker (a new key, every key after a restart) share
one account's share between them until their first request is answered: a
client making key after key cannot take the pool from the accounts already
served. A key refused (401: revoked, its user gone) is forgotten, so its
requests no longer wait in its old account's queue. Requests without a
well-formed key do no database work before they are refused, and are not
shared. The event stream holds no connection and is left out.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.accounts import key_secrets as keys
from service.api.errors import ServiceUnavailable, api_error_response, matched_route

# Where the authenticating dependency leaves the caller's account.
SCOPE_ACCOUNT = "service.account_id"
WAIT_SECONDS = 10.0
QUEUE_PER_SLOT = 20
RETRY_AFTER_SECONDS = 1
# Keys whose account a worker remembers (least recently used ones forgotten).
REMEMBERED_KEYS = 100_000
UNSHARED_PATHS = frozenset({"/api/v1/events"})
# The share of the keys not yet known on this worker (no account has this id).
UNKNOWN_KEYS = uuid.UUID(int=0)
UNAUTHORIZED = 401


@dataclass
class _Share:
    in_flight: int = 0
    waiting: deque[asyncio.Future[None]] = field(default_factory=deque)


class AccountShares:
    def __init__(self, app: ASGIApp, slots: int, routes: Sequence[BaseRoute] = ()) -> None:
        """`routes`: the app's, to count and log a refusal under its route."""
        self.app, self.slots, self.routes = app, max(1, slots), routes
        self.accounts_of_keys: OrderedDict[bytes, uuid.UUID] = OrderedDict()
        self.shares: dict[uuid.UUID, _Share] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNSHARED_PATHS:
            await self.app(scope, receive, send)
            return
        digest = _key_digest(scope)
        account = self.accounts_of_keys.get(digest, UNKNOWN_KEYS) if digest else None
        if account is None:
            await self.app(scope, receive, send)
        else:
            try:
                await self._take(account)
            except ServiceUnavailable as error:
                if (route := matched_route(self.routes, scope)) is not None:
                    scope["route"] = route
                await api_error_response(error)(scope, receive, send)
                return
            status = await self._shared(account, scope, receive, send)
            if status == UNAUTHORIZED and digest is not None:
                # Revoked (or its user gone): its requests are no longer the
                # account's, to wait in its queue and take its slots.
                self.accounts_of_keys.pop(digest, None)
        if digest is not None:
            self._remember(digest, scope.get(SCOPE_ACCOUNT))

    async def _shared(
        self, account: uuid.UUID, scope: Scope, receive: Receive, send: Send
    ) -> int | None:
        """Run the request on one of the account's slots, given back when its
        answer starts: the request's transaction has ended and its connection
        is back in the pool by then (service/api/dependencies.py), and a page
        or a stream that a client reads slowly must not hold the share.
        Returns the answer's status (None if none began)."""
        held = True
        status: int | None = None

        def give_back() -> None:
            nonlocal held
            if held:
                held = False
                self._give_back(account)

        async def send_and_give_back(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                give_back()
            await send(message)

        try:
            await self.app(scope, receive, send_and_give_back)
        finally:
            give_back()
        return status

    async def _take(self, account: uuid.UUID) -> None:
        share = self.shares.setdefault(account, _Share())
        if share.in_flight < self.slots and not share.waiting:
            share.in_flight += 1
            return
        if len(share.waiting) >= QUEUE_PER_SLOT * self.slots:
            raise _busy("too many of this account's requests are waiting on this worker")
        turn = asyncio.get_running_loop().create_future()
        share.waiting.append(turn)
        try:
            # The future itself, under a deadline. asyncio.wait_for around a
            # shield cost a waiter, a shield and their callbacks on the path
            # every waiting request takes, and on Python 3.11 it swallowed a
            # cancellation that came as the turn was handed over: the
            # request then ran after its task was cancelled.
            async with asyncio.timeout(WAIT_SECONDS):
                await turn
        except BaseException as error:
            if turn.done() and not turn.cancelled():
                self._give_back(account)  # handed over just as the wait ended
            else:
                # Cancelled with its request (or at the deadline); a slot
                # given back meanwhile may have passed it over already.
                turn.cancel()
                if turn in share.waiting:
                    share.waiting.remove(turn)
                self._forget_if_idle(account, share)
            if isinstance(error, TimeoutError):
                raise _busy("this account's requests waited too long for their share") from None
            raise

    def _give_back(self, account: uuid.UUID) -> None:
        share = self.shares[account]
        while share.waiting:
            turn = share.waiting.popleft()
            if not turn.done():
                turn.set_result(None)  # the slot passes on; in_flight is unchanged
                return
        share.in_flight -= 1
        self._forget_if_idle(account, share)

    def _forget_if_idle(self, account: uuid.UUID, share: _Share) -> None:
        if share.in_flight == 0 and not share.waiting:
            self.shares.pop(account, None)

    def _remember(self, digest: bytes, account: object) -> None:
        if not isinstance(account, uuid.UUID):
            return
        self.accounts_of_keys[digest] = account
        self.accounts_of_keys.move_to_end(digest)
        if len(self.accounts_of_keys) > REMEMBERED_KEYS:
            self.accounts_of_keys.popitem(last=False)


def _key_digest(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, credential = value.decode("latin-1").partition(" ")
            credential = credential.strip()
            if scheme.lower() == "bearer" and keys.looks_like_key(credential):
                return keys.digest(credential)
            return None
    return None


def _busy(detail: str) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"{detail} (ACCOUNT_POOL_SHARE); retry shortly",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )
