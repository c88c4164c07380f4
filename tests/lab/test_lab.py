"""The deployment across hosts: a Redis Cluster, a processor, three gateways and
HAProxy, each on its own host (network namespaces; see lab.py). Clients connect
through HAProxy from a host of their own.

Needs root and `ip netns` (CI runs as root); elsewhere these tests are skipped
with the reason.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.crc import key_slot

from .lab import GATEWAYS, REDIS, Lab, available, host_at

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(available() is not None, reason=f"lab: {available()}"),
    pytest.mark.timeout(150),
]
UNDERLYINGS = ["SPY", "QQQ", "AAPL", "TSLA", "NVDA"]
MARKED_DOWN_WITHIN_S = 3.0


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with Lab(tmp_path_factory.mktemp("lab")) as running:
        yield running


def _clean(summary: dict[str, object]) -> None:
    print(summary)
    assert summary["violations"] == [], summary
    assert summary["differ"] == [], summary


def _primaries_by_slot(lab: Lab, ask: str = "redis1") -> dict[tuple[int, int], str]:
    """(first slot, last slot) -> the primary's address, from CLUSTER SLOTS of `ask`."""
    text = lab.redis_cli(ask, "--no-raw", "cluster", "slots")
    # Each range is printed as: 1) (integer) FIRST  2) (integer) LAST  3) 1) "ADDR" ...
    found = re.findall(r'\(integer\) (\d+)\s+\d+\) \(integer\) (\d+)\s+\d+\) 1\) "([\d.]+)"', text)
    return {(int(a), int(b)): ip for a, b, ip in found}


def _owner(lab: Lab, underlying: str, ask: str = "redis1") -> str:
    slot = key_slot(f"of:{{{underlying}}}:chain".encode())
    for (first, last), ip in _primaries_by_slot(lab, ask).items():
        if first <= slot <= last:
            return ip
    raise AssertionError(f"no primary owns slot {slot}")


def test_underlyings_spread_over_shards_and_clients_get_every_update(lab: Lab) -> None:
    """Five underlyings on at least two shards; 20 clients through HAProxy, spread
    over the gateways, apply every update in sequence and end equal to the cache."""
    owners = {u: _owner(lab, u) for u in UNDERLYINGS}
    assert len(set(owners.values())) >= 2, owners
    summary = lab.probe("--clients", "20", "--seconds", "8", "--channels",
                        "chain.SPY,chain.QQQ,chain.NVDA,stats.SPY")  # fmt: skip
    _clean(summary)
    assert summary["snapshots"] == 20 * 4
    assert summary["connections"] == 20
    assert isinstance(summary["updates"], int)
    assert summary["updates"] > 1000
    assert isinstance(summary["nodes"], list)
    assert len(summary["nodes"]) == len(GATEWAYS)


def _marked_down_after(lab: Lab, gateway: str, since: float) -> float:
    end = since + 10
    while time.monotonic() < end:
        if lab.server_states().get(gateway) not in (None, "UP"):
            return time.monotonic() - since
        time.sleep(0.05)
    raise AssertionError(f"HAProxy still had {gateway} up after 10 s: {lab.server_states()}")


def _restart_gateway(lab: Lab, gateway: str) -> None:
    lab.start_gateway(gateway, name=f"{gateway}-again")
    lab.wait_up(gateway)


def test_a_crashed_gateway_host_loses_its_clients_nothing(lab: Lab) -> None:
    """kill -9 of a gateway host: HAProxy marks it down within 3 s; its clients
    reconnect through HAProxy, resume, and see no gap."""
    probe = lab.start_probe(
        "--clients", "30", "--seconds", "9", "--channels", "chain.SPY,chain.QQQ"
    )
    time.sleep(3)
    killed = time.monotonic()
    lab.kill_host("gw1")
    took = _marked_down_after(lab, "gw1", killed)
    assert probe.wait(timeout=60) == 0
    summary = _last_json(lab.workdir / "probe.out")
    _clean(summary)
    assert isinstance(summary["connections"], int)
    assert summary["connections"] > 30
    assert took <= MARKED_DOWN_WITHIN_S, took
    print(f"gw1 killed: marked down after {took:.2f} s; {summary}")
    _restart_gateway(lab, "gw1")


def test_a_gateway_host_cut_off_sends_its_clients_elsewhere(lab: Lab) -> None:
    """A gateway host's link cut: HAProxy marks it down within 3 s and shuts its
    sessions; the clients resume on the other gateways with no gap."""
    probe = lab.start_probe(
        "--clients", "30", "--seconds", "9", "--channels", "chain.SPY,chain.QQQ"
    )
    time.sleep(3)
    cut = time.monotonic()
    lab.link("gw2", up=False)
    try:
        took = _marked_down_after(lab, "gw2", cut)
        assert probe.wait(timeout=60) == 0
    finally:
        lab.link("gw2", up=True)
    summary = _last_json(lab.workdir / "probe.out")
    _clean(summary)
    assert isinstance(summary["connections"], int)
    assert summary["connections"] > 30
    assert took <= MARKED_DOWN_WITHIN_S, took
    print(f"gw2 cut off: marked down after {took:.2f} s; {summary}")


def test_a_redis_failover_under_load_loses_nothing(lab: Lab) -> None:
    """CLUSTER FAILOVER of the shard that holds SPY while clients stream it: every
    client keeps the sequence rule and ends equal to the cache."""
    owner = _owner(lab, "SPY")
    replica = _replica_of(lab, owner)
    probe = lab.start_probe(
        "--clients", "10", "--seconds", "10", "--channels", "chain.SPY,stats.SPY"
    )
    time.sleep(3)
    lab.redis_cli(replica, "cluster", "failover")
    end = time.monotonic() + 15
    while _owner(lab, "SPY") == owner:
        assert time.monotonic() < end, "the replica was not promoted"
        time.sleep(0.2)
    assert probe.wait(timeout=60) == 0
    summary = _last_json(lab.workdir / "probe.out")
    _clean(summary)
    assert isinstance(summary["updates"], int)
    assert summary["updates"] > 100


def test_a_frozen_redis_primary_is_replaced_and_clients_lose_nothing(lab: Lab) -> None:
    """SIGSTOP of the primary that holds SPY while clients stream it, until its replica
    is promoted: no gap, no seq regression, every client ends equal to the cache, and
    SPY's updates reach every client again within 10 s of the promotion."""
    owner = _owner(lab, "SPY")
    frozen = host_at(owner)
    replica = _replica_of(lab, owner)
    probe = lab.start_probe(
        "--clients", "10", "--seconds", "16", "--channels", "chain.SPY,stats.SPY,chain.QQQ"
    )
    time.sleep(3)
    froze = time.time()
    lab.freeze(frozen)
    try:
        end = time.monotonic() + 20
        while _owner(lab, "SPY", ask=replica) == owner:
            assert time.monotonic() < end, "the replica of a frozen primary was not promoted"
            time.sleep(0.1)
        promoted = time.time()
    finally:
        lab.freeze(frozen, frozen=False)
    assert probe.wait(timeout=60) == 0
    summary = _last_json(lab.workdir / "probe.out")
    _clean(summary)
    silences = summary["longest_silence"]
    last = summary["last_update"]
    assert isinstance(silences, dict)
    assert isinstance(last, dict)
    took, ended = silences["chain.SPY"]
    print(f"{frozen} frozen: promoted after {promoted - froze:.2f} s; SPY's longest silence "
          f"{took:.2f} s, ended {ended - promoted:.2f} s after the promotion; {summary}")  # fmt: skip
    assert last["chain.SPY"] > promoted, "a client saw no SPY update after the promotion"
    # One shard's trouble is every gateway's: none leaves HAProxy's rotation, no client is cut.
    assert summary["connections"] == 10, summary
    assert ended - promoted <= 10.0, (ended - promoted, summary)
    _until_cluster_ok(lab, rejoined=frozen)


def _until_cluster_ok(lab: Lab, rejoined: str) -> None:
    """Every node says cluster_state:ok and the woken node serves as a replica."""
    end = time.monotonic() + 30
    while time.monotonic() < end:
        infos = [lab.redis_cli(h, "cluster", "info") for h in REDIS]
        if all("cluster_state:ok" in i for i in infos) and "role:slave" in lab.redis_cli(
            rejoined, "info", "replication"
        ):
            return
        time.sleep(0.2)
    raise AssertionError(f"the cluster did not settle with {rejoined} as a replica")


def _replica_of(lab: Lab, primary_ip: str) -> str:
    """The lab host of a replica of the primary at `primary_ip`."""
    for host in ("redis1", "redis2", "redis3", "redis4", "redis5", "redis6"):
        info = lab.redis_cli(host, "info", "replication")
        if "role:slave" in info and f"master_host:{primary_ip}" in info:
            return host
    raise AssertionError(f"no replica of {primary_ip}")


def _last_json(path: Path) -> dict[str, object]:
    import json

    lines = [line for line in path.read_text().splitlines() if line.strip()]
    assert lines, f"{path} is empty"
    out: dict[str, object] = json.loads(lines[-1])
    return out


def test_a_gateway_host_added_while_running_takes_new_clients(lab: Lab) -> None:
    """A fourth gateway, added to HAProxy at run time, serves new clients at once
    (least connections: it has none) and they see no gap."""
    node = lab.add_gateway()
    lab.wait_up("gw4")
    summary = lab.probe("--clients", "12", "--seconds", "3", "--channels", "chain.SPY")
    _clean(summary)
    assert isinstance(summary["nodes"], list)
    assert node in summary["nodes"], (node, summary["nodes"])
