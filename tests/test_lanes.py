"""The deliverer's read policy: how much of each gate's outbox to read next (pure)."""

from __future__ import annotations

import pytest

from bot.slack.lanes import ReadPolicy


def policy() -> ReadPolicy:
    return ReadPolicy(batch=100, lane_depth=5, lane_hold=2)


@pytest.mark.parametrize(
    ("reads", "held", "room", "wants"),
    [
        # never read: it may be a burst to one channel, so only lane_hold
        ([], {}, 500, {"pay": 2}),
        # its last read held one lane, of which this replica holds 1, 2 or none
        ([("pay", "C0PAY")], {"C0PAY": 1}, 500, {"pay": 1}),
        ([("pay", "C0PAY")], {"C0PAY": 2}, 500, {"pay": 0}),
        ([("pay", "C0PAY")], {}, 500, {"pay": 2}),
        # many lanes (DMs): a slice of lane_depth, whatever each lane holds
        ([("pay", "U1"), ("pay", "U2")], {"U1": 1, "U2": 1}, 500, {"pay": 5}),
        # the room bounds every slice, and one entry per gate is always allowed
        ([("pay", "U1"), ("pay", "U2")], {}, 3, {"pay": 3}),
        ([("pay", "U1"), ("pay", "U2")], {}, 0, {"pay": 1}),
    ],
)
def test_what_to_read_from_a_gate(
    reads: list[tuple[str, str]], held: dict[str, int], room: int, wants: dict[str, int]
) -> None:
    p = policy()
    p.read(reads)
    for lane, n in held.items():
        for _ in range(n):
            p.took(lane)
    assert p.wants(["pay"], room) == wants


@pytest.mark.parametrize("reads", [[], [("pay", "C0PAY")]])
def test_a_deliverer_alone_reads_every_gate_a_slice_at_a_time(reads: list[tuple[str, str]]) -> None:
    p = policy()
    p.replicas = 1
    p.read(reads)
    p.took("C0PAY")
    p.took("C0PAY")
    assert p.wants(["pay"], 500) == {"pay": 5}


def test_a_gate_is_judged_by_its_last_read_that_returned_something() -> None:
    p = policy()
    p.read([("pay", "U1"), ("pay", "U2")])
    p.read([])  # an empty read says nothing new
    assert p.wants(["pay"], 500) == {"pay": 5}
    p.read([("pay", "C0PAY")])  # now a burst to one channel
    p.took("C0PAY")
    p.took("C0PAY")
    assert p.wants(["pay"], 500) == {"pay": 0}
    p.let_go("C0PAY")
    assert p.wants(["pay"], 500) == {"pay": 1}
    assert p.held("C0PAY") == 1


def test_the_room_is_shared_between_gates() -> None:
    p = policy()
    gates = [f"g{i}" for i in range(10)]
    p.read((g, f"U{g}{n}") for g in gates for n in range(2))
    assert p.wants(gates, 20) == dict.fromkeys(gates, 2)
