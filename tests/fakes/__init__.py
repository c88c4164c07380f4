"""One fake per venue, for the tests and the benchmarks alike.

`deribit.DeribitVenue` and `massive.Venue` are local servers (aiohttp, 127.0.0.1, port
0) that speak the parts of each venue's API the adapters use, with test controls. The
venue benches (benchmarks/venues*.py) drive the same servers through their fast path:
pre-built WebSocket frames written straight to the socket (`write_frames`, and
Massive's paced `write_paced`). One fake per venue means one RPC table and one REST
filter to keep true to the venue, not a copy per user that drifts.

They live here, not in benchmarks/, because the product tests need them and must not
import the benchmarks; the benchmarks import them as `tests.fakes` (the checkout's
root is on sys.path for both). So nothing here imports pytest or benchmarks
(tests/test_layout.py checks).
"""
