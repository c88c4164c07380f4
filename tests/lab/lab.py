"""A multi-host deployment on one Linux machine: network namespaces on a bridge.

Each host is a namespace `oflab-{name}` with one interface and one address from
198.18.0.0/24, joined by a bridge that lives in a namespace of its own
(`oflab-sw`), so nothing is added to the machine's own network. There is no default
route: nothing outside the namespaces is ever reachable or addressed.

Hosts: six Redis nodes (a cluster of 3 primaries + 3 replicas, `cluster-node-timeout`
2000), one processor, three gateways, HAProxy in front (lab/haproxy.cfg), and a
client host. `down()` always kills every process of every lab namespace and
deletes the namespaces, whatever state `up()` reached. Needs root and `ip netns`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

PREFIX = "oflab-"
SWITCH = PREFIX + "sw"
NET = "198.18.0"
REDIS = {f"redis{i}": 10 + i for i in range(1, 7)}
PROCESSOR = ("proc", 20)
GATEWAYS = {f"gw{i}": 30 + i for i in range(1, 4)}
SPARE = ("gw4", 34)  # a host with nothing on it until add_gateway()
LB = ("lb", 10)
CLIENT = ("client", 100)
PORT = 8000
ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60.0
UNDERLYINGS = 5  # the simulator's default: SPY, QQQ, AAPL, TSLA, NVDA


def available() -> str | None:
    """None when the lab can run here, else why not."""
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces)"
    for tool in ("ip", "redis-server", "redis-cli", "haproxy"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def host_at(ip: str) -> str:
    """The lab host whose address is `ip`."""
    return next(h for h in (*REDIS, *GATEWAYS, PROCESSOR[0], LB[0], CLIENT[0], SPARE[0])
                if addr(h) == ip)  # fmt: skip


def addr(host: str) -> str:
    """The lab address of `host`."""
    every = {**REDIS, **GATEWAYS, PROCESSOR[0]: PROCESSOR[1], LB[0]: LB[1], CLIENT[0]: CLIENT[1],
             SPARE[0]: SPARE[1]}  # fmt: skip
    return f"{NET}.{every[host]}"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def lab_namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    return [line.split()[0] for line in out.stdout.splitlines() if line.startswith(PREFIX)]


class Lab:
    """The lab's namespaces and processes; a context manager (`with Lab(dir) as lab:`)."""

    def __init__(self, workdir: Path, *, rate: int = 2000, cluster: bool = True) -> None:
        self.workdir = workdir
        self.rate = rate
        self.cluster = cluster
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._host_of: dict[str, str] = {}
        self.redis_url = (
            "redis+cluster://" + ",".join(f"{addr(h)}:6379" for h in list(REDIS)[:3])
            if cluster
            else f"redis://{addr('redis1')}:6379/0"  # one Redis (to compare with the cluster)
        )
        self.url = f"ws://{addr(LB[0])}:{PORT}/ws"
        self.stats_socket = workdir / "haproxy.sock"

    def __enter__(self) -> Lab:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    # -- hosts ---------------------------------------------------------------------

    def _hosts(self) -> list[str]:
        return [*REDIS, PROCESSOR[0], *GATEWAYS, SPARE[0], LB[0], CLIENT[0]]

    def _network(self) -> None:
        _ip("netns", "add", SWITCH)
        _ip("-n", SWITCH, "link", "add", "br0", "type", "bridge")
        _ip("-n", SWITCH, "link", "set", "br0", "up")
        for host in self._hosts():
            ns = PREFIX + host
            _ip("netns", "add", ns)
            _ip("-n", SWITCH, "link", "add", f"v-{host}", "type", "veth", "peer", "name", "eth0",
                "netns", ns)  # fmt: skip
            _ip("-n", SWITCH, "link", "set", f"v-{host}", "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{addr(host)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")

    def link(self, host: str, up: bool) -> None:
        """Connect or cut `host`'s only link (a network partition of that host)."""
        _ip("-n", SWITCH, "link", "set", f"v-{host}", "up" if up else "down")

    def run(
        self, host: str, args: Sequence[str], name: str | None = None
    ) -> subprocess.Popen[bytes]:
        """Start `args` on `host`, its output in the work directory."""
        name = name or host
        log = (self.workdir / f"{name}.log").open("ab")
        p = subprocess.Popen(
            ["ip", "netns", "exec", PREFIX + host, *args],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        log.close()
        self.procs[name] = p
        self._host_of[name] = host
        return p

    def exec(self, host: str, args: Sequence[str], timeout: float = 30.0) -> str:
        """Run `args` on `host` to the end; its standard output."""
        out = subprocess.run(
            ["ip", "netns", "exec", PREFIX + host, *args],
            capture_output=True, text=True, timeout=timeout, cwd=ROOT,
        )  # fmt: skip
        if out.returncode != 0:
            said = (out.stderr.strip() or out.stdout.strip())[-1000:]
            raise RuntimeError(f"{host}: {' '.join(args)}: {said}")
        return out.stdout

    def kill_host(self, host: str) -> None:
        """kill -9 of every process on `host` (a crashed machine)."""
        _kill_namespace(PREFIX + host)
        for name in [n for n, h in self._host_of.items() if h == host]:
            self.procs.pop(name).wait(timeout=10)  # gone on purpose: not a failure

    def redis_cli(self, host: str, *args: str) -> str:
        return self.exec(host, ["redis-cli", "-h", addr(host), "-p", "6379", *args])

    # -- services ------------------------------------------------------------------

    def up(self) -> None:
        why = available()
        if why is not None:
            raise RuntimeError(why)
        self.down()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._network()
        if self.cluster:
            self._redis_cluster()
        else:
            self._redis_single()
        cli = [sys.executable, "-m", "optionsfeed.cli"]
        self.run(PROCESSOR[0], [*cli, "process", "--redis", self.redis_url, "--host",
                                addr(PROCESSOR[0]), "--port", str(PORT), "--rate", str(self.rate)])  # fmt: skip
        for gw in GATEWAYS:
            self.start_gateway(gw)
        self._haproxy()
        self._wait(lambda: self.ready_gateways() == len(GATEWAYS), "HAProxy sees every gateway up")
        self._wait(lambda: len(self.listed()) == UNDERLYINGS, "every underlying has data")

    def listed(self) -> list[str]:
        """The underlyings the gateways list (REST through HAProxy, from the client host)."""
        url = f"http://{addr(LB[0])}:{PORT}/api/v1/underlyings"
        code = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=2).read().decode())"
        try:
            out = self.exec(CLIENT[0], [sys.executable, "-c", code], timeout=10)
        except (RuntimeError, subprocess.TimeoutExpired):
            return []
        return [u["symbol"] for u in json.loads(out)["underlyings"] if u["contracts"] > 0]

    def wait_up(self, gateway: str, timeout_s: float = 30.0) -> None:
        self._wait(lambda: self.server_states().get(gateway) == "UP", f"{gateway} up", timeout_s)

    def start_gateway(self, host: str, name: str | None = None) -> str:
        """`optionsfeed gateway` on `host`; the node name its clients' welcome shows."""
        p = self.run(host, [sys.executable, "-m", "optionsfeed.cli", "gateway", "--redis",
                            self.redis_url, "--host", addr(host), "--port", str(PORT)], name)  # fmt: skip
        # `ip netns exec` execs the command: the gateway keeps this pid.
        return f"{os.uname().nodename}-{p.pid}"

    def add_gateway(self, host: str = SPARE[0]) -> str:
        """Start a gateway on the spare host and add it to HAProxy while running
        (the runtime API: no reload, no dropped connection); its node name."""
        node = self.start_gateway(host)
        self.haproxy(f"add server gateways/{host} {addr(host)}:{PORT} check")
        self.haproxy(f"enable health gateways/{host}")
        self.haproxy(f"enable server gateways/{host}")
        return node

    def _redis_cluster(self) -> None:
        for host in REDIS:
            d = self.workdir / host
            shutil.rmtree(d, ignore_errors=True)  # a node must start empty to join
            d.mkdir()
            self.run(host, ["redis-server", "--bind", addr(host), "--port", "6379",
                            "--protected-mode", "no", "--cluster-enabled", "yes",
                            "--cluster-node-timeout", "2000", "--cluster-config-file",
                            str(d / "nodes.conf"), "--dir", str(d), "--save", "",
                            "--appendonly", "no"])  # fmt: skip
        self._wait(lambda: all(self._pings(h) for h in REDIS), "every Redis node answers")
        nodes = [f"{addr(h)}:6379" for h in REDIS]
        self.exec("redis1", ["redis-cli", "--cluster", "create", *nodes,
                             "--cluster-replicas", "1", "--cluster-yes"], timeout=60)  # fmt: skip
        self._wait(
            lambda: all("cluster_state:ok" in self.redis_cli(h, "cluster", "info") for h in REDIS),
            "the cluster is ok on every node",
        )

    def _redis_single(self) -> None:
        d = self.workdir / "redis1"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
        self.run("redis1", ["redis-server", "--bind", addr("redis1"), "--port", "6379",
                            "--protected-mode", "no", "--dir", str(d), "--save", "",
                            "--appendonly", "no"])  # fmt: skip
        self._wait(lambda: self._pings("redis1"), "Redis answers")

    def pid(self, name: str) -> int:
        """The pid of the lab process `name` (`ip netns exec` execs it: same pid)."""
        return self.procs[name].pid

    def freeze(self, name: str, frozen: bool = True) -> None:
        """SIGSTOP (or SIGCONT) the lab process `name`: a machine that hangs."""
        os.kill(self.pid(name), signal.SIGSTOP if frozen else signal.SIGCONT)

    def http_get(self, host: str, path: str) -> str:
        """GET http://{host}:PORT{path} from the client host; the body."""
        url = f"http://{addr(host)}:{PORT}{path}"
        code = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=5).read().decode())"
        return self.exec(CLIENT[0], [sys.executable, "-c", code], timeout=15)

    def _pings(self, host: str) -> bool:
        try:
            return self.redis_cli(host, "ping").strip() == "PONG"
        except (RuntimeError, subprocess.TimeoutExpired):
            return False

    def _haproxy(self) -> None:
        servers = "".join(f"    server {gw} {addr(gw)}:{PORT} check\n" for gw in GATEWAYS)
        cfg = (ROOT / "lab" / "haproxy.cfg").read_text()
        cfg = cfg.replace("STATS_SOCKET", str(self.stats_socket))
        cfg = cfg.replace("LISTEN", f"{addr(LB[0])}:{PORT}").replace("GATEWAYS\n", servers)
        (self.workdir / "haproxy.cfg").write_text(cfg)
        self.run(LB[0], ["haproxy", "-db", "-f", str(self.workdir / "haproxy.cfg")])

    def haproxy(self, command: str) -> str:
        """A command on HAProxy's runtime API (its unix socket); the answer."""
        import socket

        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.stats_socket))
            s.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def server_states(self) -> dict[str, str]:
        """Gateway -> UP, DOWN, ... as HAProxy sees it."""
        try:
            text = self.haproxy("show stat")
        except OSError:
            return {}
        lines = [line.split(",") for line in text.splitlines() if line and line[0] != "#"]
        known = {*GATEWAYS, SPARE[0]}
        return {f[1]: f[17] for f in lines if f[0] == "gateways" and f[1] in known}

    def ready_gateways(self) -> int:
        return sum(1 for s in self.server_states().values() if s == "UP")

    def _wait(self, done: object, what: str, timeout_s: float = START_TIMEOUT_S) -> None:
        assert callable(done)
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if done():
                return
            for name, p in self.procs.items():
                if p.poll() is not None:
                    log = (self.workdir / f"{name}.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(
                        f"{name} exited ({p.returncode}) while waiting: {what}\n{log}"
                    )
            time.sleep(0.2)
        raise TimeoutError(f"lab: not within {timeout_s:.0f} s: {what}")

    def probe(self, *args: str, timeout: float = 120.0) -> dict[str, object]:
        """Run the probe client (tests/lab/probe.py) on the client host; its summary."""
        out = self.exec(CLIENT[0], [sys.executable, "-m", "tests.lab.probe", "--url", self.url,
                                    *args], timeout=timeout)  # fmt: skip
        summary: dict[str, object] = json.loads(out.strip().splitlines()[-1])
        return summary

    def start_probe(self, *args: str) -> subprocess.Popen[bytes]:
        """The probe client in the background (its summary in probe.out)."""
        out = (self.workdir / "probe.out").open("wb")
        p = subprocess.Popen(
            ["ip", "netns", "exec", PREFIX + CLIENT[0], sys.executable, "-m", "tests.lab.probe",
             "--url", self.url, *args],
            stdout=out, stderr=subprocess.DEVNULL, cwd=ROOT,
        )  # fmt: skip
        out.close()
        return p

    def down(self) -> None:
        """Every lab process killed and every lab namespace deleted (idempotent)."""
        for p in self.procs.values():
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGCONT)  # a frozen process dies only when woken
                p.send_signal(signal.SIGKILL)
        for ns in lab_namespaces():
            _kill_namespace(ns)
        for p in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=10)
        self.procs.clear()
        for ns in lab_namespaces():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def _kill_namespace(ns: str) -> None:
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=10)
    for pid in out.stdout.split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


def main(argv: Sequence[str]) -> int:
    """`python -m tests.lab.lab up|down [DIR]`: start the lab and keep it up, or remove it."""
    what = argv[0] if argv else "up"
    workdir = Path(argv[1] if len(argv) > 1 else "/tmp/optionsfeed-lab")
    lab = Lab(workdir)
    if what == "down":
        lab.down()
        return 0
    with lab:
        print(f"lab up: clients connect to {lab.url} from the client host, e.g.\n"
              f"  ip netns exec {PREFIX}client {sys.executable} -m tests.lab.probe --url {lab.url}\n"
              f"logs in {workdir}; Ctrl-C (or scripts/lab down) removes it", flush=True)  # fmt: skip
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
