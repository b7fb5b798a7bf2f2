"""Where a proxy's event loop spends its time under bench/latency.py's load, one wake-up at a time.

Usage: ``python bench/loop_passes.py [--setup compiled pure haproxy] [--duration 20]``. Needs
``perf`` (Debian linux-perf) with the right to trace syscalls (root, or
``kernel.perf_event_paranoid`` <= 1), haproxy and nginx-light, as bench/latency.py.

Why: an added p99 is the sum of everything that delays a request, and on a shared machine most
of it is other processes. This measures the proxy alone: each setup (the same DIST and nginx as
bench/latency.py, pinned the same way) serves the same open-loop stream (``--rate`` req/s over
``--connections`` keep-alive connections) while ``perf record -e raw_syscalls:*`` traces its
syscalls. A *pass* runs from one ``epoll_wait`` returning to the next one entered: the loop is
blocked for that long, and whatever arrives meanwhile waits. Printed per setup: wake-ups per
request, pass lengths (all, and split at the pass's first write), passes by how many events
woke them, the passes woken by a timer alone (work that is not a request's: the alert
evaluator, lazy timers, sweeps), every syscall besides the per-request ones, the longest passes,
and, for meshgen's runtimes, the cyclic collector's collections during the run (counted in the
runtime process by a ``gc.callbacks`` hook that a ``sitecustomize`` on its PYTHONPATH installs).
Pass lengths include the time the pass was preempted, if it was: compare setups in one run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency import open_loop
from proxy import Stage, process, stage, wait_answering
from runtime_harness import run_dist

from meshgen.resources import runtime_dir
from meshgen.runtime.accelerate import build

WAITS = {232: "epoll_wait", 281: "epoll_pwait"}
WRITES = {1: "write", 44: "sendto"}
PER_REQUEST = {0: "read", 45: "recvfrom", **WRITES, **WAITS}
NAMES = {3: "close", 9: "mmap", 11: "munmap", 12: "brk", 15: "rt_sigreturn", 28: "madvise",
         39: "getpid", 41: "socket", 42: "connect", 51: "getsockname", 52: "getpeername",
         54: "setsockopt", 55: "getsockopt", 72: "fcntl", 223: "timer_settime",
         228: "clock_gettime", 233: "epoll_ctl", 288: "accept4", 426: "io_uring_enter"}  # fmt: skip
ALL_NAMES = {**NAMES, **PER_REQUEST}

GC_HOOK = '''"""loop_passes.py: cyclic collections, to $LOOP_PASSES_GC.PID at exit."""
import atexit, gc, json, os, time
_out, _begun, _runs = os.environ.get("LOOP_PASSES_GC"), [0.0], []
def _hook(phase, info):
    if phase == "start":
        _begun[0] = time.perf_counter()
    else:
        _runs.append((_begun[0], time.perf_counter() - _begun[0], info["generation"]))
def _dump():
    with open(f"{_out}.{os.getpid()}", "w") as f:
        json.dump(_runs, f)
if _out:
    gc.callbacks.append(_hook)
    atexit.register(_dump)
'''


@dataclass
class Pass:
    """One wake-up: ``epoll_wait`` returned ``events`` at ``start`` (seconds, CLOCK_MONOTONIC)."""

    start: float
    events: int
    end: float = 0.0
    first_write: tuple[float, float] | None = None  # (enter, exit) of the pass's first write
    syscalls: Counter[int] = field(default_factory=Counter)

    @property
    def length_us(self) -> float:
        return (self.end - self.start) * 1e6


def passes(perf_data: Path, pid: int) -> list[Pass]:
    """The passes of thread ``pid`` in a ``perf record -e raw_syscalls:*`` file."""
    script = ["perf", "script", "-i", str(perf_data), "-F", "tid,time,event,trace"]
    text = subprocess.run(script, check=True, capture_output=True, text=True).stdout
    out: list[Pass] = []
    current: Pass | None = None
    write_enter = 0.0
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5 or fields[0] != str(pid) or not fields[2].startswith("raw_syscalls"):
            continue
        at, entering, nr = float(fields[1].rstrip(":")), "sys_enter" in fields[2], int(fields[4])
        if nr in WAITS:
            if entering and current is not None:
                current.end = at
                out.append(current)
                current = None
            elif not entering:
                current = Pass(at, int(fields[-1]))
        elif current is not None:
            if entering:
                current.syscalls[nr] += 1
                write_enter = at
            elif nr in WRITES and current.first_write is None:
                current.first_write = (write_enter, at)
    return out


def quantiles(values: list[float]) -> str:
    """p50 / p90 / p99 / p99.9 / max of ``values``."""
    v = sorted(values)
    if not v:
        return "none"
    at = [v[min(len(v) - 1, int(q * len(v)))] for q in (0.5, 0.9, 0.99, 0.999)]
    return " / ".join(f"{x:.0f}" for x in (*at, v[-1]))


def report(name: str, found: list[Pass], requests: int, gc_runs: list[list[float]]) -> None:
    """Print what ``found`` (one setup's passes) says; lengths in us."""
    print(f"\n== {name}: {len(found)} passes, {len(found) / requests:.2f} per request")
    print(f"pass length (p50 / p90 / p99 / p99.9 / max): {quantiles([p.length_us for p in found])}")
    to_write, after = [], []
    for p in found:
        if p.events == 1 and p.first_write is not None:
            to_write.append((p.first_write[0] - p.start) * 1e6)
            after.append((p.end - p.first_write[1]) * 1e6)
    print(f"  one event, wake-up to its first write: {quantiles(to_write)}")
    print(f"  one event, that write's end to the next wait: {quantiles(after)}")
    for events, count in sorted(Counter(p.events for p in found).items()):
        lengths = [p.length_us for p in found if p.events == events]
        share = 100 * count / len(found)
        print(f"  {events} events: {count} passes ({share:.2f} %), length {quantiles(lengths)}")
    timers = [p.length_us for p in found if p.events == 0]
    print(f"woken by a timer alone: {len(timers)}, length {quantiles(timers)}")
    others = Counter[int]()
    for p in found:
        others.update({nr: n for nr, n in p.syscalls.items() if nr not in PER_REQUEST})
    shown = ", ".join(f"{ALL_NAMES.get(nr, nr)} {n}" for nr, n in others.most_common())
    print(f"syscalls besides reads, writes and waits: {shown or 'none'}")
    for p in sorted(found, key=lambda p: p.length_us)[-5:]:
        calls = ", ".join(f"{ALL_NAMES.get(nr, nr)} {n}" for nr, n in p.syscalls.items())
        print(f"  longest: {p.length_us:.0f} at +{p.start - found[0].start:.3f} s, "
              f"{p.events} events, syscalls: {calls}")  # fmt: skip
    if name == "haproxy":
        return
    per_gen = dict(Counter(int(gen) for _, _, gen in gc_runs))
    longest = max((1e6 * took for _, took, _ in gc_runs), default=0.0)
    print(f"cyclic GC collections during the run: {per_gen or 'none'}, the longest {longest:.0f}")


@contextlib.contextmanager
def serving(setup: str, staged: Stage, folder: Path) -> Iterator[tuple[int, int]]:
    """(pid, port) of ``setup`` running on CPU 0 and answering."""
    if setup == "haproxy":
        cmd = ["taskset", "-c", "0", "haproxy", "-db", "-f", str(folder / "haproxy.cfg")]
        with process(cmd, folder / "ha.log", staged.haproxy_sock) as proc:
            wait_answering(staged.haproxy_port)
            yield proc.pid, staged.haproxy_port
        return
    with run_dist(staged.dist, runtime=setup) as runtime:
        pid = runtime.proc.pid
        subprocess.run(["taskset", "-acp", "0", str(pid)], check=True, capture_output=True)
        wait_answering(runtime.port)
        yield pid, runtime.port


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--setup", nargs="+", default=["compiled", "pure", "haproxy"],
                    choices=["compiled", "pure", "haproxy"])  # fmt: skip
    ap.add_argument("--rate", type=float, default=1000.0, help="requests per second")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds traced per setup")
    ap.add_argument("--connections", type=int, default=8)
    args = ap.parse_args()
    os.sched_setaffinity(0, {1})  # as bench/latency.py: the generator shares CPU 1 with nginx
    print(f"compiled runtime: {build(runtime_dir())}", flush=True)
    with tempfile.TemporaryDirectory(prefix="meshgen-passes-") as tmp:
        d = Path(tmp)
        (d / "gc-hook").mkdir()
        (d / "gc-hook" / "sitecustomize.py").write_text(GC_HOOK)
        # the runtimes inherit this environment (run_dist): the hook is their sitecustomize
        path = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join([str(d / "gc-hook"), *filter(None, [path])])
        os.environ["LOOP_PASSES_GC"] = str(d / "gc")
        staged = stage(d)
        nginx_cmd = ["taskset", "-c", "1", "nginx", "-c", str(d / "nginx.conf")]
        with process(nginx_cmd, d / "nginx.log", staged.nginx_sock, staged.nginx_env()):
            wait_answering(staged.nginx_port)
            for setup in args.setup:
                perf_data = d / f"perf-{setup}.data"
                with serving(setup, staged, d) as (pid, port):
                    uvloop.run(open_loop(port, args.rate, 1.0, args.connections))  # warm-up
                    record = ["perf", "record", "-e", "raw_syscalls:sys_enter", "-e",
                              "raw_syscalls:sys_exit", "-k", "CLOCK_MONOTONIC", "-o",
                              str(perf_data), "-p", str(pid)]  # fmt: skip
                    perf = subprocess.Popen(record, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL)  # fmt: skip
                    time.sleep(1.0)  # perf attaches
                    begun = time.perf_counter()
                    uvloop.run(open_loop(port, args.rate, args.duration, args.connections))
                    ended = time.perf_counter()
                    perf.send_signal(signal.SIGINT)
                    perf.wait()
                gc_file = d / f"gc.{pid}"  # written as the runtime exited
                gc_runs = json.loads(gc_file.read_text()) if gc_file.exists() else []
                during = [run for run in gc_runs if begun <= run[0] <= ended]
                found = passes(perf_data, pid)
                report(setup, found, int(args.rate * args.duration), during)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
