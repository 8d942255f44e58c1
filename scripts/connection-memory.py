#!/usr/bin/env python3
"""The broker's memory while it holds connections that each announced a huge frame and sent
only its first bytes (docs/operations.md, "Connections holding large announced frames").

Starts a broker of its own (a temporary data directory, a free loopback port), opens
--connections connections that each send a 4-byte prefix announcing a
socket.request.max.bytes (100 MiB) frame and a request header, holds them, and reads the
broker's VmRSS and VmHWM from /proc. It stops opening connections early once VmRSS passes
--rss-guard-mib, so that a broker that reserves the announced size cannot take the machine:
the figure per connection then says what the full count would have cost.

    target/venv/bin/python scripts/connection-memory.py --bin ~/.cache/odradek-target/release/odradek
"""

import argparse
import os
import resource
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "integration"))
import kafka_wire as wire  # noqa: E402

FRAME_BYTES = 100 * 1024 * 1024  # socket.request.max.bytes, the default and the largest allowed
BATCH = 10


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", default=os.environ.get("ODRADEK_BIN", "~/.cache/odradek-target/release/odradek"))
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--rss-guard-mib", type=int, default=4096, help="stop opening connections above this VmRSS")
    parser.add_argument("--settle-s", type=float, default=2.0, help="wait after the last connection before reading")
    args = parser.parse_args()

    # Each connection is a descriptor here and one in the broker, which inherits this limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.connections + 256:
        sys.exit(f"RLIMIT_NOFILE {hard} is too low for {args.connections} connections")

    binary = Path(args.bin).expanduser()
    with tempfile.TemporaryDirectory(prefix="odradek-conn-mem-") as tmp:
        port = free_port()
        log_path = Path(tmp) / "broker.log"
        with open(log_path, "wb") as log:
            broker = subprocess.Popen(
                [str(binary), "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", f"{tmp}/data",
                 "--cores", str(args.cores)],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, env={**os.environ, "NO_COLOR": "1"},
            )
        try:
            wire.wait_until_serving("127.0.0.1", port, timeout=60)
            bystander = wire.Connection("127.0.0.1", port)
            assert bystander.api_versions_v0()[0] == wire.ERROR_NONE
            time.sleep(0.5)
            baseline_kib = status_kib(broker.pid, "VmRSS")
            prefix = struct.pack(">i", FRAME_BYTES) + wire.request_header(wire.API_PRODUCE, 3, 1)
            held, stopped_early, started = [], None, time.monotonic()

            def guard_passed():
                nonlocal stopped_early
                if broker.poll() is not None:
                    stopped_early = f"the broker exited with {broker.returncode}"
                elif (rss_kib := status_kib(broker.pid, "VmRSS")) > args.rss_guard_mib * 1024:
                    stopped_early = f"VmRSS {rss_kib >> 10} MiB passed the {args.rss_guard_mib} MiB guard"
                return stopped_early is not None

            # In batches, each given a moment to be read: the guard must see a broker that
            # reserves the announced size before it has been sent many more such prefixes.
            while len(held) < args.connections and not guard_passed():
                for _ in range(min(BATCH, args.connections - len(held))):
                    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                    sock.sendall(prefix)
                    held.append(sock)
                time.sleep(0.05)
            opening_s = time.monotonic() - started
            settle_until = time.monotonic() + args.settle_s
            while time.monotonic() < settle_until and not guard_passed():
                time.sleep(0.05)
            alive = broker.poll() is None
            rss_kib = status_kib(broker.pid, "VmRSS") if alive else 0
            hwm_kib = status_kib(broker.pid, "VmHWM") if alive else 0
            try:
                asked = time.monotonic()
                serves = alive and bystander.api_versions_v0()[0] == wire.ERROR_NONE
                serves = f"{serves} (a connection opened before answers in {time.monotonic() - asked:.2f} s)"
            except OSError as e:
                serves = f"False ({e!r} from a connection opened before)"
            grown = (rss_kib - baseline_kib) / 1024
            print(f"binary:             {binary}")
            print(f"connections held:   {len(held)} of {args.connections}, each announcing {FRAME_BYTES >> 20} MiB "
                  f"and sending {len(prefix) - 4} bytes of it (opened in {opening_s:.1f} s)")
            if stopped_early:
                print(f"stopped early:      {stopped_early}")
            print(f"VmRSS before:       {baseline_kib / 1024:.1f} MiB")
            print(f"VmRSS after:        {rss_kib / 1024:.1f} MiB (+{grown:.1f} MiB, "
                  f"{grown * 1024 / max(len(held), 1):.1f} KiB per connection)")
            print(f"VmHWM:              {hwm_kib / 1024:.1f} MiB")
            print(f"still serving:      {serves}")
            for sock in held:
                sock.close()
        finally:
            broker.terminate()
            try:
                broker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                broker.kill()
                broker.wait()


if __name__ == "__main__":
    main()
