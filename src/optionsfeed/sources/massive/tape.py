"""What the adapter knows of each streamed contract: its newest quote, the day's volume.

Massive streams quotes and trades but no volume figure; the chain snapshot has the
day's volume so far (`day.volume`). So the adapter owns each contract's volume:
seeded from the snapshot, every streamed trade adds its size, and a trade of a new
New York date starts it again (as processing counts volume). It reaches processing
as the venue's `volume` column of a quote row, which carries the whole top of
book, so the newest quote of each contract is kept here too.

Pure: times come in with the events, no clock. Bounded by the listed contracts
(`retain` forgets the others).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta

from ...model.calendar import NEW_YORK

_UNKNOWN_DAY = 0  # before any real date: a trade of any day starts the volume afresh


# A contract's newest quote: (bid, ask, bid_size, ask_size, ts_us). A plain tuple:
# one is made per streamed quote, and a frozen dataclass costs ~8 times as much.
Top = tuple[float, float, float, float, int]


@dataclass(slots=True)
class _Days:
    """New York dates of µs times; the bounds of the last one are kept, since nearly
    every event falls on the same date as the one before it."""

    lo: int = 0
    hi: int = 0
    ordinal: int = _UNKNOWN_DAY

    def of(self, ts_us: int) -> int:
        if not self.lo <= ts_us < self.hi:
            day = datetime.fromtimestamp(ts_us / 1e6, NEW_YORK).date()
            start = datetime.combine(day, time(), NEW_YORK)
            end = datetime.combine(day + timedelta(days=1), time(), NEW_YORK)
            self.lo = int(start.timestamp()) * 1_000_000
            self.hi = int(end.timestamp()) * 1_000_000
            self.ordinal = day.toordinal()
        return self.ordinal


@dataclass(slots=True)
class Tape:
    """Newest quotes (`tops`) and day volumes by compact OSI symbol.

    `unsent`: contracts whose volume changed while no quote of theirs was known, so
    it could not be put yet: it goes with their first quote (`take_unsent`).
    """

    tops: dict[str, Top] = field(default_factory=dict)
    unsent: set[str] = field(default_factory=set)
    _volume: dict[str, tuple[int, float]] = field(default_factory=dict)
    _days: _Days = field(default_factory=_Days)

    def quote(self, osi: str, bid: float, ask: float, bid_size: float, ask_size: float,
              ts_us: int) -> None:  # fmt: skip
        """`osi`'s newest quote (the caller keeps time order)."""
        self.tops[osi] = (bid, ask, bid_size, ask_size, ts_us)

    def volume(self, osi: str) -> float:
        """`osi`'s volume of its latest day (NaN: none known)."""
        v = self._volume.get(osi)
        return math.nan if v is None else v[1]

    def seed_volume(self, osi: str, volume: float, as_of_us: int) -> float:
        """Take a snapshot's day volume of `osi` (NaN: not given) as of `as_of_us`;
        return the contract's volume.

        A later day's figure replaces the one held, an earlier day's is ignored; on
        the same day the larger wins (trades the stream gave since the snapshot, or
        trades the snapshot counted while the stream was down: neither is counted
        twice). Not given, and none held: 0 of no known day.
        """
        held = self._volume.get(osi)
        if math.isnan(volume):
            if held is None:
                self._volume[osi] = (_UNKNOWN_DAY, 0.0)
                return 0.0
            return held[1]
        seeded = (self._days.of(as_of_us), volume)
        if held is None or seeded > held:  # a later day, or more on the same day
            self._volume[osi] = held = seeded
        return held[1]

    def trade(self, osi: str, size: float, ts_us: int) -> float:
        """Add a streamed trade of `osi`; return the contract's volume.

        A trade of a later New York date than the volume held starts it again; a
        late print of an earlier date adds nothing to today's.
        """
        day = self._days.of(ts_us)
        held = self._volume.get(osi)
        if held is None or day > held[0]:
            volume = size
        elif day == held[0]:
            volume = held[1] + size
        else:
            return held[1]
        self._volume[osi] = (day, volume)
        return volume

    def take_unsent(self, osi: str) -> float:
        """`osi`'s volume if it is waiting for a quote to go with (then no longer), else NaN."""
        if osi in self.unsent:
            self.unsent.discard(osi)
            return self.volume(osi)
        return math.nan

    def retain(self, listed: set[str]) -> None:
        """Forget every contract not in `listed`."""
        for osi in [s for s in self.tops if s not in listed]:
            del self.tops[osi]
        for osi in [s for s in self._volume if s not in listed]:
            del self._volume[osi]
        self.unsent &= listed
