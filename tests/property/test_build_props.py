"""Properties of the whole compiler, on generated input.

- Every generated valid spec builds, and shuffling its mapping keys changes nothing but the
  spec hash in MANIFEST.json.
- No input at all (mutated examples, arbitrary text, valid specs with a random subtree replaced
  by random data) makes the CLI raise or report an internal error: it exits 0 or 1.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import gaps_without_positions
from hypothesis import given, settings
from hypothesis import strategies as st

from meshgen.cli import main
from meshgen.emit import MANIFEST
from meshgen.pipeline import compile_text

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = (ROOT / "examples" / "quickstart" / "mesh.yaml").read_text()
NAMES = st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True)


def _split_100(draw: st.DrawFn, parts: int) -> list[int]:
    cuts = sorted(draw(st.lists(st.integers(0, 100), min_size=parts - 1, max_size=parts - 1)))
    edges = [0, *cuts, 100]
    return [b - a for a, b in itertools.pairwise(edges)]


@st.composite
def valid_specs(draw: st.DrawFn) -> dict[str, Any]:
    """A schema-valid, reference-consistent mesh.yaml as plain data."""
    names = draw(st.lists(NAMES, min_size=1, max_size=4, unique=True))
    services: dict[str, Any] = {}
    for name in names:
        ports = draw(st.lists(st.integers(1024, 65535), min_size=1, max_size=4, unique=True))
        service: dict[str, Any] = {
            "discovery": {
                "static": [
                    {"address": f"127.0.0.1:{p}", "weight": draw(st.integers(1, 100))}
                    for p in ports
                ]
            }
        }
        if draw(st.booleans()):
            service["health_check"] = {
                "http": {"path": "/healthz"},
                "interval": "5s",
                "timeout": "1s",
            }
        if draw(st.booleans()):
            policy = draw(st.sampled_from(["round_robin", "random", "least_request"]))
            service["load_balancer"] = {"policy": policy}
        if draw(st.booleans()):
            service["retries"] = {"attempts": draw(st.integers(0, 4)), "per_try_timeout": "1s"}
        if draw(st.booleans()):
            service["timeout"] = draw(st.sampled_from(["10s", "30s", "1m"]))
        services[name] = service
    routes = []
    for i in range(draw(st.integers(0, 4))):
        targets = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
        weights = _split_100(draw, len(targets))
        routes.append(
            {
                "name": f"route{i}",
                "match": {"path_prefix": f"/r{i}/"},
                "to": [{"service": s, "weight": w} for s, w in zip(targets, weights, strict=True)],
            }
        )
    spec: dict[str, Any] = {
        "version": 1,
        "mesh": {"name": "mesh", "domain": "mesh.test"},
        "services": services,
    }
    if routes:
        spec["routes"] = routes
    return spec


def _shuffle_keys(value: Any, rng: random.Random) -> Any:
    if isinstance(value, dict):
        keys = list(value)
        rng.shuffle(keys)
        return {k: _shuffle_keys(value[k], rng) for k in keys}
    if isinstance(value, list):
        return [_shuffle_keys(v, rng) for v in value]
    return value


def _without_spec_hash(files: dict[str, str]) -> dict[str, Any]:
    """The files with MANIFEST.json's spec hash dropped and GAPS.txt without positions (a
    positional report: key order moves its lines, never what it lists)."""
    out: dict[str, Any] = dict(files)
    manifest = json.loads(out.pop(MANIFEST))
    manifest.pop("spec")
    manifest.pop("inputs")
    for path in [p for p in out if p.endswith("/GAPS.txt")]:
        del manifest["files"][path]
        out[path] = gaps_without_positions(out[path])
    out[MANIFEST] = manifest
    return out


@settings(max_examples=40)
@given(spec=valid_specs(), seed=st.integers(0, 2**32 - 1))
def test_valid_specs_build_and_key_order_does_not_matter(spec: dict[str, Any], seed: int) -> None:
    text = yaml.safe_dump(spec, sort_keys=False)
    built = compile_text(text, "mesh.yaml")
    errors = [d for d in built.diagnostics if d.severity == "error"]
    assert built.files is not None and not errors, errors
    shuffled = yaml.safe_dump(_shuffle_keys(spec, random.Random(seed)), sort_keys=False)
    rebuilt = compile_text(shuffled, "mesh.yaml")
    assert rebuilt.files is not None
    assert _without_spec_hash(rebuilt.files) == _without_spec_hash(built.files)


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("fuzz") / "mesh.yaml"


def _validate(path: Path, text: str) -> tuple[int, str]:
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["validate", str(path)])
    return code, err.getvalue()


def _assert_clean(code: int, err: str) -> None:
    assert code in (0, 1), err
    assert "internal error" not in err and "Traceback" not in err, err


YAMLISH = st.text(
    alphabet=st.sampled_from(list(" \n\t-:[]{},#&*!|>'\"%@`?~0aZ9.\\\u00e9")), max_size=40
)


@settings(max_examples=150)
@given(
    edits=st.lists(
        st.tuples(st.integers(0, len(QUICKSTART)), st.integers(0, 20), YAMLISH),
        min_size=1,
        max_size=5,
    )
)
def test_mutated_yaml_never_crashes_the_cli(
    spec_file: Path, edits: list[tuple[int, int, str]]
) -> None:
    text = QUICKSTART
    for at, cut, insert in edits:
        text = text[:at] + insert + text[at + cut :]
    _assert_clean(*_validate(spec_file, text))


@settings(max_examples=100)
@given(text=st.text(max_size=300))
def test_arbitrary_text_never_crashes_the_cli(spec_file: Path, text: str) -> None:
    _assert_clean(*_validate(spec_file, text))


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


@settings(max_examples=150)
@given(spec=valid_specs(), data=st.data())
def test_valid_specs_with_a_random_subtree_never_crash_the_cli(
    spec_file: Path, spec: dict[str, Any], data: st.DataObject
) -> None:
    path = data.draw(st.sampled_from(_paths(spec)[1:]))
    node: Any = spec
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = data.draw(JSON_VALUES)
    _assert_clean(*_validate(spec_file, yaml.safe_dump(spec, sort_keys=False)))
