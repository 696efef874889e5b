"""The waits of an account's share (service/api/account_shares.py), driven
step by step: the middleware around an app whose requests end when the test
says, so each way a wait can end (its turn, its client leaving, its deadline,
and both at once) is reached on purpose, and the share must come out whole:
never more requests in flight than its slots, and nothing left behind."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from service.accounts import key_secrets as keys
from service.api import account_shares
from service.api.account_shares import SCOPE_ACCOUNT, AccountShares

ACCOUNT = uuid.uuid4()
KEY = keys.new_key()


class HeldApp:
    """Each request runs until the test releases it; counts those in flight."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.most = 0
        self.releases: dict[int, asyncio.Event] = {}
        self.started: list[int] = []
        # Run just before and just after a request's answer starts (when its
        # slot is given back), in the same step.
        self.before_answer: Callable[[], object] = lambda: None
        self.after_answer: Callable[[], object] = lambda: None
        # Requests whose key is refused: 401 at once, no caller admitted.
        self.refused: set[int] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        number = scope["number"]
        if number in self.refused:
            # Not the account's: outside its count.
            await send({"type": "http.response.start", "status": 401, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        self.started.append(number)
        try:
            scope[SCOPE_ACCOUNT] = ACCOUNT
            await self.releases.setdefault(number, asyncio.Event()).wait()
            self.before_answer()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            self.after_answer()
            await send({"type": "http.response.body", "body": b""})
        finally:
            self.in_flight -= 1

    def release(self, number: int) -> None:
        self.releases.setdefault(number, asyncio.Event()).set()


def _request(
    shares: AccountShares, number: int, statuses: dict[int, int], key: str = KEY
) -> Awaitable[None]:
    scope = {
        "type": "http",
        "path": "/v1/configs",
        "headers": [(b"authorization", f"Bearer {key}".encode())],
        "number": number,
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses[number] = message["status"]

    return shares(scope, receive, send)


async def _settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def _one_slot(
    body: Callable[[AccountShares, HeldApp, dict[int, int]], Awaitable[None]],
) -> tuple[AccountShares, HeldApp, dict[int, int]]:
    app = HeldApp()
    shares = AccountShares(app, slots=1)
    statuses: dict[int, int] = {}
    # A key's first request on a worker goes unshared and teaches the
    # middleware its account.
    app.release(0)
    await _request(shares, 0, statuses)
    await body(shares, app, statuses)
    return shares, app, statuses


def _whole(shares: AccountShares, app: HeldApp, shares_in_use: int = 1) -> None:
    """At most one request in flight for each share in use (one slot each)."""
    assert app.most <= shares_in_use
    assert app.in_flight == 0
    assert shares.shares == {}, "an idle account's share was left behind"


def _leaves_while_waiting(app: HeldApp, waiting: asyncio.Future[None]) -> None:
    waiting.cancel()


def _leaves_as_its_turn_comes(app: HeldApp, waiting: asyncio.Future[None]) -> None:
    # In one step: the first's answer starts, handing the slot to the
    # waiting request, and its client leaves before it runs again.
    app.after_answer = waiting.cancel


@pytest.mark.parametrize("leave", [_leaves_while_waiting, _leaves_as_its_turn_comes])
def test_a_waiting_request_whose_client_leaves_passes_its_turn_on(
    leave: Callable[[HeldApp, asyncio.Future[None]], None],
) -> None:
    """The second of three requests on one slot leaves, before its turn or
    just as it comes (both before it runs again): the slot goes on to the
    third, not lost, and the second never runs."""

    async def body(shares: AccountShares, app: HeldApp, statuses: dict[int, int]) -> None:
        first = asyncio.ensure_future(_request(shares, 1, statuses))
        await _settle()
        second = asyncio.ensure_future(_request(shares, 2, statuses))
        third = asyncio.ensure_future(_request(shares, 3, statuses))
        await _settle()
        assert app.started == [0, 1]
        leave(app, second)
        await _settle()
        app.release(1)
        await first
        await _settle()
        assert app.started == [0, 1, 3]
        app.release(3)
        await third
        with pytest.raises(asyncio.CancelledError):
            await second

    shares, app, statuses = asyncio.run(_one_slot(body))
    assert statuses == {0: 200, 1: 200, 3: 200}
    _whole(shares, app)


def test_a_wait_cancelled_after_its_turn_was_passed_over_leaves_the_share_whole() -> None:
    """A waiting request's client leaves, and the slot is given back before
    that request runs again: the slot skips it, and its own clean-up must
    find it gone from the queue without failing."""

    async def body(shares: AccountShares, app: HeldApp, statuses: dict[int, int]) -> None:
        first = asyncio.ensure_future(_request(shares, 1, statuses))
        await _settle()
        second = asyncio.ensure_future(_request(shares, 2, statuses))
        await _settle()
        # In one step: the second's client leaves, then the first's answer
        # starts (and gives the slot back) before the second runs again.
        app.before_answer = second.cancel
        app.release(1)
        await first
        with pytest.raises(asyncio.CancelledError):
            await second

    shares, app, statuses = asyncio.run(_one_slot(body))
    assert statuses == {0: 200, 1: 200}
    _whole(shares, app)


def test_a_wait_past_its_deadline_is_answered_503(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(account_shares, "WAIT_SECONDS", 0.05)

    async def body(shares: AccountShares, app: HeldApp, statuses: dict[int, int]) -> None:
        first = asyncio.ensure_future(_request(shares, 1, statuses))
        await _settle()
        await _request(shares, 2, statuses)
        assert statuses[2] == 503
        assert app.started == [0, 1]
        app.release(1)
        await first

    shares, app, statuses = asyncio.run(_one_slot(body))
    assert statuses == {0: 200, 1: 200, 2: 503}
    _whole(shares, app)


def test_a_key_refused_once_no_longer_waits_in_its_old_accounts_share() -> None:
    """A key revoked after use is answered 401: its next requests are no
    longer the account's, to wait in its queue and take its slots."""
    revoked = keys.new_key()

    async def body(shares: AccountShares, app: HeldApp, statuses: dict[int, int]) -> None:
        app.release(1)
        await _request(shares, 1, statuses, revoked)  # its account learned
        app.refused |= {2, 4}
        await _request(shares, 2, statuses, revoked)  # now refused
        holding = asyncio.ensure_future(_request(shares, 3, statuses))
        await _settle()
        refused = asyncio.ensure_future(_request(shares, 4, statuses, revoked))
        await _settle()
        # Answered at once, while the account's one slot is still held.
        assert statuses.get(4) == 401
        assert not holding.done()
        app.release(3)
        await holding
        await refused

    shares, app, statuses = asyncio.run(_one_slot(body))
    assert statuses == {0: 200, 1: 200, 2: 401, 3: 200, 4: 401}
    _whole(shares, app)


def test_keys_not_yet_known_share_one_share_and_leave_known_accounts_served() -> None:
    """Key after new key (a client making keys, or every key after a
    restart) cannot take more than one account's share of the worker: the
    new keys' requests queue behind each other, while a known key's are
    served at once."""
    new_keys = [keys.new_key() for _ in range(3)]

    async def body(shares: AccountShares, app: HeldApp, statuses: dict[int, int]) -> None:
        waiting = [
            asyncio.ensure_future(_request(shares, number, statuses, key))
            for number, key in enumerate(new_keys, 1)
        ]
        await _settle()
        assert app.started == [0, 1]
        app.release(4)
        await _request(shares, 4, statuses)  # the known key: its own share
        assert app.started == [0, 1, 4]
        for number in (1, 2, 3):
            app.release(number)
        await asyncio.gather(*waiting)
        assert app.started == [0, 1, 4, 2, 3]

    shares, app, statuses = asyncio.run(_one_slot(body))
    assert statuses == {0: 200, 1: 200, 2: 200, 3: 200, 4: 200}
    _whole(shares, app, shares_in_use=2)
