"""Source batches in, broker publications out: chain states, epochs and sequences.

Pure and synchronous: the service loop (service.py) owns the I/O. Per batch, each
underlying that changed gets exactly one envelope with `seq` = previous + 1.

With `only` (a processor sharing the underlyings with others), the chains outside it
keep their state (quotes, trades, ticks) but are neither priced nor published, which
is most of the cost; one that comes back into `only` is repriced whole and published
as a reset (a new epoch), as good as if it had been priced all along.
"""

from __future__ import annotations

import secrets
import zlib
from collections.abc import Collection
from typing import Any

import msgspec
import numpy as np
from numpy.typing import NDArray

from ..model.envelope import (
    STATS_FIELD,
    UNDERLYING_FIELD,
    ChainInfo,
    Publication,
    encode_envelope,
    encode_reset,
)
from ..model.records import encode
from ..sources.base import SourceBatch
from .analytics import compute_stats
from .chain import ChainDelta, ChainState, reprice_chains

STATS_INTERVAL_US = 1_000_000
STALE_CHECK_US = 1_000_000
# Rows whose greeks follow the spot in one batch, per chain: a sweep of a big chain
# (3,500 priced rows of SPY, ~40 ms) goes on over the next batches rather than
# holding one batch (and its publication) for all of it.
FOLLOW_ROWS_PER_BATCH = 1000
# Rows of one `periodic` slice (the service's way): about 2-3 ms of American greeks,
# diffing and encoding, so a fresh quote that arrives meanwhile waits at most that
# long; big enough that one slice per batch sweeps the five simulated chains' priced
# rows (7,000-12,000) within a second at 30 batches/s (smaller slices: more calls).
FOLLOW_ROWS_PER_SLICE = 400


def new_epoch() -> str:
    """A fresh epoch id: 8 random hex digits (a new sequence space)."""
    return secrets.token_hex(4)


class _Sequence:
    __slots__ = ("epoch", "seq")

    def __init__(self) -> None:
        self.epoch = new_epoch()
        self.seq = 0


class Processor:
    """All chains of a deployment, with their epoch and seq.

    Bounded by the listings: memory is O(contracts). `stale_after_us` sets when a
    contract with no quote gets the `stale` flag. `follow_interval_us`: when the
    underlying moved, its contracts' greeks follow it (at their IVs, sticky strike)
    at most this often per underlying; 0 turns that off (greeks move with quotes only).
    """

    def __init__(
        self, *, stale_after_us: int = 60_000_000, follow_interval_us: int = 1_000_000
    ) -> None:
        self.stale_after_us = stale_after_us
        self.follow_interval_us = follow_interval_us
        self._follow_due: dict[str, int] = {}
        self._following: dict[str, NDArray[np.intp]] = {}  # rows a sweep has yet to reach
        self.chains: dict[str, ChainState] = {}
        self._seq: dict[str, _Sequence] = {}
        self._stats: dict[str, dict[str, Any]] = {}
        self._stats_due: dict[str, int] = {}
        self._stale_due = 0
        # Max pain depends on open interest and strikes only: recomputed when the
        # chain's open interest changed (its `oi_version`), not every second.
        self._max_pain: dict[str, tuple[int, dict[str, float]]] = {}
        self.updates_in = 0
        self.unpriced: set[str] = set()  # chains whose prices lag their state
        self.follows = 0  # times some chain's greeks followed its spot
        self._turn = ""  # the chain `periodic` served last

    def apply(
        self,
        batch: SourceBatch,
        now_us: int,
        only: Collection[str] | None = None,
        *,
        defer: bool = False,
    ) -> list[Publication]:
        """Apply `batch` at `now_us`; return one publication per underlying that changed,
        of the underlyings in `only` (default: all; the others are kept unpriced).

        The periodic whole-chain work (greeks that follow the spot, forwards implied
        from the quotes) is done here, a bounded part per batch, unless `defer`: then
        the batch's own events are priced and nothing else, and the caller runs that
        work in slices with `periodic` between batches (fresh quotes first).
        """
        self.updates_in += batch.event_count()
        resets: set[str] = set()
        for listing in batch.listings:
            self.chains[listing.underlying] = ChainState(
                listing,
                listed_us=now_us,
                stale_after_us=self.stale_after_us,
                previous=self.chains.get(listing.underlying),
            )
            self._max_pain.pop(listing.underlying, None)
            self._following.pop(listing.underlying, None)
            # Underlyings follow their spots at different moments of the interval:
            # all at once would be one long batch.
            offset = zlib.crc32(listing.underlying.encode()) % max(self.follow_interval_us, 1)
            self._follow_due[listing.underlying] = now_us + offset
            resets.add(listing.underlying)
        touched: dict[str, list[Any]] = {}
        und: dict[str, dict[str, Any]] = {}
        for tick in batch.ticks:
            chain = self.chains.get(tick.underlying)
            if chain is not None and (d := chain.apply_tick(tick)) is not None:
                und.setdefault(tick.underlying, {}).update(d)
        for q in batch.quotes:
            chain = self.chains.get(q.underlying)
            if chain is not None:
                touched.setdefault(q.underlying, []).append(chain.apply_quotes(q))
        for t in batch.trades:
            chain = self.chains.get(t.underlying)
            if chain is not None:
                touched.setdefault(t.underlying, []).append(chain.apply_trades(t))
        stale_check = now_us >= self._stale_due
        if stale_check:
            self._stale_due = now_us + STALE_CHECK_US
        # A chain listed in this batch is priced too (its quotes may have come with the
        # listing), so its reset publication carries values, not an empty chain.
        work: list[tuple[ChainState, NDArray[np.intp]]] = []
        for name, chain in self.chains.items():
            if only is not None and name not in only:
                self.unpriced.add(name)
                continue
            if name in self.unpriced:
                # Back in `only`: priced whole, and published as a new epoch, since
                # nothing of it was published while it was out.
                self.unpriced.discard(name)
                resets.add(name)
                touched[name] = [np.arange(len(chain.symbols), dtype=np.intp)]
            rows = touched.get(name, [])
            if stale_check:
                rows.append(chain.stale_rows(now_us))
            if rows:
                work.append((chain, np.concatenate(rows)))
        priced = reprice_chains(work, now_us, refresh_forwards=not defer)
        deltas = dict(zip((c.underlying for c, _ in work), priced, strict=True))
        repriced = {c.underlying: rows for c, rows in work}
        out: list[Publication] = []
        for name, chain in self.chains.items():
            if name in resets or name in self.unpriced:
                continue
            follow = None if defer else self._follow(chain, repriced.get(name), now_us)
            found = [d for d in (deltas.get(name), follow) if d is not None]
            stats = self._stats_delta(chain, now_us)
            pub = self._publication(chain, found, und.get(name), stats, now_us)
            if pub is not None:
                out.append(pub)
        for name in sorted(resets - self.unpriced):
            out.append(self.reset(name, now_us))
        return out

    # -- periodic work --------------------------------------------------------------

    def periodic_pending(self, now_us: int, only: Collection[str] | None = None) -> bool:
        """Whether `periodic(now_us, only)` has work: a sweep under way or due, or
        forwards due. Cheap (a few comparisons per chain)."""
        return any(self._periodic_kind(c, now_us) for c in self._periodic_chains(only))

    def periodic(self, now_us: int, only: Collection[str] | None = None) -> list[Publication]:
        """One bounded slice of the periodic work of `apply(..., defer=True)`: the
        forwards of one chain that are due (at most FORWARD_EXPIRIES_PER_CALL
        expiries), else the next FOLLOW_ROWS_PER_SLICE rows of one chain's sweep of
        greeks that follow its spot. Chains are served in turn. Returns the slice's
        publication (none for a forward refresh, which only moves later prices)."""
        chains = self._periodic_chains(only)
        for chain in chains:
            kind = self._periodic_kind(chain, now_us)
            if kind is None:
                continue
            # The next call starts after this chain: one chain's sweep does not
            # hold up the others'.
            name = chain.underlying
            self._turn = name
            if kind == "forwards":
                chain.refresh_forwards(now_us)
                return []
            delta = self._follow(chain, None, now_us, FOLLOW_ROWS_PER_SLICE)
            pub = self._publication(chain, [delta] if delta else [], None, None, now_us)
            return [pub] if pub is not None else []
        return []

    def _periodic_chains(self, only: Collection[str] | None) -> list[ChainState]:
        """The chains periodic work may touch, the one after the last served first."""
        names = [n for n in self.chains if n not in self.unpriced and (only is None or n in only)]
        if self._turn in names:
            at = names.index(self._turn) + 1
            names = names[at:] + names[:at]
        return [self.chains[n] for n in names]

    def _periodic_kind(self, chain: ChainState, now_us: int) -> str | None:
        if chain.forwards_due(now_us):
            return "forwards"
        pending = self._following.get(chain.underlying)
        if (pending is not None and len(pending)) or self._sweep_due(chain, now_us):
            return "follow"
        return None

    def _sweep_due(self, chain: ChainState, now_us: int) -> bool:
        """Whether a new sweep of `chain`'s greeks should start: its spot moved and
        the interval since the last sweep is over."""
        return (
            chain.spot_moved
            and self.follow_interval_us > 0
            and now_us >= self._follow_due.get(chain.underlying, 0)
        )

    def _follow(
        self,
        chain: ChainState,
        repriced: NDArray[np.intp] | None,
        now_us: int,
        limit: int | None = None,
    ) -> ChainDelta | None:
        """The greeks of `chain` following its spot: a sweep of its priced rows starts
        when the spot moved and the interval is over, `limit` rows at a time (default
        FOLLOW_ROWS_PER_BATCH)."""
        name = chain.underlying
        pending = self._following.get(name)
        if pending is None or len(pending) == 0:
            if not self._sweep_due(chain, now_us):
                return None  # a moved spot stays moved: it follows once due
            chain.spot_moved = False
            self._follow_due[name] = now_us + self.follow_interval_us
            self.follows += 1
            pending = np.flatnonzero(np.isfinite(chain.pub["iv"]))
        n = FOLLOW_ROWS_PER_BATCH if limit is None else limit
        rows, self._following[name] = pending[:n], pending[n:]
        if repriced is not None:  # repriced from their quotes already
            rows = np.setdiff1d(rows, repriced, assume_unique=False)
        return chain.follow_spot(now_us, rows)

    # -- publications -------------------------------------------------------------------

    def _stats_delta(self, chain: ChainState, now_us: int) -> dict[str, Any] | None:
        if now_us < self._stats_due.get(chain.underlying, 0):
            return None
        self._stats_due[chain.underlying] = now_us + STATS_INTERVAL_US
        full = self._compute_stats(chain, now_us)
        prev = self._stats.get(chain.underlying, {})
        delta = {
            k: v for k, v in full.items() if k not in ("underlying", "ts") and prev.get(k) != v
        }
        self._stats[chain.underlying] = full
        if not delta:
            return None
        return {"underlying": chain.underlying, "ts": now_us, **delta}

    def _compute_stats(self, chain: ChainState, now_us: int) -> dict[str, Any]:
        cached = self._max_pain.get(chain.underlying)
        mp = cached[1] if cached is not None and cached[0] == chain.oi_version else None
        rec = compute_stats(chain, now_us, max_pain=mp)
        # Max pain depends on open interest and strikes only: once per listing.
        self._max_pain[chain.underlying] = (chain.oi_version, rec.max_pain)
        return msgspec.structs.asdict(rec)

    def _publication(
        self,
        chain: ChainState,
        deltas: list[ChainDelta],
        und: dict[str, Any] | None,
        stats: dict[str, Any] | None,
        now_us: int,
    ) -> Publication | None:
        options = [d for cd in deltas for d in cd.options]
        if not options and und is None and stats is None:
            return None
        records: list[tuple[str, bytes]] = [r for cd in deltas for r in cd.records]
        ts = max((d["ts"] for d in options), default=0)
        if und is not None:
            records.append((UNDERLYING_FIELD, encode(chain.underlying_record())))
            ts = max(ts, und["ts"])
        if stats is not None:
            records.append((STATS_FIELD, encode(self._stats[chain.underlying])))
            ts = max(ts, stats["ts"])
        s = self._seq.setdefault(chain.underlying, _Sequence())
        prev, s.seq = s.seq, s.seq + 1
        payload = encode_envelope(
            chain.underlying, s.epoch, prev, s.seq, ts, options=options, underlying=und, stats=stats
        )
        return Publication(chain.underlying, s.epoch, prev, s.seq, ts, payload, records)

    def reset(self, underlying: str, now_us: int) -> Publication:
        """Start a new epoch for `underlying`: a publication carrying its whole state."""
        chain = self.chains[underlying]
        if underlying in self.unpriced:
            self.unpriced.discard(underlying)
            chain.reprice(np.arange(len(chain.symbols), dtype=np.intp), now_us)
        s = _Sequence()
        s.seq = 1
        self._seq[underlying] = s
        stats = self._stats.get(underlying)
        if stats is None:
            stats = self._compute_stats(chain, now_us)
            self._stats[underlying] = stats
            # Spread underlyings over the interval: stats of all at once is a latency spike.
            offset = zlib.crc32(underlying.encode()) % STATS_INTERVAL_US
            self._stats_due[underlying] = now_us + offset
        records = chain.full_records()
        records.append((UNDERLYING_FIELD, encode(chain.underlying_record())))
        records.append((STATS_FIELD, encode(stats)))
        expiries: dict[str, list[str]] = {}
        for sym, exp in zip(chain.symbols, chain.expiry_str, strict=True):
            expiries.setdefault(exp, []).append(sym)
        payload = encode_reset(underlying, s.epoch, now_us)
        info = encode(ChainInfo(expiries))
        return Publication(underlying, s.epoch, 0, 1, now_us, payload, records, info, reset=True)

    def reset_all(self, now_us: int) -> list[Publication]:
        """New epochs for every underlying (after publications were lost)."""
        return [self.reset(name, now_us) for name in sorted(self.chains)]
