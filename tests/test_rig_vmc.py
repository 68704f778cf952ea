"""VMC bundles: built from a Rig, sent by a real python-osc UDP client to a real python-osc server
on 127.0.0.1, received as one bundle in the documented order."""

from __future__ import annotations

import numpy as np
import pytest
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_bundle import OscBundle
from pythonosc.osc_server import BlockingOSCUDPServer
from pythonosc.udp_client import SimpleUDPClient

from holistream.rig import quat
from holistream.rig.skeleton import BONES, EXPRESSIONS, Rig
from holistream.rig.vmc import build_bundle, build_osc_bundle


class RecordingDispatcher(Dispatcher):
    """Keeps every datagram and every (address, args) it dispatched, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.packets: list[bytes] = []
        self.messages: list[tuple[str, list]] = []
        self.set_default_handler(lambda address, *args: self.messages.append((address, list(args))))

    def call_handlers_for_packet(self, data: bytes, client_address: tuple[str, int]) -> list:
        self.packets.append(bytes(data))
        return super().call_handlers_for_packet(data, client_address)


def sample_rig() -> Rig:
    rng = np.random.default_rng(11)
    rig = Rig.rest()
    rig.bones = quat.normalize(rng.normal(size=rig.bones.shape))
    rig.expressions = rng.random(len(EXPRESSIONS))
    rig.hips_position = np.array([0.25, -0.1, 0.4])
    return rig


def test_bundle_roundtrip_over_udp() -> None:
    rig = sample_rig()
    payload = build_bundle(rig, 12.5)
    dispatcher = RecordingDispatcher()
    server = BlockingOSCUDPServer(("127.0.0.1", 0), dispatcher)
    server.timeout = 5.0
    try:
        client = SimpleUDPClient("127.0.0.1", server.server_address[1])
        client.send(OscBundle(payload))
        server.handle_request()
    finally:
        server.server_close()

    assert len(dispatcher.packets) == 1 and OscBundle.dgram_is_bundle(dispatcher.packets[0])
    msgs = dispatcher.messages
    addresses = [a for a, _ in msgs]
    assert addresses[0] == "/VMC/Ext/OK" and msgs[0][1] == [1, 3, 0, 1]  # loaded, calibrated,
    # normal mode, tracking (VMC protocol v2.7)
    assert addresses[1] == "/VMC/Ext/T" and msgs[1][1][0] == pytest.approx(12.5)
    assert addresses[2] == "/VMC/Ext/Root/Pos"
    root = msgs[2][1]
    assert root[0] == "root" and root[1:] == pytest.approx([0.25, 0.0, 0.4, 0, 0, 0, 1], abs=1e-6)
    assert addresses[-1] == "/VMC/Ext/Blend/Apply" and msgs[-1][1] == []

    bones = {args[0]: args[1:] for a, args in msgs if a == "/VMC/Ext/Bone/Pos"}
    assert list(bones) == list(BONES)
    for i, name in enumerate(BONES):
        assert len(bones[name]) == 7
        assert bones[name][3:] == pytest.approx(rig.bones[i].tolist(), abs=1e-6)
    assert bones["Hips"][:3] == pytest.approx([0.0, 0.9, 0.0])
    assert bones["LeftHand"][:3] == [0.0, 0.0, 0.0]

    blends = [(args[0], args[1]) for a, args in msgs if a == "/VMC/Ext/Blend/Val"]
    assert [n for n, _ in blends] == list(EXPRESSIONS)
    assert [v for _, v in blends] == pytest.approx(rig.expressions.tolist(), abs=1e-6)
    blend_start = addresses.index("/VMC/Ext/Blend/Val")
    assert addresses.index("/VMC/Ext/Bone/Pos") < blend_start
    assert len(msgs) == 3 + len(BONES) + len(EXPRESSIONS) + 1


def test_fast_path_is_byte_identical_to_the_python_osc_builders() -> None:
    rng = np.random.default_rng(12)
    for include_root in (True, False):
        for k in range(5):
            rig = sample_rig()
            rig.bones = quat.normalize(rng.normal(size=rig.bones.shape))
            rig.hips_position = rng.normal(size=3)
            offsets = (
                {"LeftUpperArm": (-0.1, 0.0, 0.0), "Hips": (0.0, 1.0, 0.02)} if k % 2 else None
            )
            tracking = k != 3
            fast = build_bundle(rig, k * 0.37, include_root=include_root, bone_offsets=offsets,
                                tracking=tracking)
            slow = build_osc_bundle(rig, k * 0.37, include_root=include_root,
                                    bone_offsets=offsets, tracking=tracking)
            assert fast == bytes(slow.dgram)
            ok = next(iter(OscBundle(fast)))
            assert ok.address == "/VMC/Ext/OK" and ok.params == [1, 3, 0, int(tracking)]


def test_without_root_the_hips_carry_the_translation() -> None:
    rig = sample_rig()
    msgs = list(OscBundle(build_bundle(rig, 0.0, include_root=False, hips_height=1.0)))
    assert all(m.address != "/VMC/Ext/Root/Pos" for m in msgs)
    hips = next(
        m.params for m in msgs if m.address == "/VMC/Ext/Bone/Pos" and m.params[0] == "Hips"
    )
    assert hips[1:4] == pytest.approx([0.25, 1.0, 0.4])
