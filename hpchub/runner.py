"""The one way hpchub runs an outside command: argv (never a shell), a timeout, and errors
that carry the command, its exit code and its output."""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

DEFAULT_TIMEOUT = 30.0
_TAIL = 2000  # characters of output kept in error messages


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
    """The command did not finish in time; it was killed (with its process group)."""


async def run_command(
    argv: Sequence[str],
    *,
    input: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    env: Mapping[str, str] | None = None,
    cwd: str | None = "/",
    check: bool = True,
) -> CommandResult:
    """Run ``argv`` and return its output; raise CommandError unless it exits 0 (when ``check``).

    The child gets its own session so that a timeout can kill everything it started.
    ``cwd`` defaults to ``/`` because commands run as other users cannot enter root's cwd.
    """
    if isinstance(argv, (str, bytes)):
        raise TypeError(f"argv must be a list of arguments, not a command line: {argv!r}")
    argv = tuple(argv)
    if not argv or not all(isinstance(arg, str) for arg in argv):
        raise TypeError(f"argv must be a non-empty sequence of str, got {argv!r}")
    started = time.monotonic()
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as error:
        raise CommandError(argv, None, reason=f"could not be started: {error.strerror or error}") from None
    try:
        stdout, stderr = await asyncio.wait_for(
            process.communicate(input.encode() if input is not None else None), timeout
        )
    except asyncio.TimeoutError:
        _kill_group(process)
        stdout, stderr = await process.communicate()
        raise CommandTimeout(
            argv, None, stdout.decode(errors="replace"), stderr.decode(errors="replace"),
            reason=f"timed out after {timeout:g} s",
        ) from None
    except asyncio.CancelledError:
        _kill_group(process)
        raise
    result = CommandResult(
        argv, process.returncode, stdout.decode(errors="replace"), stderr.decode(errors="replace"),
        time.monotonic() - started,
    )
    if check and result.returncode != 0:
        raise CommandError(argv, result.returncode, result.stdout, result.stderr)
    return result


def run_command_sync(argv: Sequence[str], **kwargs) -> CommandResult:
    """``run_command`` for synchronous callers such as the CLI."""
    return asyncio.run(run_command(argv, **kwargs))


def _kill_group(process: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
