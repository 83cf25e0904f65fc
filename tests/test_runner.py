"""The command runner: argv only, timeouts that kill the whole process group, errors with context."""

import asyncio
import os
import random
import signal
import time

import pytest

from hpchub.transports import runner
from hpchub.transports.runner import DEFAULT_MAX_OUTPUT, CommandError, CommandTimeout, OutputTooLarge, run_command

# The longest a timed-out command may take beyond its timeout: SIGTERM grace, bounded read, slack.
_STOP_BOUND = runner.TERM_GRACE + runner.READ_GRACE + 1


async def test_output_and_exit_code():
    result = await run_command(["sh", "-c", 'printf out; printf err >&2'])
    assert (result.returncode, result.stdout, result.stderr) == (0, "out", "err")


async def test_arguments_are_never_shell_interpreted(tmp_path):
    canary = tmp_path / "x"
    result = await run_command(["echo", f"$(touch {canary})", ";", "`id`"])
    assert result.stdout == f"$(touch {canary}) ; `id`\n" and not canary.exists()


async def test_failure_carries_command_exit_code_and_output():
    with pytest.raises(CommandError) as caught:
        await run_command(["sh", "-c", "echo partial; echo 'sbatch: error: bad' >&2; exit 3", "arg with space"])
    error = caught.value
    assert error.returncode == 3 and error.stdout == "partial\n" and "sbatch: error: bad" in error.stderr
    assert "exited with code 3" in str(error) and "'arg with space'" in str(error) and "sbatch: error: bad" in str(error)


async def test_input_goes_to_stdin():
    assert (await run_command(["cat"], input="#!/bin/bash\necho hi\n")).stdout == "#!/bin/bash\necho hi\n"


async def test_timeout_kills_the_process_group(tmp_path):
    pidfile = tmp_path / "child.pid"
    started = time.monotonic()
    with pytest.raises(CommandTimeout) as caught:
        await run_command(["sh", "-c", f"sleep 30 & echo $! > {pidfile}; wait"], timeout=0.5)
    assert time.monotonic() - started < 5
    assert "timed out after 0.5 s" in str(caught.value) and caught.value.returncode is None
    child = int(pidfile.read_text())
    for _ in range(50):
        if not _alive(child):
            break
        await asyncio.sleep(0.05)
    assert not _alive(child), "the grandchild survived the timeout"


async def test_a_grandchild_that_left_the_group_and_holds_stdout_does_not_hold_the_runner():
    # setsid takes the grandchild out of the process group, so no group signal reaches it, and it
    # keeps stdout open: reading until EOF would wait for it (about a minute).
    marker = f"61.{random.randrange(10**6):06d}"
    started = time.monotonic()
    try:
        with pytest.raises(CommandTimeout) as caught:
            await asyncio.wait_for(
                run_command(["sh", "-c", f"echo started; setsid sleep {marker} & exec sleep 60"], timeout=0.5),
                0.5 + _STOP_BOUND,
            )
        elapsed = time.monotonic() - started
        assert elapsed < 0.5 + _STOP_BOUND
        error = caught.value
        assert error.argv[0] == "sh" and error.stdout == "started\n" and "timed out after 0.5 s" in str(error)
        assert _pids_running(["sleep", marker]), "the test did not set up the escaped grandchild it means to"
        await _wait_until(lambda: not _zombie_children())
        assert not _zombie_children(), "the killed command was not reaped"
    finally:
        for pid in _pids_running(["sleep", marker]):
            os.kill(pid, signal.SIGKILL)


async def test_a_child_that_ignores_sigterm_is_killed_after_the_grace(tmp_path):
    pidfile = tmp_path / "child.pid"
    started = time.monotonic()
    with pytest.raises(CommandTimeout):
        await asyncio.wait_for(
            run_command(["sh", "-c", f"trap '' TERM; echo $$ > {pidfile}; while :; do sleep 0.1; done"], timeout=0.5),
            0.5 + _STOP_BOUND,
        )
    elapsed = time.monotonic() - started
    assert 0.5 + runner.TERM_GRACE - 0.1 < elapsed < 0.5 + _STOP_BOUND  # it got the grace, then SIGKILL
    child = int(pidfile.read_text())
    await _wait_until(lambda: not _alive(child))
    assert not _alive(child)


async def test_sigterm_comes_first_and_a_child_that_exits_on_it_ends_the_wait(tmp_path):
    marker = tmp_path / "terminated"
    started = time.monotonic()
    with pytest.raises(CommandTimeout) as caught:
        await run_command(
            ["sh", "-c", f"trap 'echo TERM > {marker}; exit 143' TERM; echo up; sleep 60 & wait"], timeout=0.5
        )
    assert marker.read_text() == "TERM\n"
    assert caught.value.stdout == "up\n"
    assert time.monotonic() - started < 0.5 + 1  # no waiting out the grace once the command is gone


async def test_cancellation_terminates_without_waiting(tmp_path):
    marker = tmp_path / "terminated"
    command = asyncio.ensure_future(
        run_command(["sh", "-c", f"trap 'echo TERM > {marker}; exit 143' TERM; sleep 60 & wait"], timeout=30)
    )
    await asyncio.sleep(0.3)
    command.cancel()
    started = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(command, 1)
    assert time.monotonic() - started < 0.5
    await _wait_until(marker.exists)
    assert marker.read_text() == "TERM\n"  # SIGTERM first, as on a timeout
    await _wait_until(lambda: not _zombie_children())
    assert not _zombie_children()


async def _wait_until(condition, seconds: float = 3.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


def _pids_running(argv: list[str]) -> list[int]:
    wanted = "\0".join(argv).encode() + b"\0"
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                    if cmdline.read() == wanted:
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


def _zombie_children() -> list[int]:
    zombies = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(") ", 1)[1].split()
            except OSError:
                continue
            if fields[0] == "Z" and int(fields[1]) == os.getpid():
                zombies.append(int(entry))
    return zombies


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
async def test_output_over_the_limit_stops_the_command_and_says_so(tmp_path, stream):
    # A command that prints forever (as a user's shell startup file can) is stopped at the limit,
    # long before its timeout, with the whole process group; only the head of its output is kept.
    pidfile = tmp_path / "child.pid"
    redirect = ">&2" if stream == "stderr" else ""
    started = time.monotonic()
    with pytest.raises(OutputTooLarge) as caught:
        await run_command(["sh", "-c", f"sleep 30 & echo $! > {pidfile}; yes flood {redirect}"],
                          max_output=64 * 1024, timeout=30)
    assert time.monotonic() - started < _STOP_BOUND
    error = caught.value
    assert (error.stream, error.limit, error.returncode) == (stream, 64 * 1024, None)
    assert f"wrote more than 64 KiB to {stream}" in str(error)
    assert getattr(error, stream).startswith("flood\nflood\n") and len(getattr(error, stream)) <= 2000
    child = int(pidfile.read_text())
    for _ in range(50):
        if not _alive(child):
            break
        await asyncio.sleep(0.05)
    assert not _alive(child), "the rest of the process group survived"


async def test_output_limit_default_and_exact_size():
    # Up to the limit is fine; one byte more is not. The default is the small, user-side one.
    exact = await run_command(["head", "-c", str(DEFAULT_MAX_OUTPUT), "/dev/zero"])
    assert len(exact.stdout) == DEFAULT_MAX_OUTPUT
    with pytest.raises(OutputTooLarge):
        await run_command(["head", "-c", str(DEFAULT_MAX_OUTPUT + 1), "/dev/zero"])
    assert len((await run_command(["head", "-c", "3000000", "/dev/zero"], max_output=3_000_000)).stdout) == 3_000_000


async def test_missing_program_is_a_command_error():
    with pytest.raises(CommandError, match="could not be started"):
        await run_command(["/nonexistent/sbatch"])


async def test_check_false_returns_failures():
    assert (await run_command(["false"], check=False)).returncode == 1


def test_argv_must_be_strings():
    with pytest.raises(TypeError):
        asyncio.run(run_command("sbatch job.sh"))
    with pytest.raises(TypeError):
        asyncio.run(run_command(["echo", 1]))


async def test_only_the_given_environment():
    result = await run_command(["sh", "-c", "echo $ONLY_THIS"], env={"ONLY_THIS": "yes", "PATH": os.environ["PATH"]})
    assert result.stdout == "yes\n"
