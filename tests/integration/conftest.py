import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

import kafka_wire

ODRADEK_BIN = Path(os.environ.get("ODRADEK_BIN", "~/.cache/odradek-target/release/odradek")).expanduser()
STARTUP_TIMEOUT = 30
LOG_TAIL_LINES = 80
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accepts_connections(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


class Broker:
    """One odradek process; restart() reuses its port and data dir."""

    def __init__(self, root: Path, extra_args=(), listeners=None):
        self.port = _free_port()
        self.host = "127.0.0.1"
        self.bootstrap = f"{self.host}:{self.port}"
        self.data_dir = root / "data"
        self.log = root / "broker.log"
        self.extra_args = list(extra_args)
        # More listeners, as `listeners(bootstrap)` -> the --listen value; the PLAINTEXT one on
        # `bootstrap` stays first, for wait_serving and for the tests' admin calls.
        self.listen = listeners(self.bootstrap) if listeners else self.bootstrap
        self.proc = None
        self._stopped_on_purpose = False

    def start(self):
        self.start_process()
        self.wait_serving()

    def start_process(self):
        if not ODRADEK_BIN.is_file():
            pytest.fail(f"odradek binary not found at {ODRADEK_BIN} (build it or set ODRADEK_BIN)")
        with open(self.log, "ab") as log:
            log.write(f"===== starting odradek on port {self.port} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [str(ODRADEK_BIN), "serve", "--listen", self.listen, "--data-dir", str(self.data_dir)]
                + self.extra_args,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "NO_COLOR": "1"},  # the log is read as plain text
            )
        self._stopped_on_purpose = False

    def wait_serving(self):
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not _accepts_connections(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"odradek exited with {self.proc.returncode} during startup:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"odradek not accepting connections after {STARTUP_TIMEOUT}s:\n{self.log_tail()}")
            time.sleep(0.05)
        # Accepting is not enough: for a few milliseconds after a previous process on this
        # port exits, its io_uring teardown keeps the old listener accepting.
        kafka_wire.wait_until_serving(self.host, self.port, timeout=STARTUP_TIMEOUT)

    def kill9(self):
        self._stopped_on_purpose = True
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        self._stopped_on_purpose = True
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def restart(self):
        self.stop()
        self.start()

    def died_unexpectedly(self):
        return not self._stopped_on_purpose and self.proc.poll() is not None

    def log_tail(self, lines=LOG_TAIL_LINES):
        try:
            text = ANSI_ESCAPE.sub("", self.log.read_text(errors="replace"))
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _stop_all(brokers, name):
    """Stops every broker; fails the test if one died by itself (it crashed during the test,
    whatever the test saw)."""
    crashed = [b for b in brokers if b.died_unexpectedly()]
    for b in brokers:
        b.stop()
    if crashed:
        pytest.fail(
            "odradek exited unexpectedly during the test: "
            + ", ".join(f"{name(b)} exit code {b.proc.returncode}" for b in crashed)
        )


@pytest.fixture
def broker_factory(request, tmp_path_factory):
    """start(*extra_serve_args) -> a running Broker, stopped at teardown."""
    brokers = []
    request.node.odradek_brokers = brokers

    def start(*extra_args, listeners=None):
        broker = Broker(tmp_path_factory.mktemp("odradek"), extra_args, listeners)
        brokers.append(broker)
        broker.start()
        return broker

    yield start
    _stop_all(brokers, lambda b: f"port {b.port}")


@pytest.fixture
def broker(broker_factory):
    return broker_factory()


class Cluster:
    """Replicated odradek nodes on loopback. Voters run broker + controller; observers are
    broker-only nodes the metadata log is pushed to. Nodes are numbered from 1."""

    def __init__(self, root: Path, voters=3, observers=0, extra_args=(), listeners=None, node_args=None):
        self.nodes = {}
        ids = list(range(1, voters + observers + 1))
        quorum_ports = {n: _free_port() for n in ids}
        voter_list = ",".join(f"{n}@127.0.0.1:{quorum_ports[n]}" for n in ids[:voters])
        observer_list = ",".join(f"{n}@127.0.0.1:{quorum_ports[n]}" for n in ids[voters:])
        for n in ids:
            args = [
                "--node-id", str(n),
                "--controller-listen", f"127.0.0.1:{quorum_ports[n]}",
                "--controller-quorum-voters", voter_list,
                "--cores", "1",
            ]
            if observer_list:
                args += ["--controller-quorum-observers", observer_list]
            if n not in ids[:voters]:
                args += ["--process-roles", "broker"]
            node_root = root / f"node-{n}"
            node_root.mkdir()
            # listeners(bootstrap, controller port) -> the --listen value, as for Broker.
            node_listeners = (lambda b, port=quorum_ports[n]: listeners(b, port)) if listeners else None
            # node_args: {node id: more serve args of that node alone} (its --broker-rack...).
            own = list((node_args or {}).get(n, ()))
            broker = Broker(node_root, args + list(extra_args) + own, node_listeners)
            broker.node_id = n
            self.nodes[n] = broker

    @property
    def bootstrap(self):
        return ",".join(b.bootstrap for b in self.nodes.values())

    def start(self):
        # Every node must be up before any can answer: start them all, then wait.
        for b in self.nodes.values():
            b.start_process()
        for b in self.nodes.values():
            b.wait_serving()

    def running(self):
        return [b for b in self.nodes.values() if b.proc is not None and b.proc.poll() is None]


@pytest.fixture
def cluster_factory(request, tmp_path_factory):
    """start(voters=3, observers=0, *extra_serve_args) -> a running Cluster, stopped at teardown."""
    brokers = []
    request.node.odradek_brokers = brokers

    def start(voters=3, observers=0, extra_args=(), listeners=None, node_args=None):
        cluster = Cluster(tmp_path_factory.mktemp("odradek-cluster"), voters, observers, extra_args, listeners, node_args)
        brokers.extend(cluster.nodes.values())
        cluster.start()
        return cluster

    yield start
    _stop_all(brokers, lambda b: f"node {b.node_id}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        for b in getattr(item, "odradek_brokers", []):
            report.sections.append((f"odradek log tail ({b.log})", b.log_tail()))
    return report
