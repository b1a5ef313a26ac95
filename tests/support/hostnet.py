"""Hosts on this machine, one network namespace each, for the tests and the bench of many
workers (issue 15).

Host K is the namespace `PREFIXK` with a veth pair to the root namespace: `PREFIXKr` on the
root side (10.231.N.1/30) and `PREFIXKh` inside (10.231.N.2/30), N = 16 * slot + K,
optionally capped with `tc tbf` on the host's egress (its uploads). The slot keeps the
hosts of parallel test processes apart (`for_this_process`: one per xdist worker). Services that listen on 127.0.0.1 in the root
namespace (an S3 server fixture, PostgreSQL on 5432) are reached from a host through a TCP
relay per (host, service) that listens on the root side's veth address and forwards to
127.0.0.1:port: every byte between a host and a service crosses that host's link.

`link(host, up=False)` sets the root side of the host's veth down: a real partition (the
host's packets are lost, its TCP connections stall and resume when the link is back).

A host also gets a hostname of its own (`exec_args` runs the command in a new UTS
namespace named after the host), so journalsync sees each namespace as another machine:
processes on one "host" do not judge the liveness of another's by pid.

Root only. Off CI a missing privilege or `ip netns` that fails skips the test with one
line; under CI=true (root, on this same machine kind) it fails instead.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

PREFIX = "jsh"
SUBNET = "10.231"


def for_this_process() -> tuple[str, int]:
    """(prefix, slot) of this test process's hosts: jsh<n>- and slot n for xdist worker
    gw<n> (jsh0- outside xdist), so tests running side by side never share a name or an
    address."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    slot = int(worker[2:]) if worker[2:].isdigit() else 0
    return f"{PREFIX}{slot}-", slot


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True)


def unavailable_reason() -> str | None:
    """Why hosts cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, veth, tc)"
    for tool in ("ip", "tc", "unshare"):
        if not shutil.which(tool):
            return f"`{tool}` is not installed"
    probe = sh("ip", "netns", "list", check=False)
    if probe.returncode:
        return f"`ip netns` failed: {probe.stderr.strip()[:200]}"
    return None


def require_hosts() -> None:
    """Skip (fail under CI=true) when hosts cannot be made here."""
    import pytest

    reason = unavailable_reason()
    if reason is None:
        return
    message = f"hosts as network namespaces: {reason}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


class Relay:
    """Listens on (address, 0) and pipes each connection to 127.0.0.1:upstream_port.
    Closing it stops accepting and shuts every connection it carries. `silence_at(marker)`:
    the next client message holding `marker` and all that follows it on that connection
    are swallowed (a one-way partition at a chosen moment, e.g. a COMMIT that never
    reaches the server); with `once`, only on the first connection that sends it; with
    `both`, the server's answers to it too (a partition both ways), until `heal()` ends the
    silenced connections as a healed link would (the server has long forgotten them: the
    client's next segment meets a reset)."""

    def __init__(self, address: str, upstream_port: int):
        self.upstream_port = upstream_port
        self._marker: bytes | None = None
        self._once = self._both = self._deliver = False
        self._silenced: set[socket.socket] = set()
        self._listener = socket.create_server((address, 0))
        self.address, self.port = self._listener.getsockname()[:2]
        self._socks: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True,
                                        name=f"relay {address}:{self.port}")
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._socks.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst, src is client),
                                 daemon=True).start()

    def silence_at(self, marker: bytes | None, once: bool = False, both: bool = False,
                   deliver: bool = False) -> None:
        """Swallow from the next client message holding `marker` on (None: no more
        connections silenced; those already silent stay so). `once`: on one connection
        only; later ones (a reconnect) pass. `both`: its answers too. `deliver`: that
        message itself still reaches the server (with `both`: a COMMIT that commits, and
        whose answer is lost)."""
        self._marker, self._once, self._both, self._deliver = marker, once, both, deliver

    def heal(self) -> None:
        """End the silenced connections (each side sees its socket closed)."""
        for sock in list(self._silenced):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _pipe(self, src: socket.socket, dst: socket.socket, upstream: bool = False) -> None:
        try:
            while data := src.recv(1 << 16):
                if not upstream and self._both and dst in self._silenced:
                    continue
                if upstream and (src in self._silenced or self._marker and self._marker in data):
                    first = src not in self._silenced
                    self._silenced.add(src)
                    if self._once:
                        self._marker = None
                    if first and self._deliver:
                        dst.sendall(data)
                    continue
                dst.sendall(data)
        except OSError:
            pass
        finally:
            # A partition both ways hides the server's end of it too, until heal().
            hidden = not upstream and self._both and dst in self._silenced
            for sock in (src,) if hidden else (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            with self._lock:
                for sock in (src, dst):
                    if sock in self._socks:
                        self._socks.discard(sock)
            src.close()

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            socks = list(self._socks)
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@dataclass
class Host:
    index: int
    prefix: str = PREFIX
    slot: int = 0
    relays: dict[int, Relay] = field(default_factory=dict)  # upstream port -> its relay

    @property
    def ns(self) -> str:
        return f"{self.prefix}{self.index}"

    @property
    def root_if(self) -> str:
        return f"{self.ns}r"

    @property
    def host_if(self) -> str:
        return f"{self.ns}h"

    @property
    def root_ip(self) -> str:
        return f"{SUBNET}.{self._net}.1"

    @property
    def ip(self) -> str:
        return f"{SUBNET}.{self._net}.2"

    @property
    def _net(self) -> int:
        return 16 * self.slot + self.index

    def exec_args(self) -> list[str]:
        """The prefix of a command run on this host: its namespace, and a hostname of its
        own (a new UTS namespace; `unshare` execs, so the pid is the command's)."""
        return ["ip", "netns", "exec", self.ns, "unshare", "--uts", "sh", "-c",
                f'hostname {self.ns} && exec "$@"', "sh"]

    def address(self, port: int) -> tuple[str, int]:
        """Where this host reaches the root namespace's 127.0.0.1:port."""
        relay = self.relays[port]
        return relay.address, relay.port

    def url(self, port: int, scheme: str = "http") -> str:
        ip, relayed = self.address(port)
        return f"{scheme}://{ip}:{relayed}"

    def tx_bytes(self) -> int:
        """Bytes the host has sent over its link (its veth's counter, read inside)."""
        out = sh("ip", "netns", "exec", self.ns, "cat",
                 f"/sys/class/net/{self.host_if}/statistics/tx_bytes")
        return int(out.stdout)


def cleanup(prefix: str = PREFIX) -> None:
    """Remove the namespaces named PREFIX<digits> and what runs in them (leftovers of a
    killed test too), and any root-side veth of theirs."""
    for line in sh("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(prefix) and name[len(prefix):].isdigit():
            for pid in sh("ip", "netns", "pids", name, check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            sh("ip", "netns", "del", name, check=False)
    for line in sh("ip", "-o", "link", "show", check=False).stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        if name.startswith(prefix) and name.endswith("r") and name[len(prefix):-1].isdigit():
            sh("ip", "link", "del", name, check=False)


def _make(host: Host, rate: str | None) -> None:
    ns = host.ns
    sh("ip", "netns", "add", ns)
    sh("ip", "link", "add", host.root_if, "type", "veth", "peer", "name", host.host_if)
    sh("ip", "link", "set", host.host_if, "netns", ns)
    sh("ip", "addr", "add", f"{host.root_ip}/30", "dev", host.root_if)
    sh("ip", "link", "set", host.root_if, "up")
    sh("ip", "-n", ns, "addr", "add", f"{host.ip}/30", "dev", host.host_if)
    sh("ip", "-n", ns, "link", "set", host.host_if, "up")
    sh("ip", "-n", ns, "link", "set", "lo", "up")
    if rate:
        # The host's uplink (what it uploads). A burst of 256 KiB is enough for tbf to let
        # a veth's GSO segments through at this rate.
        sh("tc", "-n", ns, "qdisc", "add", "dev", host.host_if, "root", "tbf", "rate", rate,
           "burst", "256kb", "latency", "100ms")


def link(host: Host, up: bool) -> None:
    """Set the root side of the host's veth up or down: down is a partition."""
    sh("ip", "link", "set", host.root_if, "up" if up else "down")


@contextmanager
def hosts(count: int, services: list[int], rate: str | None = None,
          prefix: str = PREFIX, slot: int = 0) -> Iterator[list[Host]]:
    """`count` hosts (PREFIX1..PREFIXcount), each with a relay to every port of
    `services` (127.0.0.1 ports of the root namespace), and its egress capped at `rate`
    (tc syntax, e.g. 50mbit); at most 15 hosts a slot (0-15). Stale namespaces of the prefix are removed first; these are
    removed afterwards, whatever happened."""
    assert 0 < count < 16 and 0 <= slot < 16, (count, slot)
    cleanup(prefix)
    made: list[Host] = []
    try:
        for index in range(1, count + 1):
            host = Host(index, prefix, slot)
            made.append(host)
            _make(host, rate)
            for port in services:
                host.relays[port] = Relay(host.root_ip, port)
        yield made
    finally:
        for host in made:
            for relay in host.relays.values():
                relay.close()
        cleanup(prefix)
