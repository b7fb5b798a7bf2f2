"""The connection-wide budget of bytes an HTTP/2 connection's streams hold for the peer
(``h2lib.Budget``): bounded whatever the peer's windows do, no stream stopped while its peer
waits for it, and every stream's data through once the peer reads."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from meshgen.runtime.codec import h2lib

READ = 64 * 1024  # the most a source brings in one read


class Stream:
    """A stream as the budget sees it: a source of ``left`` bytes that reads while not held,
    and the bytes it holds until the peer's window lets them out (``h2lib.Holder``)."""

    def __init__(self, budget: h2lib.Budget, left: int) -> None:
        self.budget = budget
        self.left = left  # bytes its source has still to bring
        self.held_back = False
        self.out = 0  # bytes waiting for the window
        self.window = 0  # what the peer's window still allows

    @property
    def pending(self) -> int:
        return self.out

    @property
    def wanted(self) -> bool:
        return not self.out and self.window > 0

    def hold(self, on: bool) -> None:
        self.held_back = on

    def _pump(self, grew: int) -> None:
        sent = min(self.out, self.window)
        self.out -= sent
        self.window -= sent
        self.budget.changed(self, grew - sent)

    def read(self, n: int) -> None:
        """Its source brings ``n`` bytes (at most what is left), if it is not held back."""
        n = min(n, self.left)
        if not self.held_back and n:
            self.left -= n
            self.out += n
            self._pump(n)

    def opened(self, n: int) -> None:
        """The peer opens the window by ``n`` (and reads what is sent)."""
        self.window += n
        self._pump(0)


STEPS = st.lists(
    st.tuples(st.sampled_from(("read", "open")), st.integers(0, 99), st.integers(1, READ)),
    max_size=400,
)


@settings(max_examples=150, deadline=None)
@given(count=st.integers(1, 100), size=st.integers(1, 4 * READ), steps=STEPS)
def test_a_connections_streams_hold_a_bounded_budget_and_none_starves(
    count: int, size: int, steps: list[tuple[str, int, int]]
) -> None:
    """Streams of ``size`` bytes read and peers open windows in any order: the budget counts
    what they hold; past the connection's mark it grows by a read per stream at most (the
    sources stop at once); no stream the peer waits for is held back; then a peer that reads
    everything gets every stream whole."""
    streams: list[Stream] = []
    budget = h2lib.Budget(lambda: streams)
    streams.extend(Stream(budget, size) for _ in range(count))
    bound = h2lib.CONNECTION_HIGH_WATER + count * READ
    for what, i, n in steps:
        stream = streams[i % count]
        stream.read(n) if what == "read" else stream.opened(n)
        assert budget.held == sum(s.out for s in streams) <= bound
        assert not any(s.held_back and s.wanted for s in streams), "a wanted stream held back"
    for _ in range(count * (size // READ + 3) * 4):
        if not any(s.left or s.out for s in streams):
            break
        for stream in streams:
            stream.opened(READ)
            stream.read(READ)
    assert not any(s.left or s.out for s in streams), "a stream starved"
    assert budget.held == 0


def test_the_connections_mark_stops_every_source_and_half_of_it_resumes_them_in_turn() -> None:
    """99 streams whose windows stay closed: every source stops once the connection holds
    its mark (not a mark a stream), but that of a stream whose peer waits for it (its window
    open, nothing of it waiting: held back, it would never be asked again); when the peer
    reads them, the first stopped are the first to read again, a few at a time."""
    streams: list[Stream] = []
    budget = h2lib.Budget(lambda: streams)
    streams.extend(Stream(budget, 1 << 30) for _ in range(100))
    *closed, waits = streams
    waits.opened(1)
    for stream in closed:
        stream.read(READ)
    assert budget.held <= h2lib.CONNECTION_HIGH_WATER + READ
    assert all(s.held_back for s in closed) and not waits.held_back
    stopped = [s for s in closed if s.out]
    stopped[0].opened(stopped[0].out + 1)  # read whole, room left: wanted, it reads again
    assert not stopped[0].held_back and all(s.held_back for s in closed if s is not stopped[0])
    for stream in stopped[1:]:
        stream.opened(stream.out // 2)
    assert budget.held <= h2lib.CONNECTION_HIGH_WATER // 2
    free = [s for s in closed if not s.held_back and s is not stopped[0]]
    assert 0 < len(free) <= h2lib.CONNECTION_HIGH_WATER // h2lib.RESUME_ROOM
    # the stream that crossed the mark stopped first, then the others as they come
    order = [stopped[-1], *stopped[1:-1], *closed[len(stopped) :]]
    assert free == sorted(order[: len(free)], key=streams.index)
