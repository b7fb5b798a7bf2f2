"""normalize_path: one spelling per path, so routing and access control agree."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshgen.runtime.codec.paths import normalize_path, split_target, target_authority, valid_host


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/", "/"),
        ("/a/b", "/a/b"),
        ("/a/b?x=1&y=/../z", "/a/b"),
        ("/a/./b/../c", "/a/c"),
        ("/a/b/..", "/a/"),
        ("/a/b/.", "/a/b/"),
        ("/../../etc", "/etc"),
        ("/..", "/"),
        ("//a///b", "/a/b"),
        ("/%61dmin", "/admin"),
        ("/%2e%2e/admin", "/admin"),
        ("/x/%2E%2E/admin", "/admin"),
        ("/a%2fb", "/a%2Fb"),
        ("/caf%C3%A9", "/caf%C3%A9"),
        ("/%7euser", "/~user"),
        ("/a#frag", "/a"),
        ("http://example.com/a/../b?q", "/b"),
        ("http://example.com", "/"),
        ("http://example.com?q=1", "/"),
        (b"/bytes/ok", "/bytes/ok"),
    ],
)
def test_normalises(raw: str | bytes, expected: str) -> None:
    """Dot segments, duplicate slashes and unreserved escapes collapse to one spelling."""
    assert normalize_path(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "*",
        "a/b",
        "/a b",
        "/a%",
        "/a%4",
        "/a%zz",
        "/a%00b",
        "/a\x00",
        "/caf\u00e9",
        b"/caf\xc3\xa9",
        "/a\r\nb",
        "/x?a b",
        "ftp:/x",
    ],
)
def test_rejects_invalid(raw: str | bytes) -> None:
    """Anything that is not a clean origin/absolute-form target is invalid (400)."""
    assert normalize_path(raw) is None


def test_split_keeps_query() -> None:
    """The query is returned untouched so the proxy can forward it."""
    assert split_target("/a/../b?x=%2e&y") == ("/b", "?x=%2e&y")


_segment = st.sampled_from(["a", "b", ".", "..", "", "%2e", "%2E%2e", "%41", "%2f", "c~d"])


@settings(deadline=None, max_examples=300)
@given(st.lists(_segment, max_size=8))
def test_idempotent_and_clean(segments: list[str]) -> None:
    """Normalising twice changes nothing; the result never has dot segments or '//'."""
    once = normalize_path("/" + "/".join(segments))
    assert once is not None
    assert normalize_path(once) == once
    assert once.startswith("/")
    assert "//" not in once
    parts = once.split("/")
    assert "." not in parts and ".." not in parts


@pytest.mark.parametrize(
    ("host", "ok"),
    [("web", True), ("web.mesh.test.:8080", True), ("[::1]:80", True), ("10.0.0.1", True),
     ("a%41b", True), ("", True), ("a b", False), ("we\x01b", False), ("web:80x", False),
     ("user@web", False), ("[::1", False), ("a%zz", False), ("web/x", False),
     ("x:65535", True), ("x:", True), ("x:99999", False), ("[::1]:65536", False)],
)  # fmt: skip
def test_valid_host(host: str, ok: bool) -> None:
    """RFC 9112 3.2 Host syntax: uri-host [":" port], the port within 0..65535."""
    assert valid_host(host) is ok


def test_target_authority() -> None:
    """Only an absolute-form target has an authority (userinfo kept, to be rejected)."""
    assert target_authority(b"http://web:81/x?y") == "web:81"
    assert target_authority(b"HTTPS://Web?q") == "Web"
    assert target_authority(b"http://u@web/") == "u@web"
    assert target_authority(b"http:///x") == ""
    assert target_authority(b"/x") is None
    assert target_authority(b"*") is None
