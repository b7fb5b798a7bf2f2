"""Benchmark: `meshgen build` of synthetic meshes against a plain CSafeLoader load of the file.

    python bench/compile.py                      # 100, 1,000 and 10,000 services
    python bench/compile.py --sizes 1000 --profile   # where the time goes, per module
    python bench/compile.py --sizes 10000 --baseline ../old-checkout --rounds 5   # A/B

Each synthetic service has 3-5 static endpoints (labelled v1/v2, two zones), an HTTP health
check, retries, mutual TLS with certificate files this script creates, two subsets and two
weighted routes. Build and load each run in a fresh subprocess (so neither inherits the
other's heap); peak memory is that subprocess's max RSS. Results go to BENCHMARKS.md by hand.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import random
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_certs(folder: Path) -> None:
    """A CA and one workload certificate + key: enough for every service's TLS block."""
    import trustme

    folder.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    leaf.cert_chain_pems[0].write_to_path(str(folder / "client.pem"))
    leaf.private_key_pem.write_to_path(str(folder / "client-key.pem"))
    (folder / "client-key.pem").chmod(0o600)
    (folder / "client.pem.key").symlink_to("client-key.pem")  # where HAProxy looks for the key


def make_spec(n: int, seed: int = 1) -> str:
    """mesh.yaml text for ``n`` services (written by hand: the point is to time the reader)."""
    rng = random.Random(seed)
    out = [
        "version: 1",
        "mesh: {name: bench, domain: mesh.test}",
        "defaults:",
        "  tls: {mode: mutual, ca: certs/ca.pem, min_version: '1.2'}",
        "services:",
    ]
    for i in range(n):
        name = f"svc-{i}"
        out += [f"  {name}:", "    discovery:", "      static:"]
        for e in range(rng.randint(3, 5)):
            port = 10000 + (i * 5 + e) % 50000
            version = "v1" if e % 2 == 0 else "v2"
            zone = "a" if e < 2 else "b"
            address = f"10.{i // 250 % 250}.{i % 250}.{e + 1}:{port}"
            out.append(
                f"        - {{address: {address}, weight: {rng.randint(1, 10)},"
                f" zone: {zone}, labels: {{version: {version}}}}}"
            )
        out += [
            "    subsets:",
            "      v1: {labels: {version: v1}}",
            "      v2: {labels: {version: v2}}",
            "    health_check:",
            "      http: {path: /healthz, expected_statuses: [200, 204]}",
            "      interval: 5s",
            "      timeout: 1s",
            "    retries:",
            f"      attempts: {rng.randint(1, 3)}",
            "      per_try_timeout: 2s",
            "      on: [connect-failure, reset, 5xx]",
            "    tls:",
            "      cert: certs/client.pem",
            "      key: certs/client-key.pem",
            f"      sni: {name}.mesh.test",
            f"      subject_alt_names: [spiffe://bench/{name}]",
        ]
    out.append("routes:")
    for i in range(n):
        name = f"svc-{i}"
        for r, path in enumerate(("/api/", "/")):
            w = rng.randint(1, 99)
            out += [
                f"  - name: {name}-{r}",
                f"    match: {{host: {name}.mesh.test, path_prefix: {path}}}",
                "    to:",
                f"      - {{service: {name}, subset: v1, weight: {w}}}",
                f"      - {{service: {name}, subset: v2, weight: {100 - w}}}",
            ]
    out.append("admin: 127.0.0.1:15000")
    return "\n".join(out) + "\n"


LOAD_SNIPPET = """
import gc, sys, time, yaml
if sys.argv[2] == "nogc":
    gc.disable()
t = time.perf_counter()
with open(sys.argv[1], "rb") as f:
    yaml.load(f, Loader=yaml.CSafeLoader)
print(time.perf_counter() - t)
"""


@dataclass(frozen=True)
class Run:
    """One measured subprocess: wall and CPU (user + system) seconds, peak RSS, stdout."""

    wall: float
    cpu: float
    peak_mib: float
    out: str


def run_measured(argv: list[str], cwd: Path = ROOT) -> Run:
    """Run ``argv`` in ``cwd`` (whose meshgen ``-m meshgen`` imports); exits if it fails."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(
                f"{argv[:4]} failed ({proc.returncode}):\n{err.read().decode()[-3000:]}"
            )
        cpu = usage.ru_utime + usage.ru_stime
        return Run(wall, cpu, usage.ru_maxrss / 1024, out.read().decode())


def bench(n: int, work: Path) -> dict[str, float]:
    folder = work / f"n{n}"
    folder.mkdir()
    make_certs(folder / "certs")
    spec = folder / "mesh.yaml"
    spec.write_text(make_spec(n))
    result = {"n": n, "mib": spec.stat().st_size / 2**20}
    build_argv = [sys.executable, "-m", "meshgen", "build", str(spec), "-o", str(folder / "dist")]
    load = [sys.executable, "-c", LOAD_SNIPPET, str(spec)]
    result["load_nogc_s"] = float(run_measured([*load, "nogc"]).out)
    loaded = run_measured([*load, "gc"])
    result["load_peak_mib"], result["load_s"] = loaded.peak_mib, float(loaded.out)
    built = run_measured(build_argv)
    result["build_s"], result["build_peak_mib"] = built.wall, built.peak_mib
    result["dist_mib"] = (
        sum(p.stat().st_size for p in (folder / "dist").rglob("*") if p.is_file()) / 2**20
    )
    return result


def against(n: int, baseline: Path, rounds: int, work: Path) -> None:
    """A/B: this checkout's build and ``baseline``'s, alternating, with a CSafeLoader load in
    every round; CPU seconds (user + system of the subprocess) are what a busy machine
    disturbs least, so each build is also shown as a ratio to that round's load CPU."""
    folder = work / f"ab{n}"
    folder.mkdir()
    make_certs(folder / "certs")
    spec = folder / "mesh.yaml"
    spec.write_text(make_spec(n))
    print(f"A/B at {n:,} services: baseline {baseline} vs this checkout {ROOT}")
    print("round | load cpu s | baseline wall s | baseline cpu s | this wall s | this cpu s | "
          "baseline/load cpu | this/load cpu | this/baseline cpu | load avg")  # fmt: skip
    mine: list[float] = []
    theirs: list[float] = []
    for number in range(1, rounds + 1):
        load = run_measured([sys.executable, "-c", LOAD_SNIPPET, str(spec), "gc"])
        runs = {}
        order = (
            (("base", baseline), ("this", ROOT))
            if number % 2
            else (("this", ROOT), ("base", baseline))
        )
        for side, root in order:
            argv = [sys.executable, "-m", "meshgen", "build", str(spec), "-o", str(folder / side)]
            runs[side] = run_measured(argv, cwd=root)
        base, this = runs["base"], runs["this"]
        theirs.append(base.cpu / load.cpu)
        mine.append(this.cpu / load.cpu)
        print(
            f"{number} | {load.cpu:.2f} | {base.wall:.2f} | {base.cpu:.2f} | {this.wall:.2f} | "
            f"{this.cpu:.2f} | {base.cpu / load.cpu:.2f}x | {this.cpu / load.cpu:.2f}x | "
            f"{this.cpu / base.cpu:.3f} | {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    median = sorted(mine)[len(mine) // 2], sorted(theirs)[len(theirs) // 2]
    print(f"median build/load CPU: this {median[0]:.2f}x, baseline {median[1]:.2f}x")


def profile(n: int, work: Path) -> None:
    """cProfile of one in-process build; prints the top functions and time per module."""
    from meshgen.cli import main

    folder = work / f"profile{n}"
    folder.mkdir()
    make_certs(folder / "certs")
    spec = folder / "mesh.yaml"
    spec.write_text(make_spec(n))
    prof = cProfile.Profile()
    prof.enable()
    code = main(["build", str(spec), "-o", str(folder / "dist")])
    prof.disable()
    stats = pstats.Stats(prof, stream=io.StringIO())
    per_module: dict[str, float] = defaultdict(float)
    for (filename, _line, _func), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        key = filename
        for marker in ("/meshgen/", "/site-packages/", "/lib/python3"):
            if marker in filename:
                key = filename.split(marker, 1)[1]
                key = key if marker == "/meshgen/" else key.split("/")[0]
                key = f"meshgen/{key}" if marker == "/meshgen/" else key
                break
        per_module[key] += tottime
    total = sum(per_module.values())
    print(f"profile of meshgen build, {n} services (exit {code}), {total:.2f}s own time:")
    for key, seconds in sorted(per_module.items(), key=lambda kv: -kv[1])[:15]:
        print(f"  {seconds:7.2f}s {100 * seconds / total:5.1f}%  {key}")
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(20)
    print(out.getvalue())


def stage_times(n: int, work: Path) -> None:
    """Wall time of each pipeline stage and target, in-process, for one build of ``n`` services."""
    from meshgen.pipeline import collector_paused

    folder = work / f"stages{n}"
    folder.mkdir()
    make_certs(folder / "certs")
    spec = folder / "mesh.yaml"
    spec.write_text(make_spec(n))
    with collector_paused():  # as `meshgen build` runs
        rows = _timed_stages(spec, folder)
    total = sum(s for _, s in rows)
    print(f"stages of one in-process build, {n:,} services: {total:.2f}s")
    for name, seconds in rows:
        print(f"  {seconds:7.2f}s {100 * seconds / total:5.1f}%  {name}")


def _timed_stages(spec: Path, folder: Path) -> list[tuple[str, float]]:
    from meshgen import __version__, checks, lower, plan, schema, source, targets
    from meshgen.emit import MANIFEST, emit, manifest_text
    from meshgen.targets import gaps

    clock = time.perf_counter
    rows: list[tuple[str, float]] = []
    t = clock()
    doc, _ = source.load(spec)
    rows.append(("source.load (H1)", clock() - t))
    assert doc is not None
    t = clock()
    schema.validate(doc)
    rows.append(("schema.validate (H1)", clock() - t))
    t = clock()
    mesh, _ = lower.lower(doc)
    rows.append(("lower.lower (H2)", clock() - t))
    assert mesh is not None
    t = clock()
    checks.run_all(mesh, doc)
    rows.append(("checks.run_all (H2)", clock() - t))
    t = clock()
    tables = plan.to_tables(mesh)
    rows.append(("plan.to_tables (H2)", clock() - t))
    ctx = targets.make_context(spec.name, __version__)
    files: dict[str, str] = {}
    for target in targets.registered():
        t = clock()
        for render in target.renders:
            files.update(render(tables, ctx))
        if target.gaps is not None:
            found = gaps.located(target.gaps(tables), mesh, doc)
            files[f"{target.name}/GAPS.txt"] = gaps.gaps_text(ctx.header, target.engine, found)
        rows.append((f"targets.{target.name}", clock() - t))
    files[MANIFEST] = manifest_text(files, spec.name, doc.text.encode(), __version__)
    t = clock()
    emit(files, folder / "dist")
    rows.append(("emit (write + verify + swap) (H3)", clock() - t))
    return rows


def version_startup(runs: int = 20) -> float:
    """Median wall time of `python -m meshgen --version` (ms)."""
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "meshgen", "--version"],
            check=True,
            stdout=subprocess.DEVNULL,
            cwd=ROOT,
        )
        times.append(time.perf_counter() - t)
    return 1000 * sorted(times)[runs // 2]


def version_baseline(runs: int = 20) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.perf_counter() - t)
    return 1000 * sorted(times)[runs // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--profile", action="store_true", help="profile instead of timing")
    parser.add_argument("--stages", action="store_true", help="time each stage in-process")
    parser.add_argument(
        "--baseline", type=Path, metavar="CHECKOUT", help="A/B against another checkout's build"
    )
    parser.add_argument("--rounds", type=int, default=5, help="A/B rounds (default 5)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="meshgen-bench-") as tmp:
        if args.baseline is not None:
            for n in sizes:
                against(n, args.baseline.resolve(), args.rounds, Path(tmp))
            return 0
        if args.profile or args.stages:
            sys.path.insert(0, str(ROOT))  # this checkout's meshgen, as the subprocess builds
            for n in sizes:
                (profile if args.profile else stage_times)(n, Path(tmp))
            return 0
        print(f"python {sys.version.split()[0]} on {os.cpu_count()} cpu(s)")
        print(
            f"meshgen --version: {version_startup():.0f} ms median "
            f"(python -c pass: {version_baseline():.0f} ms)"
        )
        header = (
            "services",
            "spec MiB",
            "build s",
            "load s",
            "load nogc s",
            "build/load",
            "build/nogc",
            "build peak MiB",
            "load peak MiB",
            "dist MiB",
            "ms/service",
        )
        print(" | ".join(header))
        for n in sizes:
            r = bench(n, Path(tmp))
            print(
                " | ".join(
                    [
                        f"{n:,}",
                        f"{r['mib']:.1f}",
                        f"{r['build_s']:.2f}",
                        f"{r['load_s']:.2f}",
                        f"{r['load_nogc_s']:.2f}",
                        f"{r['build_s'] / r['load_s']:.2f}x",
                        f"{r['build_s'] / r['load_nogc_s']:.2f}x",
                        f"{r['build_peak_mib']:.0f}",
                        f"{r['load_peak_mib']:.0f}",
                        f"{r['dist_mib']:.1f}",
                        f"{1000 * r['build_s'] / n:.2f}",
                    ]
                ),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
