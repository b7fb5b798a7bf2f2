"""Benchmark: `meshgen build` of synthetic meshes against a plain CSafeLoader load of the file.

    python bench/compile.py                      # validate, and build of 10,000 services
    python bench/compile.py --sizes 1000,10000 --rounds 5 --target runtime
    python bench/compile.py --sizes 1000 --profile   # where the time goes, per module
    python bench/compile.py --sizes 10000 --stages   # CPU time of each stage, in-process
    python bench/compile.py --sizes 10000 --baseline ../main   # A/B of two checkouts' builds

Each synthetic service has 3-5 static endpoints (labelled v1/v2, two zones), an HTTP health
check, retries, mutual TLS with certificate files this script creates, two subsets and two
weighted routes. Build and load each run as a whole process (start-up included, so neither
inherits the other's heap), in alternating rounds after one warm-up run of each, and the ratios
are medians of each round's ratio: on a shared machine every command of a round sees the same
load. CPU time (user + system, from wait4) is printed beside wall time: it is what other jobs
disturb least. `meshgen validate` of the quickstart example is timed the same way next to
`python -c pass`. Peak memory is each process's max RSS. Results go to BENCHMARKS.md by hand.
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
from statistics import median

ROOT = Path(__file__).resolve().parents[1]


def make_certs(folder: Path) -> None:
    """A CA and one workload certificate + key: enough for every service's TLS block; the key
    is also linked as ``client.pem.key`` where HAProxy looks for it (as ``meshgen certs`` does),
    so the build warns about nothing (10,000 W508 warnings cost ~1 s of printing)."""
    import trustme

    folder.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    leaf.cert_chain_pems[0].write_to_path(str(folder / "client.pem"))
    leaf.private_key_pem.write_to_path(str(folder / "client-key.pem"))
    (folder / "client-key.pem").chmod(0o600)
    (folder / "client.pem.key").symlink_to("client-key.pem")


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
import gc, sys, yaml
if sys.argv[2] == "nogc":
    gc.disable()
with open(sys.argv[1], "rb") as f:
    yaml.load(f, Loader=yaml.CSafeLoader)
"""

ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
"""Bytecode caches on, as for an installed meshgen (a warm-up run writes them)."""


@dataclass(frozen=True)
class Run:
    """One measured subprocess: wall and CPU (user + system) seconds, peak RSS."""

    wall: float
    cpu: float
    peak_mib: float


def run_measured(argv: list[str], cwd: Path = ROOT) -> Run:
    """Run ``argv`` in ``cwd`` (whose meshgen ``-m meshgen`` imports); exits if it fails."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, cwd=cwd, env=ENV)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            err.seek(0)
            raise SystemExit(f"{argv[:4]} failed ({code}):\n{err.read().decode()[-3000:]}")
        return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


Command = tuple[list[str], Path]
"""argv and the folder it runs in (whose meshgen ``-m meshgen`` imports)."""


def rounds(commands: dict[str, Command], count: int) -> dict[str, list[Run]]:
    """``count`` rounds of every command in turn, after one warm-up run of each (not counted):
    a machine whose load changes disturbs every command of a round alike."""
    for argv, cwd in commands.values():
        run_measured(argv, cwd)
    runs: dict[str, list[Run]] = {name: [] for name in commands}
    for _ in range(count):
        for name, (argv, cwd) in commands.items():
            runs[name].append(run_measured(argv, cwd))
    return runs


def ratio(runs: dict[str, list[Run]], top: str, bottom: str, cpu: bool = False) -> float:
    """Median over rounds of ``top``'s time / ``bottom``'s time in the same round."""
    pairs = zip(runs[top], runs[bottom], strict=True)
    return median((a.cpu / b.cpu) if cpu else (a.wall / b.wall) for a, b in pairs)


def bench_validate(count: int, baseline: Path | None = None) -> None:
    """`meshgen validate` of the quickstart example next to `python -c pass` (and next to
    ``baseline``'s validate of the same file)."""
    spec = str(ROOT / "examples" / "quickstart" / "mesh.yaml")
    validate = [sys.executable, "-m", "meshgen", "validate", spec]
    commands = {"python -c pass": ([sys.executable, "-c", "pass"], ROOT)}
    if baseline is not None:
        commands["baseline validate"] = (validate, baseline)
    commands["meshgen validate"] = (validate, ROOT)
    runs = rounds(commands, count)
    print(f"validate of examples/quickstart/mesh.yaml, {count} alternating rounds (medians):")
    for name, got in runs.items():
        wall = median(r.wall for r in got) * 1000
        cpu = median(r.cpu for r in got) * 1000
        fastest = min(r.wall for r in got) * 1000
        print(f"  {name:18} {wall:6.0f} ms wall {cpu:6.0f} ms CPU (fastest {fastest:.0f} ms)")


def bench_build(n: int, work: Path, count: int, extra: list[str]) -> None:
    """`meshgen build` of ``n`` services next to a CSafeLoader load of the same file."""
    folder = work / f"n{n}"
    folder.mkdir()
    make_certs(folder / "certs")
    spec = folder / "mesh.yaml"
    spec.write_text(make_spec(n))
    dist = folder / "dist"
    load = [sys.executable, "-c", LOAD_SNIPPET, str(spec)]
    build = [sys.executable, "-m", "meshgen", "build", str(spec), "-o", str(dist), *extra]
    commands = {"load": [*load, "gc"], "load nogc": [*load, "nogc"], "build": build}
    runs = rounds({name: (argv, ROOT) for name, argv in commands.items()}, count)
    dist_mib = sum(p.stat().st_size for p in dist.rglob("*") if p.is_file()) / 2**20
    print(
        f"{n:,} services (spec {spec.stat().st_size / 2**20:.1f} MiB, DIST {dist_mib:.1f} MiB), "
        f"{count} alternating rounds:"
    )
    print("  round | load s (CPU) | load nogc s (CPU) | build s (CPU) | build/load | build/nogc")
    for i, (a, b, c) in enumerate(zip(runs["load"], runs["load nogc"], runs["build"], strict=True)):
        print(
            f"  {i + 1} | {a.wall:.2f} ({a.cpu:.2f}) | {b.wall:.2f} ({b.cpu:.2f}) | "
            f"{c.wall:.2f} ({c.cpu:.2f}) | {c.wall / a.wall:.2f}x | {c.wall / b.wall:.2f}x"
        )
    peaks = {name: max(r.peak_mib for r in got) for name, got in runs.items()}
    print(
        f"  medians: build/load {ratio(runs, 'build', 'load'):.2f}x wall, "
        f"{ratio(runs, 'build', 'load', cpu=True):.2f}x CPU; build/nogc "
        f"{ratio(runs, 'build', 'load nogc'):.2f}x wall, "
        f"{ratio(runs, 'build', 'load nogc', cpu=True):.2f}x CPU; peak MiB build "
        f"{peaks['build']:.0f}, load {peaks['load']:.0f}",
        flush=True,
    )


def against(n: int, baseline: Path, rounds: int, work: Path) -> None:
    """A/B: this checkout's build and ``baseline``'s, alternating, with a CSafeLoader load in
    every round, each build shown as a ratio to that round's load in wall and in CPU seconds
    (user + system of the subprocess and its children, what a busy machine disturbs least;
    a large build forks a child, so its CPU can exceed its wall time)."""
    folder = work / f"ab{n}"
    folder.mkdir()
    make_certs(folder / "certs")
    spec = folder / "mesh.yaml"
    spec.write_text(make_spec(n))
    print(f"A/B at {n:,} services: baseline {baseline} vs this checkout {ROOT}")
    print("round | load wall s (cpu) | baseline wall s (cpu) | this wall s (cpu) | baseline/load "
          "wall, cpu | this/load wall, cpu | this/baseline cpu | load avg")  # fmt: skip
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
            f"{number} | {load.wall:.2f} ({load.cpu:.2f}) | {base.wall:.2f} ({base.cpu:.2f}) | "
            f"{this.wall:.2f} ({this.cpu:.2f}) | {base.wall / load.wall:.2f}x, "
            f"{base.cpu / load.cpu:.2f}x | {this.wall / load.wall:.2f}x, "
            f"{this.cpu / load.cpu:.2f}x | {this.cpu / base.cpu:.3f} | {os.getloadavg()[0]:.1f}",
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
    """CPU time (user + system) and page faults of each pipeline stage and target, in-process,
    for one build of ``n`` services; CPU time is what other jobs on a shared machine disturb
    least, and system time is mostly the kernel handing the process fresh memory."""
    from meshgen.pipeline import collector_paused

    folder = work / f"stages{n}"
    folder.mkdir()
    make_certs(folder / "certs")
    spec = folder / "mesh.yaml"
    spec.write_text(make_spec(n))
    with collector_paused():  # as `meshgen build` runs
        rows = _timed_stages(spec, folder)
    total = sum(cpu for name, cpu, _ in rows if not name.startswith(" "))
    print(f"stages of one in-process build, {n:,} services: {total:.2f} s CPU")
    print("  CPU s | share | page faults | stage")
    for name, cpu, faults in rows:
        print(f"  {cpu:6.2f} | {100 * cpu / total:4.1f}% | {faults:8,} | {name}")


def _timed_stages(spec: Path, folder: Path) -> list[tuple[str, float, int]]:
    import resource

    from meshgen import __version__, checks, lower, plan, schema, source, targets
    from meshgen.emit import MANIFEST, emit, manifest_text, read_tree, verify
    from meshgen.targets import gaps

    rows: list[tuple[str, float, int]] = []
    start = resource.getrusage(resource.RUSAGE_SELF)

    def done(name: str) -> None:
        nonlocal start
        now = resource.getrusage(resource.RUSAGE_SELF)
        cpu = now.ru_utime + now.ru_stime - start.ru_utime - start.ru_stime
        rows.append((name, cpu, now.ru_minflt - start.ru_minflt))
        start = now

    doc, _ = source.load(spec)
    done("source.load (libyaml compose on a thread, then the node walk)")
    assert doc is not None
    schema.validate(doc)
    done("schema.validate (jsonschema-rs)")
    mesh, _ = lower.lower(doc)
    done("lower.lower")
    assert mesh is not None
    checks.run_all(mesh, doc)
    done("checks.run_all")
    tables = plan.to_tables(mesh)
    done("plan.to_tables")
    ctx = targets.make_context(spec.name, __version__)
    files: dict[str, str] = {}
    for target in targets.registered():
        for render in target.renders:
            files.update(render(tables, ctx))
        done(f"targets.{target.name}")
        if target.gaps is not None:
            found = gaps.located(target.gaps(tables), mesh, doc)
            files[f"{target.name}/GAPS.txt"] = gaps.gaps_text(ctx.header, target.engine, found)
            done(f"targets.{target.name} GAPS.txt")
    files[MANIFEST] = manifest_text(files, spec.name, doc.text.encode(), __version__)
    done("MANIFEST.json (sha256 of every file)")
    emit(files, folder / "dist")  # the command line keeps doc, mesh and tables until it exits
    done("emit: write, verify, swap")
    tree = read_tree(folder / "dist")
    done("  not a build step: read DIST back for the rows below")
    for kind in (".py", ".json", ".yml"):
        verify({p: d for p, d in tree.items() if p.endswith(kind) and p != MANIFEST})
        done(f"  not a build step: verify every {kind} again (emit's share)")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000", help="services per build (comma separated)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per size")
    parser.add_argument("--validate-rounds", type=int, default=20)
    parser.add_argument(
        "--target", action="append", default=[], help="build only these targets (repeatable)"
    )
    parser.add_argument("--profile", action="store_true", help="profile instead of timing")
    parser.add_argument("--stages", action="store_true", help="time each stage in-process")
    parser.add_argument(
        "--baseline", type=Path, metavar="CHECKOUT", help="A/B against another checkout's build"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="meshgen-bench-") as tmp:
        if args.profile or args.stages:
            sys.path.insert(0, str(ROOT))  # this checkout's meshgen, as the subprocess builds
            for n in sizes:
                (profile if args.profile else stage_times)(n, Path(tmp))
            return 0
        if args.baseline is not None:
            bench_validate(args.validate_rounds, args.baseline.resolve())
            for n in sizes:
                against(n, args.baseline.resolve(), args.rounds, Path(tmp))
            return 0
        print(
            f"python {sys.version.split()[0]} on {os.cpu_count()} cpu(s), load average "
            f"{os.getloadavg()[0]:.1f}"
        )
        bench_validate(args.validate_rounds)
        extra = [option for name in args.target for option in ("--target", name)]
        for n in sizes:
            bench_build(n, Path(tmp), args.rounds, extra)
        print(f"load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
