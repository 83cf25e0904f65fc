"""The command runner: argv only, timeouts that kill the whole process group, errors with context."""

import asyncio
import os
import time

import pytest

from hpchub.runner import CommandError, CommandTimeout, run_command, run_command_sync


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


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


async def test_missing_program_is_a_command_error():
    with pytest.raises(CommandError, match="could not be started"):
        await run_command(["/nonexistent/sbatch"])


async def test_check_false_returns_failures():
    assert (await run_command(["false"], check=False)).returncode == 1


def test_argv_must_be_strings():
    with pytest.raises(TypeError):
        run_command_sync("sbatch job.sh")
    with pytest.raises(TypeError):
        run_command_sync(["echo", 1])


def test_sync_wrapper_and_env():
    result = run_command_sync(["sh", "-c", "echo $ONLY_THIS"], env={"ONLY_THIS": "yes", "PATH": os.environ["PATH"]})
    assert result.stdout == "yes\n"
