"""The field names a ``Connection`` header nominates for removal (RFC 9110 section 7.6.1)."""

from hypothesis import given
from hypothesis import strategies as st

from meshgen.runtime.codec import upstream_conn
from meshgen.runtime.codec.upstream_conn import HOP_BY_HOP, NAMES_KEPT, connection_tokens

TOKENS = st.sampled_from([b"keep-alive", b"Keep-Alive", b"close", b"Upgrade", b"TE", b"x-hop"])
NAMES = TOKENS | st.from_regex(rb"\A[A-Za-z0-9-]{1,12}\Z")


@given(st.lists(NAMES, min_size=1, max_size=6), st.sampled_from([b",", b", ", b" , "]))
def test_the_tokens_are_the_listed_names_but_hop_by_hop(names: list[bytes], sep: bytes) -> None:
    value = sep.join(names)
    expected = {n.lower() for n in names} - HOP_BY_HOP - {b"close"}
    assert connection_tokens(value) == expected
    assert connection_tokens(value) == expected  # the kept answer is the same


def test_the_common_values_nominate_nothing() -> None:
    for value in (b"keep-alive", b"close", b"Keep-Alive", b"Upgrade, keep-alive", b"TE"):
        assert not connection_tokens(value)


def test_a_peer_sending_endless_distinct_values_cannot_grow_the_kept_answers() -> None:
    for i in range(NAMES_KEPT + 10):
        assert connection_tokens(b"x-%d" % i) == {b"x-%d" % i}
    assert len(upstream_conn._TOKENS) <= NAMES_KEPT
