"""What the event listeners take from the channel: only what `announce` sends.
Any role that can connect can NOTIFY the channel; a forged or malformed
payload must never reach a stream, nor any of its text a frame."""

from __future__ import annotations

import json
import uuid

import pytest

from service.configs.events import CHANGED, DELETED, MANY_CHANGED, ConfigEvent, parse

ACCOUNT = uuid.UUID("7b0e1c52-5a43-4f57-9a55-2c1d1b6f0e11")


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            {"account": str(ACCOUNT), "event": CHANGED, "id": "checkout"},
            ConfigEvent(ACCOUNT, CHANGED, "checkout"),
        ),
        (
            {"account": str(ACCOUNT), "event": DELETED, "id": "a" * 128},
            ConfigEvent(ACCOUNT, DELETED, "a" * 128),
        ),
        (
            {"account": str(ACCOUNT), "event": MANY_CHANGED},
            ConfigEvent(ACCOUNT, MANY_CHANGED, None),
        ),
        (
            {"account": str(ACCOUNT), "event": "flag_changed", "id": "dark-mode"},
            ConfigEvent(ACCOUNT, "flag_changed", "dark-mode"),
        ),
        (
            {"account": str(ACCOUNT), "event": "flag_deleted", "id": "dark-mode"},
            ConfigEvent(ACCOUNT, "flag_deleted", "dark-mode"),
        ),
        (
            {"account": str(ACCOUNT), "event": "flags_changed"},
            ConfigEvent(ACCOUNT, "flags_changed", None),
        ),
    ],
)
def test_what_announce_sends_is_taken(message: dict[str, str], expected: ConfigEvent) -> None:
    assert parse(json.dumps(message)) == expected


FORGED = {
    "a frame injected through the name": {
        "account": str(ACCOUNT),
        "event": 'config_deleted\ndata: {"id": "forged"}\n\nevent: config_deleted',
        "id": "x",
    },
    "an unknown name": {"account": str(ACCOUNT), "event": "job_deleted", "id": "x"},
    "no id for one flag": {"account": str(ACCOUNT), "event": "flag_changed"},
    "an id for many flags": {"account": str(ACCOUNT), "event": "flags_changed", "id": "x"},
    "a known name in another case": {"account": str(ACCOUNT), "event": "CONFIG_CHANGED", "id": "x"},
    "a name that is not a string": {
        "account": str(ACCOUNT),
        "event": ["config_changed"],
        "id": "x",
    },
    "a line end in the id": {"account": str(ACCOUNT), "event": DELETED, "id": "x\n\nevent: y"},
    "a NUL in the id": {"account": str(ACCOUNT), "event": DELETED, "id": "x\x00"},
    "a lone surrogate in the id": {"account": str(ACCOUNT), "event": DELETED, "id": "x\ud800"},
    "an id too long for a key": {"account": str(ACCOUNT), "event": CHANGED, "id": "a" * 129},
    "an empty id": {"account": str(ACCOUNT), "event": CHANGED, "id": ""},
    "an id that is not a string": {"account": str(ACCOUNT), "event": CHANGED, "id": 1},
    "no id for one config": {"account": str(ACCOUNT), "event": CHANGED},
    "an id for many configs": {"account": str(ACCOUNT), "event": MANY_CHANGED, "id": "x"},
    "an unknown member": {"account": str(ACCOUNT), "event": CHANGED, "id": "x", "data": {}},
    "no account": {"event": CHANGED, "id": "x"},
    "an account that is no UUID": {"account": "acme", "event": CHANGED, "id": "x"},
    "an account UUID in another spelling": {
        "account": ACCOUNT.hex.upper(),
        "event": CHANGED,
        "id": "x",
    },
    "an account that is not a string": {"account": ACCOUNT.int, "event": CHANGED, "id": "x"},
}


@pytest.mark.parametrize("name", sorted(FORGED))
def test_a_forged_or_malformed_event_is_dropped(name: str) -> None:
    assert parse(json.dumps(FORGED[name])) is None


@pytest.mark.parametrize(
    "payload", ["", "not json", "[]", "null", '"config_changed"', "NaN", '{"account": NaN}', "{"]
)
def test_a_payload_that_is_no_event_object_is_dropped(payload: str) -> None:
    assert parse(payload) is None
