"""ip_literals: the dotted-quad regex agrees with ipaddress on what is a canonical IPv4 literal."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from meshgen.ip_literals import is_dotted_quad


def _canonical_ipv4(text: str) -> bool:
    try:
        return str(ipaddress.IPv4Address(text)) == text
    except ValueError:
        return False


octets = st.one_of(
    st.integers(0, 300).map(str),
    st.from_regex(r"0[0-9]{1,2}", fullmatch=True),  # leading zeros: rejected by both
    st.text("0123456789x ", max_size=4),
)


@given(st.lists(octets, min_size=1, max_size=5))
def test_a_dotted_quad_is_exactly_a_canonical_ipv4_literal(parts: list[str]) -> None:
    text = ".".join(parts)
    assert is_dotted_quad(text) == _canonical_ipv4(text)


@given(st.ip_addresses(v=4))
def test_every_ipv4_address_written_canonically_matches(address: ipaddress.IPv4Address) -> None:
    assert is_dotted_quad(str(address))


def test_other_hosts_do_not_match() -> None:
    for host in ("::1", "localhost", "10.0.0.1.", "1.2.3", "01.2.3.4", "1.2.3.256", ""):
        assert not is_dotted_quad(host)
