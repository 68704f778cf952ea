"""What goes through Redis between instances: key names, the claim and release scripts, the
channel message layout, and the re-encoding of a remote result. The relay (relay.py) uses them;
docs/scaling-streams.md describes the design.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from holistream import protocol
from holistream.rig.skeleton import Rig

PRODUCER = "holistream:producer:"  # name -> owning instance id (the claim)
META = "holistream:meta:"  # name -> JSON: owner, started event, its last describe()
RIG = "holistream:rig:"  # name -> present while a subscriber elsewhere wants the rig
CONTROL = "holistream:control"  # nudges: "a subscriber elsewhere wants the rig of NAME"
# Channel messages: kind (S start, E end, R result) + sender instance id + payload; a result's
# payload is a byte of the parts the producer tracks (to restore JSON `null`s), then its binary.
CHANNEL = "holistream:stream:"
ID_LEN = 32
# KEYS: producer, meta, rig. ARGV: instance, ttl, meta, channel, message ("" = refresh only).
# 0: another instance owns the name; 1: ours; 2: ours, and a subscriber elsewhere wants the rig.
CLAIM = """
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[2])
if ARGV[5] ~= '' then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
return 1 + redis.call('EXISTS', KEYS[3])
"""
RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
return redis.call('PUBLISH', ARGV[2], ARGV[3]) + 1
"""


@dataclass
class Remote:
    """A stream whose producer is on another instance, as far as this one knows."""

    instance: str
    started: str | None  # its stream_started event, when known
    seen: float  # monotonic time it was last confirmed live
    told: bool = False  # our subscribers were told it started (and not that it ended)
    joined: str | None = None  # the start event our subscription's join already passed on


def result_as_json(binary: bytes, wanted: int) -> bytes:
    """Re-encode a binary result as JSON: the binary form carries the exact 4-decimal values;
    `wanted` (a bit per part) restores the `null` of a part tracked but not found."""
    result = protocol.decode_result_binary(binary)
    result.parts = {p: result.parts.get(p) for i, p in enumerate(protocol.PART_NAMES)
                    if wanted >> i & 1 or p in result.parts}
    if (a := result.rig_arrays) is not None:
        with contextlib.suppress(ValueError):  # another rig layout: leave the rig out
            rig = Rig.from_arrays(a.bones, a.expressions, a.confidence, a.hips, a.head)
            result.rig = rig.to_json()
    return protocol.encode_result_json(result)
