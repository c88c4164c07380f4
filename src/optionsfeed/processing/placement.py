"""Which processor owns, and which stand by for, each underlying: rendezvous hashing.

Pure decisions over what the service last read from the broker (the live members,
which leases are free) and a monotonic `now` passed in; the service (service.py) does
the I/O. Leases stay the truth: a plan only says which leases to try to take and which
to give up; the broker decides.

Each underlying ranks the live processors by a hash of (processor, underlying), the
highest first (highest-random-weight hashing), with bounded loads so that the owners
stay balanced within one underlying (`rankings`): the first is its preferred owner, the
next `standbys` are its hot standbys. Every processor computes the same ranking from
the same members, and a member joining or leaving moves few underlyings besides its
own. The hysteresis, so that ownership does not bounce while membership is briefly
unsure:

- an owner hands an underlying over only to a preferred processor it has seen live
  for `settle_s` without a gap (by then that one has priced it as a standby: hot);
- a processor takes a free lease at once only when it is the preferred one; a hot
  standby takes one seen free for `grace_s`, anyone one seen free for 3 x `grace_s`
  (so a free lease never stays free, and the preferred one wins the race);
- a processor keeps pricing an underlying for `linger_s` after its ranking dropped it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PlacementSettings:
    """Hysteresis timings (seconds) and how many hot standbys price each underlying."""

    standbys: int = 1
    settle_s: float = 2.0
    grace_s: float = 0.5
    linger_s: float = 5.0

    @classmethod
    def for_ttl(cls, ttl_s: float, standbys: int = 1) -> PlacementSettings:
        """The default proportions scaled to a lease TTL of `ttl_s` (default 3 s)."""
        k = ttl_s / 3.0
        return cls(standbys, 2.0 * k, 0.5 * k, 5.0 * k)

    def __post_init__(self) -> None:
        if self.standbys < 0:
            raise ValueError(f"standbys must be >= 0, got {self.standbys}")


def weight(member: str, underlying: str) -> int:
    """The rendezvous weight of `member` for `underlying` (64 bits of BLAKE2b)."""
    digest = hashlib.blake2b(f"{member}\0{underlying}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def ranking(underlying: str, members: Iterable[str]) -> list[str]:
    """`members` by rendezvous weight for `underlying`, the highest first."""
    return sorted(members, key=lambda m: (weight(m, underlying), m), reverse=True)


def rankings(universe: Iterable[str], members: Iterable[str]) -> dict[str, list[str]]:
    """Each underlying's members, its preferred owner first, then the others by weight.

    Rendezvous hashing with bounded loads, so that ownership is balanced within one
    underlying: underlyings are placed in name order, each on the highest-weight member
    not yet full, where full means floor(U/N) underlyings, or one more for the first
    U mod N members to reach it. Every processor computes the same from the same
    members and universe. O(U x N log N).
    """
    names = sorted(set(universe))
    ms = sorted(set(members))
    low, extra = divmod(len(names), max(len(ms), 1))
    load = dict.fromkeys(ms, 0)
    out: dict[str, list[str]] = {}
    for u in names:
        r = ranking(u, ms)
        first = next(m for m in r if load[m] < low or (load[m] == low and extra > 0))
        if load[first] == low:
            extra -= 1
        load[first] += 1
        out[u] = [first, *(m for m in r if m != first)]
    return out


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do now: the underlyings to price, leases to try to take, to give up."""

    process: frozenset[str]
    take: tuple[str, ...]
    release: tuple[str, ...]
    ask_free: tuple[str, ...]  # not held, not taken now: ask the broker which are free


class Placement:
    """One processor's view of the membership and the plan it makes from it.

    Bounded by the members seen and the underlyings of the universe.
    """

    def __init__(self, me: str, settings: PlacementSettings) -> None:
        self.me = me
        self.settings = settings
        self._first_seen: dict[str, float] = {me: float("-inf")}
        self._free_since: dict[str, float] = {}
        self._wanted_until: dict[str, float] = {}
        self.rankings: dict[str, list[str]] = {}  # as of the last plan
        self._ranked_for: tuple[frozenset[str], tuple[str, ...]] = (frozenset(), ())
        self.handovers = 0

    @property
    def live(self) -> list[str]:
        """The members as last seen (this processor always among them), sorted."""
        return sorted(self._first_seen)

    def saw_members(self, members: Iterable[str], now: float) -> None:
        """The broker's live members at `now`; one missing starts its settling again."""
        seen = set(members) | {self.me}
        self._first_seen = {m: self._first_seen.get(m, now) for m in seen}

    def saw_free(self, asked: Iterable[str], free: Iterable[str], now: float) -> None:
        """Of the leases `asked` about at `now`, `free` have no holder."""
        free = set(free)
        for u in asked:
            if u in free:
                self._free_since.setdefault(u, now)
            else:
                self._free_since.pop(u, None)

    def plan(self, universe: Iterable[str], held: set[str], now: float) -> Plan:
        """The plan at `now` for `universe`, holding the leases of `held`."""
        st = self.settings
        settled = {m for m, t in self._first_seen.items() if now - t >= st.settle_s}
        settled.add(self.me)
        take: list[str] = []
        release: list[str] = []
        ask: list[str] = []
        every = sorted(set(universe) | held)
        key = (frozenset(self._first_seen), tuple(every))
        if key != self._ranked_for:  # recomputed only when members or universe change
            self.rankings = rankings(every, self._first_seen)
            self._ranked_for = key
        for u in every:
            r = self.rankings[u]
            top = r[: 1 + st.standbys]
            if self.me in top or u in held:
                self._wanted_until[u] = now + st.linger_s
            if u in held:
                # Hand over only to the preferred one that is live, settled (hot) and
                # first among the settled too (no unsettled one above it would object).
                first_settled = next(m for m in r if m in settled)
                if r[0] != self.me and r[0] == first_settled:
                    release.append(u)
                continue
            free_for = now - self._free_since.get(u, now)
            graced = free_for >= (st.grace_s if self.me in top else 3 * st.grace_s)
            if r[0] == self.me or (u in self._free_since and graced):
                take.append(u)
            else:
                ask.append(u)
        self._wanted_until = {u: t for u, t in self._wanted_until.items() if t > now}
        for u in take:
            self._free_since.pop(u, None)
        self.handovers += len(release)
        process = frozenset(self._wanted_until) | held
        return Plan(process, tuple(take), tuple(release), tuple(ask))


def spread(universe: Sequence[str], members: Sequence[str]) -> dict[str, list[str]]:
    """The underlyings each member is preferred for."""
    out: dict[str, list[str]] = {m: [] for m in members}
    for u, r in rankings(universe, members).items():
        out[r[0]].append(u)
    return out
