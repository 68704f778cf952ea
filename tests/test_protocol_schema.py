"""The machine-readable contract itself: docs/protocol.schema.json is a valid schema whose message
lists match its definitions, the document's examples obey it, and it rejects what it must (the
end-to-end tests check every real server message against it through conftest.py)."""

from __future__ import annotations

import json
import re

import pytest
from jsonschema import Draft202012Validator

from holistream import protocol
from tests.protocol_schema import (
    SCHEMA_PATH,
    ContractViolation,
    check_server_message,
    schema,
    validator,
)

DOC = SCHEMA_PATH.parent / "protocol.md"


def _listed(union: str) -> set[str]:
    return set(schema()["$defs"][union]["properties"]["type"]["enum"])


@pytest.mark.parametrize("side", ["server", "client"])
def test_every_message_definition_is_in_its_union(side: str) -> None:
    Draft202012Validator.check_schema(schema())
    defined = {k.split(".", 1)[1] for k in schema()["$defs"] if k.startswith(f"{side}.")}
    union = schema()["$defs"][f"{side}_message"]
    dispatched = {rule["if"]["properties"]["type"]["const"] for rule in union["allOf"]}
    assert defined == _listed(f"{side}_message") == dispatched


def _doc_examples() -> list[dict]:
    """Every JSON object in a ```json block of docs/protocol.md (blocks eliding values with … are
    illustrations, not examples)."""
    found = []
    for block in re.findall(r"```json\n(.*?)```", DOC.read_text(), re.S):
        if "…" in block:
            continue
        text = block.strip()
        try:
            found.append(json.loads(text))
        except ValueError:
            found.extend(json.loads(line) for line in text.splitlines() if line.strip())
    return found


def test_the_documents_examples_obey_the_schema() -> None:
    examples = _doc_examples()
    assert len(examples) >= 12
    whole = Draft202012Validator(schema())
    for example in examples:
        assert "type" in example or "error" in example, example
        if "type" in example:
            errors = list(whole.iter_errors(example))
            assert not errors, (example, [e.message for e in errors])


def _ready() -> dict:
    return {
        "type": "ready", "protocol": "1.1", "session": "s", "role": "producer",
        "pipeline": "holistic", "parts": ["face", "hands", "pose"], "format": "json",
        "stream": None, "server": "holistream 0.1.0",
        "limits": {"max_in_flight": 2, "max_message_bytes": 4194304, "max_image_pixels": 1,
                   "max_image_side": 1, "max_frame_age_ms": 500, "idle_timeout_s": 30,
                   "hello_timeout_s": 5, "ping_interval_s": 20, "stats_interval_s": 1.0,
                   "max_fps": 240},
        "fps_requested": 30, "fps_granted": 28.5,
        "grant": {"fps": 28.5, "requested": 30, "floor": 10},
    }  # fmt: skip


def test_a_violation_names_the_message_and_the_field() -> None:
    check_server_message(json.dumps(_ready()))
    broken = _ready()
    del broken["limits"]["max_in_flight"]
    with pytest.raises(ContractViolation, match=r"'ready' .* at \$\.limits: 'max_in_flight'"):
        check_server_message(json.dumps(broken))
    extra = _ready() | {"surprise": 1}
    with pytest.raises(ContractViolation, match=r"'ready'.*surprise"):
        check_server_message(json.dumps(extra))
    with pytest.raises(ContractViolation, match="'dance' is not in"):
        check_server_message('{"type": "dance"}')
    err = {"type": "error", "code": "no_such_code", "message": "m", "fatal": False}
    with pytest.raises(ContractViolation, match=r"'error' .* at \$\.code"):
        check_server_message(json.dumps(err))


def test_binary_results_must_have_the_announced_length() -> None:
    result = protocol.Result(1, 0, 0.0, 0, 640, 480, "holistic", {"pose": None})
    data = protocol.encode_result_binary(result)
    check_server_message(data)
    with pytest.raises(ContractViolation, match="announce"):
        check_server_message(data + b"\0")
    with pytest.raises(ContractViolation):
        check_server_message(b"XXXX" + data[4:])


def test_client_messages_are_described() -> None:
    v = validator("client_message")
    assert v.is_valid({"type": "hello", "protocol": "1.1", "parts": ["face"], "format": "binary"})
    assert v.is_valid({"type": "stats", "id": 7})
    assert not v.is_valid({"type": "hello", "protocol": 2})
    assert not v.is_valid({"type": "configure", "parts": ["tail"]})
