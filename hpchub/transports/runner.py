"""The one way hpchub runs an outside command: argv (never a shell), a timeout, and errors
that carry the command, its exit code and its output."""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

DEFAULT_TIMEOUT = 30.0
_TAIL = 2000  # characters of output kept in error messages

DEFAULT_MAX_OUTPUT = 1 << 20
"""Bytes of stdout (and, separately, of stderr) a command may write unless its caller allows more.
Commands run for a user (submit, cancel, a log tail) answer in a few lines; a user's shell startup
file that prints forever must not fill the hub's memory."""

TERM_GRACE = 2.0
"""Seconds between SIGTERM and SIGKILL of a timed-out (or cancelled) command's process group.
SIGTERM comes first because sudo relays it to the command it runs as another user, while a
SIGKILL of sudo would leave that command running on its own."""

READ_GRACE = 1.0
"""Seconds to collect what is left of a killed command's output. Whatever still holds the pipes
after that (a grandchild that left the process group, a process stuck in the kernel on NFS) is
abandoned: the pipes are closed and the process is reaped whenever it ends. A timed-out
command so returns within ``timeout + TERM_GRACE + READ_GRACE`` whatever it does."""


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float


class CommandError(RuntimeError):
    """A command that could not be run, failed, or timed out."""

    def __init__(
        self,
        argv: Sequence[str],
        returncode: int | None,
        stdout: str = "",
        stderr: str = "",
        reason: str | None = None,
    ):
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.reason = reason or f"exited with code {returncode}"
        super().__init__(self._describe())

    @property
    def command(self) -> str:
        return shlex.join(self.argv)

    def _describe(self) -> str:
        text = f"command `{self.command}` {self.reason}"
        for name, output in (("stderr", self.stderr), ("stdout", self.stdout)):
            output = output.strip()
            if output:
                text += f"\n{name}: {output[-_TAIL:]}"
        return text


class CommandTimeout(CommandError):
    """The command did not finish in time; its process group got SIGTERM, then SIGKILL. Carries
    the output read until then."""


class OutputTooLarge(CommandError):
    """The command wrote more than its limit to stdout or stderr and was stopped as on a timeout.
    Carries only the beginning of its output (the rest was never kept)."""

    def __init__(self, argv: Sequence[str], stream: str, limit: int, stdout: str, stderr: str, note: str = ""):
        self.stream = stream
        self.limit = limit
        super().__init__(argv, None, stdout[:_TAIL], stderr[:_TAIL],
                         reason=f"wrote more than {_size(limit)} to {stream} (its output limit); stopped{note}")


def _size(count: int) -> str:
    if count >= 1 << 20 and count % (1 << 20) == 0:
        return f"{count >> 20} MiB"
    if count >= 1 << 10 and count % (1 << 10) == 0:
        return f"{count >> 10} KiB"
    return f"{count} bytes"


async def run_command(
    argv: Sequence[str],
    *,
    input: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    env: Mapping[str, str] | None = None,
    cwd: str | None = "/",
    check: bool = True,
    max_output: int = DEFAULT_MAX_OUTPUT,
) -> CommandResult:
    """Run ``argv`` and return its output; raise CommandError unless it exits 0 (when ``check``).

    ``max_output`` bounds what is kept of stdout and of stderr (bytes each): a command that writes
    more is stopped as on a timeout and OutputTooLarge names the stream and the limit.

    The child gets its own session so that a timeout can stop everything it started. A timeout
    is a hard limit: CommandTimeout (with the output so far) comes within ``timeout`` plus
    TERM_GRACE and READ_GRACE. A cancelled call stops the command the same way, in the background.
    ``cwd`` defaults to ``/`` because commands run as other users cannot enter root's cwd.
    """
    if isinstance(argv, (str, bytes)):
        raise TypeError(f"argv must be a list of arguments, not a command line: {argv!r}")
    argv = tuple(argv)
    if not argv or not all(isinstance(arg, str) for arg in argv):
        raise TypeError(f"argv must be a non-empty sequence of str, got {argv!r}")
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    try:
        # A transport and protocol rather than asyncio's Process: the output is kept as it
        # arrives (a timeout still reports it) and the pipes can be closed on a process that
        # never ends.
        transport, collector = await loop.subprocess_exec(
            lambda: _OutputCollector(loop, max_output),
            *argv,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as error:
        raise CommandError(argv, None, reason=f"could not be started: {error.strerror or error}") from None
    if input is not None:
        stdin = transport.get_pipe_transport(0)
        assert isinstance(stdin, asyncio.WriteTransport)
        stdin.write(input.encode())
        stdin.close()  # after the write is flushed; a command that does not read it is no error
    try:
        finished, _ = await asyncio.wait((collector.settled,), timeout=timeout)
        if not finished or collector.overflow is not None:
            ended = await _stop(transport, collector)
            abandoned = "" if ended else (
                f" (its output was still open {TERM_GRACE + READ_GRACE:g} s after SIGTERM; abandoned)")
            if collector.overflow is not None:
                raise OutputTooLarge(argv, collector.overflow, max_output, collector.text(1), collector.text(2),
                                     note=abandoned)
            raise CommandTimeout(argv, None, collector.text(1), collector.text(2),
                                 reason=f"timed out after {timeout:g} s{abandoned}")
    except asyncio.CancelledError:
        _stop_in_background(transport)
        raise
    returncode = transport.get_returncode()
    assert returncode is not None  # it exited: collector.exited is done
    result = CommandResult(argv, returncode, collector.text(1), collector.text(2), time.monotonic() - started)
    if check and result.returncode != 0:
        raise CommandError(argv, result.returncode, result.stdout, result.stderr)
    return result


class _OutputCollector(asyncio.SubprocessProtocol):
    """A command's stdout and stderr as they arrive (at most ``max_output`` bytes of each), and when
    it exited and closed them. ``settled`` is done once both happened or an output overflowed. The
    transport is closed once both happened, also when nobody waits any more (a cancelled call)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_output: int) -> None:
        self.output = {1: bytearray(), 2: bytearray()}
        self.max_output = max_output
        self.overflow: str | None = None
        """The stream ("stdout" or "stderr") that went over the limit first."""
        self.exited: asyncio.Future[None] = loop.create_future()
        self.output_closed: asyncio.Future[None] = loop.create_future()
        self.settled: asyncio.Future[None] = loop.create_future()
        self._open_outputs = {1, 2}
        self._overflowed: set[int] = set()
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        if fd in self._overflowed:  # what comes until the command is stopped is dropped
            return
        kept = self.output[fd]
        kept.extend((data.encode() if isinstance(data, str) else data)[:self.max_output - len(kept) + 1])
        if len(kept) > self.max_output:
            del kept[self.max_output:]
            self._overflowed.add(fd)
            self.overflow = self.overflow or ("stdout" if fd == 1 else "stderr")
            _set(self.settled)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._open_outputs.discard(fd)
        if not self._open_outputs:
            self._finish(self.output_closed)

    def process_exited(self) -> None:
        self._finish(self.exited)

    def _finish(self, event: asyncio.Future[None]) -> None:
        _set(event)
        if self.exited.done() and self.output_closed.done():
            _set(self.settled)
            if self._transport is not None:
                self._transport.close()

    def text(self, fd: int) -> str:
        return self.output[fd].decode(errors="replace")


def _set(event: asyncio.Future[None]) -> None:
    if not event.done():
        event.set_result(None)


async def _stop(transport: asyncio.SubprocessTransport, collector: _OutputCollector) -> bool:
    """SIGTERM the command's group, SIGKILL it once the command exits or TERM_GRACE is over, read
    the rest of its output for at most READ_GRACE and close the pipes. True if everything ended."""
    group = transport.get_pid()
    _signal_group(group, signal.SIGTERM)
    await asyncio.wait((collector.exited,), timeout=TERM_GRACE)
    _signal_group(group, signal.SIGKILL)  # also whatever in the group ignored SIGTERM
    finished, _ = await asyncio.wait((collector.exited, collector.output_closed), timeout=READ_GRACE)
    # Closing the transport closes our ends of the pipes; the event loop's child watcher still
    # reaps the process (and keeps the transport) whenever it ends, so no zombie stays behind.
    transport.close()
    return len(finished) == 2


def _stop_in_background(transport: asyncio.SubprocessTransport) -> None:
    """``_stop`` for a cancelled call, which must not wait: SIGTERM now, SIGKILL and close later
    (a timer, not a task, so a loop that closes meanwhile has nothing pending to complain about)."""
    group = transport.get_pid()
    _signal_group(group, signal.SIGTERM)

    def kill_and_close() -> None:
        _signal_group(group, signal.SIGKILL)
        transport.close()

    asyncio.get_running_loop().call_later(TERM_GRACE, kill_and_close)


def _signal_group(group: int, signum: int) -> None:
    try:
        os.killpg(group, signum)
    except (ProcessLookupError, PermissionError):  # gone already, or only other users' processes left
        pass
