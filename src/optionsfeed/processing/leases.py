"""Which underlyings this processor may publish: its leases, as it last knew them.

Pure bookkeeping over a monotonic `now` passed in (no I/O, no clock); the service
loop (service.py) sends the takes and renewals and asks `held(now)` before each
publish. The truth is the lease key in the broker, which the publish script checks
atomically with the write: this table only keeps a processor from sending what would
be fenced, and makes it stop on time when it cannot renew (a lost broker, a freeze).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass

TTL_S = 3.0
RENEW_S = 1.0
# Publish only this long after the last renewal was *sent*: a renewal that Redis applies
# later makes the key live longer, never shorter, so this stays within the TTL the
# broker grants, with TTL_S - VALID_S of margin for clock rate and in-flight writes.
VALID_S = 2.0
# How often a standby tries to take what it does not own (with jitter, so peers and
# several underlyings do not move in lockstep).
TAKE_S = 0.5


@dataclass(frozen=True, slots=True)
class LeaseSettings:
    """Lease timing; the defaults keep `valid_s < ttl_s` and renew well before either."""

    ttl_s: float = TTL_S
    renew_s: float = RENEW_S
    valid_s: float = VALID_S
    take_s: float = TAKE_S

    @classmethod
    def for_ttl(cls, ttl_s: float) -> LeaseSettings:
        """The default proportions scaled to a TTL of `ttl_s` (tests run short ones)."""
        k = ttl_s / TTL_S
        return cls(ttl_s, RENEW_S * k, VALID_S * k, TAKE_S * k)

    def __post_init__(self) -> None:
        if not 0 < self.renew_s < self.valid_s < self.ttl_s:
            raise ValueError(
                f"leases need 0 < renew_s < valid_s < ttl_s, got "
                f"{self.renew_s}, {self.valid_s}, {self.ttl_s}"
            )


def new_owner_id() -> str:
    """A random id for one processor's lifetime (16 hex digits)."""
    return secrets.token_hex(8)


class LeaseTable:
    """The underlyings this processor holds and until when it may publish them.

    Bounded by the underlyings listed. Changes are returned to the caller (to log
    and count) rather than hidden: `gained` names the ones that need a reset.
    """

    def __init__(self, owner: str, settings: LeaseSettings) -> None:
        self.owner = owner
        self.settings = settings
        self._valid_until: dict[str, float] = {}
        self.gains = 0
        self.losses = 0

    def held(self, now: float) -> set[str]:
        """The underlyings this processor may publish at `now`."""
        return {u for u, t in self._valid_until.items() if t > now}

    def lapsed(self, now: float) -> list[str]:
        """Forget the leases whose renewal is overdue at `now` and return them, sorted."""
        gone = sorted(u for u, t in self._valid_until.items() if t <= now)
        for u in gone:
            del self._valid_until[u]
        self.losses += len(gone)
        return gone

    def owned(self) -> list[str]:
        """Every underlying held or not yet found lapsed, sorted."""
        return sorted(self._valid_until)

    def taken(self, underlyings: Iterable[str], sent: float) -> list[str]:
        """Record leases taken or renewed by a request sent at `sent`: the newly gained."""
        new = []
        for u in underlyings:
            if u not in self._valid_until:
                new.append(u)
            self._valid_until[u] = sent + self.settings.valid_s
        self.gains += len(new)
        return sorted(new)

    def lost(self, underlyings: Iterable[str]) -> list[str]:
        """Forget leases the broker says are another's (fenced, renewal refused)."""
        gone = sorted(u for u in set(underlyings) if u in self._valid_until)
        for u in gone:
            del self._valid_until[u]
        self.losses += len(gone)
        return gone
