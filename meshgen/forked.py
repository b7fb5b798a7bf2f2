"""Run one piece of work in a forked child while the caller does another: a build on two cores.

Why a fork and not a thread or a process pool: the work (rendering a target) is pure Python,
so a thread shares one interpreter lock, and a pool would have to pickle the tables it reads
(hundreds of megabytes at 10,000 services). A forked child already has them. Only its result,
the rendered files, comes back: pickled into an unlinked temporary file, which the child
fills without waiting for the caller (a pipe would block it at 64 KiB until the caller reads).

A fork is used only where it is safe: on POSIX, and when the calling process runs no other
thread (a lock another thread held at the fork would stay held in the child); and only where
it can be had (a temporary file and a process). Otherwise the
work runs in the caller when :meth:`Beside.result` asks for it, so the result is the same
either way; the build's tests compare both ways byte for byte.
"""

from __future__ import annotations

import os
import pickle
import signal
import tempfile
import threading
import traceback
from collections.abc import Callable
from typing import IO, Generic, TypeVar

T = TypeVar("T")


class ChildError(Exception):
    """The child failed in a way its exception could not be passed back as it was."""


def can_fork() -> bool:
    """True where :class:`Beside` really runs its work in a child."""
    return hasattr(os, "fork") and threading.active_count() == 1


class Beside(Generic[T]):
    """``work`` running in a child from construction on; :meth:`result` waits for it.

    Use as a context manager: leaving the block without taking the result (the caller's own
    work failed) stops the child, so it never outlives the build.
    """

    def __init__(self, work: Callable[[], T], fork: bool = True) -> None:
        """``fork=False``: run ``work`` in the caller, at :meth:`result` (small builds)."""
        self._work: Callable[[], T] | None = work
        self._pid = 0
        self._file: IO[bytes] | None = None
        if fork and can_fork():
            try:
                self._file = tempfile.TemporaryFile()  # noqa: SIM115 (closed by __exit__)
                self._pid = os.fork()
            except OSError:  # no temporary file or no process to be had: work in the caller
                self.__exit__()
                return
            if self._pid == 0:
                _run_child(work, self._file)

    def __enter__(self) -> Beside[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._pid:
            os.kill(self._pid, signal.SIGKILL)
            os.waitpid(self._pid, 0)
            self._pid = 0
        if self._file is not None:
            self._file.close()
            self._file = None

    def result(self) -> T:
        """The work's result, or its exception raised here (once; the child is then reaped)."""
        if not self._pid:
            work, self._work = self._work, None
            assert work is not None, "result() is taken once"
            return work()
        _, status = os.waitpid(self._pid, 0)
        self._pid = 0
        assert self._file is not None
        self._file.seek(0)
        try:
            ok, value = pickle.load(self._file)
        except Exception as exc:  # nothing written, or an exception that does not unpickle
            raise ChildError(f"the child ended without a result (wait status {status})") from exc
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]


def _run_child(work: Callable[[], object], out: IO[bytes]) -> None:
    """In the child: run ``work``, pickle ``(ok, result or exception)`` into ``out``, exit.

    ``os._exit``: the child must not run the parent's exit handlers or flush its buffers.
    """
    failure: BaseException | None = None
    try:
        try:
            outcome: tuple[bool, object] = (True, work())
        except BaseException as exc:  # passed back and raised in the parent
            exc.add_note("".join(traceback.format_exception(exc)).rstrip())
            failure = exc
            outcome = (False, exc)
        try:
            pickle.dump(outcome, out, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # a result or exception that does not pickle
            what = "".join(traceback.format_exception(failure)) if failure else "its result"
            failure = ChildError(f"cannot pass back {what}: {exc}")
            out.seek(0)
            out.truncate()
            pickle.dump((False, failure), out)
        out.flush()
    finally:
        os._exit(0 if failure is None else 1)
