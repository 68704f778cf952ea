"""docs/protocol.schema.json as a test oracle: every message a server sends in the tests is checked.

`check_server_message` validates one text message against `$defs/server.<type>` (so a failure names
the message type and the JSON path of the field), and a binary result against the byte layout of
docs/protocol.md. conftest.py hooks it into every WebSocket client the tests use, so the contract
cannot drift from the server without a test failing.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from holistream import protocol

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "docs" / "protocol.schema.json"


class ContractViolation(AssertionError):
    """A server message that docs/protocol.schema.json (or the binary layout) does not allow."""


@cache
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    Draft202012Validator.check_schema(loaded)
    return loaded


@cache
def validator(definition: str) -> Draft202012Validator:
    """A validator for one `$defs` entry, resolving references against the whole schema."""
    root = schema()
    if definition not in root["$defs"]:
        raise KeyError(definition)
    return Draft202012Validator({"$ref": f"#/$defs/{definition}", "$defs": root["$defs"]})


def _describe(text: str) -> str:
    return text if len(text) <= 400 else text[:400] + f"… ({len(text)} chars)"


def check_server_message(data: str | bytes) -> None:
    """Raise ContractViolation if `data` is not a message the contract allows a server to send."""
    if isinstance(data, bytes | bytearray | memoryview):
        check_binary_result(bytes(data))
        return
    try:
        msg = json.loads(data)
    except ValueError as exc:
        raise ContractViolation(
            f"server text message is not JSON ({exc}): {_describe(data)}"
        ) from None
    kind = msg.get("type") if isinstance(msg, dict) else None
    if not isinstance(kind, str):
        raise ContractViolation(f"server message without a string 'type': {_describe(data)}")
    try:
        v = validator(f"server.{kind}")
    except KeyError:
        raise ContractViolation(
            f"server message type {kind!r} is not in docs/protocol.schema.json: {_describe(data)}"
        ) from None
    error = best_match(v.iter_errors(msg))
    if error is not None:
        raise ContractViolation(
            f"server message {kind!r} breaks docs/protocol.schema.json at {error.json_path}: "
            f"{error.message}\n  message: {_describe(data)}"
        )


def check_http_error(body: bytes) -> None:
    """An HTTP refusal's body against `$defs/http.error`."""
    error = best_match(validator("http.error").iter_errors(json.loads(body)))
    if error is not None:
        raise ContractViolation(
            f"HTTP error body breaks docs/protocol.schema.json at {error.json_path}: "
            f"{error.message}\n  body: {body[:400]!r}"
        )


def check_binary_result(data: bytes) -> None:
    """A binary result must decode and its length must be exactly what its flags announce."""
    try:
        expected = protocol.binary_result_size(data)
    except protocol.ProtocolError as exc:
        raise ContractViolation(
            f"binary server message: {exc.message} (first bytes {data[:8]!r})"
        ) from None
    if expected != len(data):
        raise ContractViolation(
            f"binary result {data[:4]!r} is {len(data)} bytes but its header and flags announce "
            f"{expected}"
        )
