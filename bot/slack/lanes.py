"""How much of each gate's outbox a deliverer reads next (docs/delivery.md, "Consumer group").

Pure: it knows how many entries the deliverer holds per lane and what its last read of each gate
returned; the deliverer does the reading.

- A burst is shared between replicas: at most `lane_depth` entries per gate per read, and never
  more than the deliverer's room allows.
- A burst to **one** lane (a gate whose last read held a single lane; a gate never read counts as
  one) is read only while fewer than `lane_hold` of that lane are held here. The rest stays in the
  stream for whichever replica frees a place first: read all at once, a channel's last notices would
  sit behind this replica's method gate, shut by a 429, while another replica's gate is open.
- A gate whose reads hold many lanes (reminder DMs, a lane per person) is read `lane_depth` at a time.
- A deliverer that is alone (`replicas` == 1) reads every gate that way: nobody else could take the
  rest of a burst, and other lanes queued behind it would only wait longer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

UNREADABLE = "unreadable"  # the lane of an entry whose notice cannot be parsed


class ReadPolicy:
    def __init__(self, *, batch: int, lane_depth: int, lane_hold: int) -> None:
        self.batch = batch
        self.lane_depth = lane_depth
        self.lane_hold = lane_hold
        self._load: Counter[str] = Counter()  # entries held per lane, the one being sent included
        self._single_lane: dict[str, str | None] = {}  # gate -> its lane if its last read held one, else None
        self.replicas = 2  # deliverers sharing the outboxes, until the first heartbeat says

    def held(self, lane: str) -> int:
        return self._load[lane]

    def took(self, lane: str) -> None:
        self._load[lane] += 1

    def let_go(self, lane: str) -> None:
        self._load[lane] -= 1
        if self._load[lane] <= 0:
            del self._load[lane]

    def share(self, room: int, gates: int) -> int:
        """Entries to read per gate: a slice of the room, so that other replicas get the rest of a
        burst and a channel's notices go out through every replica's gate, not one."""
        return max(1, min(self.batch, room // max(1, gates), self.lane_depth))

    def wants(self, gates: Sequence[str], room: int) -> dict[str, int]:
        """How many entries to read from each gate now (0: not this round)."""
        share = self.share(room, len(gates))
        wants: dict[str, int] = {}
        for gate_id in gates:
            if self.replicas <= 1:
                wants[gate_id] = share
            elif gate_id not in self._single_lane:
                wants[gate_id] = min(share, self.lane_hold)
            elif (lane := self._single_lane[gate_id]) is None:
                wants[gate_id] = share
            else:
                wants[gate_id] = min(share, max(0, self.lane_hold - self._load[lane]))
        return wants

    def read(self, lanes: Iterable[tuple[str, str]]) -> None:
        """Note what a read returned: (gate, lane) of each entry. Gates that returned nothing keep
        what was known of them."""
        by_gate: dict[str, set[str]] = {}
        for gate_id, lane in lanes:
            by_gate.setdefault(gate_id, set()).add(lane)
        for gate_id, seen in by_gate.items():
            self._single_lane[gate_id] = next(iter(seen)) if len(seen) == 1 else None
