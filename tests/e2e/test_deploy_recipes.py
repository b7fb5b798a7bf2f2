"""The deployment recipes of docs/deploy.md work as committed.

systemd: ``systemd-analyze verify`` accepts the unit, and its ExecStart/ExecReload command
lines start, reload and stop a real runtime. Container: hadolint accepts the Dockerfile, its
pins and entry point agree with this meshgen, and where a container engine answers the image
is built. Kubernetes: the manifest validates against the Kubernetes schemas (strict) and its
probes, mounts and arguments fit the image. The sidecar script runs a DIST folder, and runs a
DIST archive that it reloads (SIGHUP) when the archive changes, as a mounted ConfigMap does.
"""

from __future__ import annotations

import configparser
import io
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Process, require_binary, start_process
from polling import eventually
from runtime_harness import backend, build_dist, spec

from meshgen import __version__

pytestmark = pytest.mark.e2e
DEPLOY = Path(__file__).resolve().parents[2] / "docs" / "deploy"
SIDECAR = DEPLOY / "meshgen-sidecar.sh"
ROUTE = """
services: {{web: {{discovery: {{static: [{{address: "{a}"}}]}}}}}}
routes: [{{name: web, match: {{host: web}}, to: [{{service: web}}]}}]
"""


def _tool(name: str) -> str:
    """A tool from the test extra, next to this Python (the venv's bin), else on PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else require_binary(name)


def _unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(DEPLOY / "meshgen.service")
    return parser


def _ready(path: Path, proc: Process, timeout: float = 15.0) -> dict[str, Any]:
    proc.wait_until(path.exists, timeout, "runtime ready file")
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def _get(address: str, host: str) -> tuple[int, bytes]:
    import http.client

    h, p = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(h, int(p), timeout=5)
    try:
        conn.request("GET", "/", headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    """`systemd-analyze verify` passes; only the interpreter path is this machine's."""
    analyze = require_binary("systemd-analyze")
    text = (DEPLOY / "meshgen.service").read_text()
    assert "/opt/meshgen/venv/bin/python" in text
    unit = tmp_path / "meshgen.service"
    unit.write_text(text.replace("/opt/meshgen/venv/bin/python", sys.executable))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_systemd_command_lines_start_reload_and_stop_the_runtime(tmp_path: Path) -> None:
    """The unit's ExecStart (paths mapped into a temporary root, systemd's variables expanded
    as systemd would) serves the mesh; ExecReload's SIGHUP loads a rebuilt DIST; SIGTERM (the
    unit's KillSignal) stops it with exit 0."""
    service = _unit()["Service"]
    assert service["KillSignal"] == "SIGTERM" and service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    root, run = tmp_path / "etc-meshgen", tmp_path / "run"
    root.mkdir(), run.mkdir()
    line = service["ExecStart"].replace("/etc/meshgen", str(root))
    line = line.replace("/opt/meshgen/venv/bin/python", sys.executable)
    line = line.replace("${RUNTIME_DIRECTORY}", str(run))
    argv = [a for a in shlex.split(line) if a != "$MESHGEN_OPTIONS"]  # empty: unset
    with backend("a") as (a, _), backend("b") as (b, _):
        build_dist(root / "dist", spec(ROUTE.format(a=a)))
        proc = start_process(argv, tmp_path / "runtime.log", cwd=root)
        try:
            ready = _ready(run / "ready.json", proc)
            edge = ready["listeners"]["edge"]
            assert _get(edge, "web") == (200, b"a GET /\n")
            build_dist(root / "dist", spec(ROUTE.format(a=b)))
            os.kill(proc.pid, signal.SIGHUP)  # ExecReload
            eventually(lambda: _get(edge, "web")[1] == b"b GET /\n", context=proc.log_tail)
        finally:
            proc.stop()
        assert proc.popen.returncode == 0, proc.log_tail()


def _dockerfile() -> str:
    return (DEPLOY / "Dockerfile").read_text()


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run([_tool("hadolint"), "--no-color", str(DEPLOY / "Dockerfile")],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_fits_this_meshgen_and_the_runtime() -> None:
    """The pinned meshgen is this one; the DIST is built --strict; the final stage runs the
    sidecar script on the DIST as a non-root user and checks /healthz."""
    text = _dockerfile()
    assert f"ARG MESHGEN=meshgen=={__version__}\n" in text
    assert "RUN meshgen build mesh.yaml -o dist --strict" in text
    final = text.rsplit("\nFROM ", 1)[1]
    assert re.search(r"^USER 10001$", final, re.MULTILINE)
    assert "pip install --no-cache-dir -r /tmp/requirements.txt" in final
    assert "COPY --chmod=0755 meshgen-sidecar.sh /usr/local/bin/meshgen-sidecar" in final
    assert 'ENTRYPOINT ["meshgen-sidecar"]' in final
    assert 'CMD ["/mesh/dist", "--root", "/mesh"]' in final
    assert "/healthz" in final.split("HEALTHCHECK", 1)[1].split("\n\n", 1)[0]


def test_container_image_builds_where_an_engine_exists(tmp_path: Path) -> None:
    """Builds the image from the quickstart (with this checkout's meshgen as the wheel) only
    where a container engine answers: there is none on the development machines."""
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "info"], capture_output=True,
                                        timeout=30).returncode != 0:  # fmt: skip
        pytest.skip(
            "no container engine answers `docker info` here; the Dockerfile is checked "
            "statically (hadolint, test_dockerfile_fits_this_meshgen_and_the_runtime)"
        )
    context = tmp_path / "context"
    shutil.copytree(DEPLOY.parents[1] / "examples" / "quickstart", context,
                    ignore=shutil.ignore_patterns("dist"))  # fmt: skip
    shutil.copy(DEPLOY / "Dockerfile", context)
    shutil.copy(SIDECAR, context)
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(context)]
    wheel = subprocess.run([*pip, str(DEPLOY.parents[1])], capture_output=True, text=True,
                           timeout=300)  # fmt: skip
    assert wheel.returncode == 0, wheel.stderr
    (name,) = [p.name for p in context.glob("meshgen-*.whl")]
    build = subprocess.run([docker, "build", "--build-arg", f"MESHGEN=/mesh/{name}", "-t",
                            "meshgen-test", str(context)], capture_output=True, text=True,
                           timeout=900)  # fmt: skip
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]


def _manifest() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text()) if d]


def test_kubernetes_manifest_validates_strictly() -> None:
    result = subprocess.run([_tool("kubernetes-validate"), "--strict",
                             str(DEPLOY / "kubernetes.yaml")], capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed for resource deployment/shop-frontend" in result.stdout + result.stderr


def test_kubernetes_sidecar_fits_the_image_and_the_runtime() -> None:
    """Readiness and liveness on /healthz at the admin port; the DIST archive comes from the
    mounted ConfigMap; certificates at --root/certs; the pod waits longer than --grace."""
    (deployment,) = [d for d in _manifest() if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (mesh,) = [c for c in pod["containers"] if c["name"] == "mesh"]
    admin = {p["name"]: p["containerPort"] for p in mesh["ports"]}["admin"]
    assert admin == 15000
    for probe in ("readinessProbe", "livenessProbe"):
        assert mesh[probe]["httpGet"] == {"path": "/healthz", "port": "admin"}
    mounts = {m["name"]: m["mountPath"] for m in mesh["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dist"]["configMap"]["name"] == "shop-mesh-dist"
    args = mesh["args"]
    assert args[0] == f"{mounts['dist']}/dist.tar.gz"
    assert args[args.index("--root") + 1] == "/mesh" and mounts["certs"] == "/mesh/certs"
    assert pod["terminationGracePeriodSeconds"] > 15
    assert {"name": "MESHGEN_WORK", "value": mounts["work"]} in mesh["env"]


def _archive(dist: Path, target: Path) -> None:
    """``tar -czf target -C dist .``, written to a temporary name and renamed (as kubelet
    swaps a ConfigMap: the reader never sees half a file)."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        tar.add(dist, arcname=".")
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(data.getvalue())
    os.replace(tmp, target)


def _sidecar(tmp_path: Path, source: Path, ready: Path) -> Process:
    env = {**os.environ, "MESHGEN_WORK": str(tmp_path / "work"), "MESHGEN_POLL": "0.2",
           "PYTHON": sys.executable}  # fmt: skip
    return start_process(["sh", SIDECAR, source, "--ready-file", ready], tmp_path / "sidecar.log",
                         env=env)  # fmt: skip


def test_sidecar_script_runs_a_dist_folder(tmp_path: Path) -> None:
    with backend("a") as (a, _):
        dist = build_dist(tmp_path / "dist", spec(ROUTE.format(a=a)))
        proc = _sidecar(tmp_path, dist, tmp_path / "ready.json")
        try:
            edge = _ready(tmp_path / "ready.json", proc)["listeners"]["edge"]
            assert _get(edge, "web") == (200, b"a GET /\n")
        finally:
            proc.stop()
        assert proc.popen.returncode == 0


def test_sidecar_script_reloads_a_changed_archive_with_sighup(tmp_path: Path) -> None:
    """A new archive is unpacked and loaded by SIGHUP (same process, same listener); a broken
    one is ignored while the running DIST keeps serving; SIGTERM drains and exits 0."""
    config = tmp_path / "config"
    for folder in (config, tmp_path / "build-a", tmp_path / "build-b"):
        folder.mkdir()
    archive = config / "dist.tar.gz"
    with backend("a") as (a, _), backend("b") as (b, _):
        _archive(build_dist(tmp_path / "build-a" / "dist", spec(ROUTE.format(a=a))), archive)
        proc = _sidecar(tmp_path, archive, tmp_path / "ready.json")
        try:
            edge = _ready(tmp_path / "ready.json", proc)["listeners"]["edge"]
            assert _get(edge, "web") == (200, b"a GET /\n")
            _archive(build_dist(tmp_path / "build-b" / "dist", spec(ROUTE.format(a=b))), archive)
            eventually(lambda: _get(edge, "web")[1] == b"b GET /\n", timeout=15,
                       context=proc.log_tail)  # fmt: skip
            assert "changed; reloading" in proc.log.read_text()
            archive.write_bytes(b"not a tarball")
            proc.wait_until(lambda: "is not a DIST archive" in proc.log.read_text(), 10)
            assert _get(edge, "web") == (200, b"b GET /\n")
        finally:
            proc.stop()
        assert proc.popen.returncode == 0, proc.log_tail()
