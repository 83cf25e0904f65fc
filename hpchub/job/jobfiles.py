"""``hpchub-job``: the user-side file work of a job under ``~/.hpchub``, run AS the job's user.

The hub starts it with ``sudo -n -u USER -- hpchub-job ...`` (or over SSH on a login node), so the hub
never writes into a user's home with its own rights and its sudoers rule names this command and the
scheduler commands only, not ``tee``/``install``/``rm``/``tail`` with any arguments. It takes no paths
and no command lines from its caller: fixed subcommands, names checked against narrow patterns, the home
directory from the password database, the submit command from the scheduler's table
(scheduler_commands.py). Standard library only, like all of hpchub/job/. Everything it
touches is opened relative to directory descriptors without following symlinks and must be owned by
the user, so a symlink planted in ``~/.hpchub`` (or swapped in between a check and a write) cannot
redirect a write or a removal, and secrets are created mode 0600 so they are never readable by others.
It refuses to run as root or as any account below UID_MIN of this host's /etc/login.defs (1000 without
it), so no hub, sudoers rule or SSH key can make it work for a system account.

    hpchub-job prepare KEY            stdin: {"files": {NAME: TEXT, ...}}; prints {"dir": ..., "logs": ...}
                                      (NAME: a file of the job directory, perhaps in subdirectories: a/b/c.py)
    hpchub-job submit KEY SCHEDULER   stdin: {"files": {...}, "script": TEXT}; prints what the scheduler prints
    hpchub-job estimate SCHEDULER     stdin: {"files": {}, "script": TEXT}; prints {"returncode": N, "output": TEXT,
                                      "context": [TEXT, ...]}: when the script would start, asked without
                                      submitting it, and what the scheduler says that the answer may need
    hpchub-job remove KEY
    hpchub-job tail LOGNAME LINES
    hpchub-job clean KEEP_DAYS        prints {"removed_logs": N, "removed_jobs": M}

Exit codes: 0 ok, 1 operational failure (missing log; a failed submit passes the scheduler's code), 2 refused.
"""

from __future__ import annotations

import errno
import json
import os
import pwd
import re
import shutil
import stat
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

from .logindefs import LOGIN_DEFS, login_defs_uid_min
from .scheduler_commands import for_scheduler

KEY_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,199}")
LOG_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,250}\.log")
# One component of a job file's name (``a/b/c.py`` has three): never ``.``, ``..`` or a hidden name.
FILE_NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
MAX_FILE_DEPTH = 6  # components of one job file's name (the job side's bundle needs 5)
MAX_FILES = 100  # files of one job (the bundle is about 15)
MAX_TAIL_LINES = 1000
TAIL_WINDOW = 64 * 1024  # a tail reads at most this much of the end of a log
MAX_STDIN = 4 * 1024 * 1024  # secrets, certificates and a job script fit easily

HPCHUB_DIR = ".hpchub"
LOGS_DIR = "logs"
JOBS_DIR = "jobs"

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

USAGE = """usage: hpchub-job prepare KEY            (stdin: {"files": {NAME: TEXT}})
       hpchub-job submit KEY SCHEDULER   (stdin: {"files": {NAME: TEXT}, "script": TEXT[, "keep_days": N]};
                                         SCHEDULER: slurm|sge; keep_days: then clean KEEP_DAYS)
       hpchub-job estimate SCHEDULER     (stdin: {"files": {}, "script": TEXT})
       hpchub-job remove KEY
       hpchub-job tail LOGNAME LINES
       hpchub-job clean KEEP_DAYS"""


class Refused(Exception):
    """A request this command will not carry out (exit 2)."""


class Failed(Exception):
    """A request that could not be carried out (exit 1)."""


class UserHome:
    """The running user's ``~/.hpchub`` tree, reached through descriptors that never follow a link."""

    def __init__(self) -> None:
        self.uid = os.getuid()
        if self.uid == 0 or os.geteuid() == 0:
            raise Refused("hpchub-job must run as the job's user, not root")
        # The minimum is this host's own (an admin's file), never the caller's: a hub reaching this
        # command over SSH or through a sudoers rule still never acts as a system account.
        uid_min = login_defs_uid_min()
        if self.uid < uid_min:
            raise Refused(f"hpchub-job runs as the job's user, not as a system account: uid {self.uid} is below "
                          f"UID_MIN {uid_min} of {LOGIN_DEFS}")
        try:
            self.home = pwd.getpwuid(self.uid).pw_dir
        except KeyError:
            raise Refused(f"uid {self.uid} has no entry in the password database") from None
        self.hpchub_path = os.path.join(self.home, HPCHUB_DIR)

    def path(self, *names: str) -> str:
        return os.path.join(self.hpchub_path, *names)

    @contextmanager
    def hpchub_dir(self, create: bool) -> Iterator[int | None]:
        """``~/.hpchub`` as a descriptor; None when it is missing and ``create`` is false."""
        # The home directory itself is the administrator's (it may be a link to /data/home/...).
        home_fd = os.open(self.home, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            with self.subdir(home_fd, HPCHUB_DIR, self.hpchub_path, create) as fd:
                yield fd
        finally:
            os.close(home_fd)

    @contextmanager
    def hpchub_subdir(self, name: str, create: bool) -> Iterator[int | None]:
        """``~/.hpchub/NAME`` as a descriptor; None when it (or ~/.hpchub) is missing and not created."""
        with self.hpchub_dir(create) as hpchub_fd:
            if hpchub_fd is None:
                yield None
                return
            with self.subdir(hpchub_fd, name, self.path(name), create) as fd:
                yield fd

    @contextmanager
    def subdir(self, parent_fd: int, name: str, shown_path: str, create: bool) -> Iterator[int | None]:
        """Open directory ``name`` under ``parent_fd``: never through a symlink, only if the user owns it.
        Created with mode 0700 when missing and ``create`` is set."""
        found = lstat_or_none(parent_fd, name)
        if found is None and create:
            try:
                os.mkdir(name, 0o700, dir_fd=parent_fd)
            except FileExistsError:
                pass  # made meanwhile: the checks below decide
            found = lstat_or_none(parent_fd, name)
        if found is None:
            yield None
            return
        if stat.S_ISLNK(found.st_mode):
            raise Refused(f"{shown_path} is a symlink; hpchub-job does not follow links under ~/{HPCHUB_DIR}")
        if not stat.S_ISDIR(found.st_mode):
            raise Refused(f"{shown_path} is not a directory")
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except OSError as error:  # ELOOP/ENOTDIR: it was swapped after the check above
            raise Refused(f"{shown_path} cannot be opened as a directory without following links: {error.strerror}") \
                from None
        try:
            opened = os.fstat(fd)
            if opened.st_uid != self.uid:
                raise Refused(f"{shown_path} is owned by uid {opened.st_uid}, not by the user (uid {self.uid})")
            yield fd
        finally:
            os.close(fd)


def lstat_or_none(parent_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def check_name(kind: str, value: str, pattern: re.Pattern[str]) -> str:
    if not pattern.fullmatch(value):
        raise Refused(f"invalid {kind} {value!r}: it must match {pattern.pattern}")
    return value


def file_name_parts(name: str) -> list[str]:
    """The components of a job file's name (``python/hpchub_job/__init__.py``): at most MAX_FILE_DEPTH,
    each matching FILE_NAME_PATTERN, so no name climbs out of the job directory or hides in it."""
    parts = name.split("/")
    if len(parts) > MAX_FILE_DEPTH:
        raise Refused(f"invalid file name {name!r}: more than {MAX_FILE_DEPTH} components")
    for part in parts:
        if not FILE_NAME_PATTERN.fullmatch(part):
            raise Refused(f"invalid file name {name!r}: each component must match {FILE_NAME_PATTERN.pattern}")
    return parts


def parse_count(kind: str, value: str, lowest: int, highest: int) -> int:
    if not re.fullmatch(r"[0-9]{1,9}", value) or not lowest <= int(value) <= highest:
        raise Refused(f"invalid {kind} {value!r}: a whole number from {lowest} to {highest}")
    return int(value)


def read_request(required: Sequence[str], optional: Sequence[str] = ()) -> dict[str, Any]:
    """The JSON object on stdin: ``files`` (name -> text), the keys in ``required`` (strings) and
    perhaps those in ``optional`` (whole numbers), nothing else."""
    raw = sys.stdin.buffer.read(MAX_STDIN + 1)
    if len(raw) > MAX_STDIN:
        raise Refused(f"the request on stdin is larger than {MAX_STDIN} bytes")
    try:
        request = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise Refused(f"stdin is not a JSON request: {error}") from None
    expected = {"files", *required}
    if not isinstance(request, dict) or not expected <= set(request) <= expected | set(optional):
        raise Refused(f"stdin must be a JSON object with the keys {sorted(expected)}"
                      + (f" and perhaps {sorted(optional)}" if optional else "") + ", nothing else")
    files = request["files"]
    if not isinstance(files, dict):
        raise Refused('"files" must be a JSON object of file name -> text')
    if len(files) > MAX_FILES:
        raise Refused(f'"files" holds {len(files)} files, more than {MAX_FILES}')
    directories = {"/".join(parts[:depth]) for parts in map(file_name_parts, files) for depth in range(1, len(parts))}
    for name, text in files.items():
        if name in directories:
            raise Refused(f"invalid file name {name!r}: it is also a directory of another file")
        if not isinstance(text, str):
            raise Refused(f'"files"[{name!r}] must be a string')
    for key in required:
        if not isinstance(request[key], str):
            raise Refused(f'"{key}" must be a string')
    for key in optional:
        value = request.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100000:
            raise Refused(f'"{key}" must be a whole number from 0 to 100000')
    return request


def remove_entry(parent_fd: int, name: str) -> bool:
    """Remove ``name`` under ``parent_fd`` and, for a directory, everything in it, never following a
    link (shutil.rmtree with dir_fd walks by descriptors on Linux). False when nothing was there."""
    found = lstat_or_none(parent_fd, name)
    if found is None:
        return False
    if stat.S_ISDIR(found.st_mode):
        shutil.rmtree(name, dir_fd=parent_fd)  # type: ignore[call-arg]  # typeshed lacks dir_fd
    else:
        os.unlink(name, dir_fd=parent_fd)
    return True


def write_new_file(dir_fd: int, name: str, text: str) -> None:
    """Create ``name`` (it must not exist, not even as a link) with mode 0600 from the first moment."""
    fd = os.open(name, _NEW_FILE_FLAGS, 0o600, dir_fd=dir_fd)
    try:
        os.fchmod(fd, 0o600)  # the umask may only have narrowed it; make it exact
        data = text.encode("utf-8")
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)


def prepare(user: UserHome, key: str, files: dict[str, str]) -> dict[str, str]:
    """A fresh ``~/.hpchub/jobs/KEY`` holding ``files``; make sure ``~/.hpchub/logs`` exists."""
    with user.hpchub_subdir(LOGS_DIR, create=True):
        pass
    with user.hpchub_subdir(JOBS_DIR, create=True) as jobs_fd:
        assert jobs_fd is not None
        remove_entry(jobs_fd, key)
        try:
            os.mkdir(key, 0o700, dir_fd=jobs_fd)
        except FileExistsError:
            raise Refused(f"{user.path(JOBS_DIR, key)} reappeared while it was being replaced") from None
        with user.subdir(jobs_fd, key, user.path(JOBS_DIR, key), create=False) as key_fd:
            assert key_fd is not None
            os.fchmod(key_fd, 0o700)
            for name, text in files.items():
                write_job_file(user, key_fd, user.path(JOBS_DIR, key), file_name_parts(name), text)
    return {"dir": user.path(JOBS_DIR, key), "logs": user.path(LOGS_DIR)}


def write_job_file(user: UserHome, key_fd: int, key_path: str, parts: list[str], text: str) -> None:
    """Write the job file ``parts`` (a name's components) under the fresh job directory ``key_fd``:
    its directories made 0700 and opened by descriptor, never through a link."""
    with ExitStack() as opened:
        dir_fd, shown = key_fd, key_path
        for directory in parts[:-1]:
            shown = os.path.join(shown, directory)
            made = opened.enter_context(user.subdir(dir_fd, directory, shown, create=True))
            assert made is not None  # create=True
            dir_fd = made
        try:
            write_new_file(dir_fd, parts[-1], text)
        except FileExistsError:
            raise Refused(f"{os.path.join(shown, parts[-1])} appeared in a fresh job directory") from None


def remove(user: UserHome, key: str) -> None:
    with user.hpchub_subdir(JOBS_DIR, create=False) as jobs_fd:
        if jobs_fd is not None:
            remove_entry(jobs_fd, key)


def submit(user: UserHome, key: str, scheduler: str, files: dict[str, str], script: str) -> int:
    """Prepare the job's files, then run the scheduler's own submit command with ``script`` on stdin.
    Its output and exit code are the caller's answer; after a failure no job directory is left.
    The user's own scheduler settings (SBATCH_* in their shell, ~/.sge_request) do not reach the
    job: the scheduler's table (scheduler_commands) takes them out of the environment and the script."""
    import subprocess  # only this subcommand runs anything: keep the start-up of the others small

    try:
        backend = for_scheduler(scheduler)
    except ValueError as error:
        raise Refused(str(error)) from None
    argv = backend.submit_argv()
    prepare(user, key, files)
    sys.stdout.flush()
    try:
        returncode = subprocess.run(argv, input=backend.submit_script(script).encode("utf-8"), cwd=user.home,
                                    env=backend.submit_environment(os.environ)).returncode
    except OSError as error:
        print(f"hpchub-job: cannot run {argv[0]}: {error.strerror}", file=sys.stderr)
        returncode = 1
    if returncode != 0:
        remove(user, key)
    return returncode if returncode >= 0 else 128 - returncode  # killed by a signal: as a shell reports it


ESTIMATE_TIMEOUT = 30  # seconds; the hub gives up sooner, this only ends a scheduler client that hangs


def estimate(user: UserHome, scheduler: str, script: str) -> dict[str, Any]:
    """Run the scheduler's start estimate (``sbatch --test-only``, ``qsub -w p``) for ``script``, as the
    user and as ``submit`` would submit it (same environment, same script), and hand back its exit
    code and its stdout and stderr together, and the stdout of the read-only questions the backend
    asks after it (``estimate_context_argvs``): the answer is the hub's backend to read. Nothing is
    submitted and nothing is written."""
    import subprocess
    from datetime import datetime

    try:
        backend = for_scheduler(scheduler)
    except ValueError as error:
        raise Refused(str(error)) from None
    argv = backend.estimate_argv()
    try:
        done = subprocess.run(argv, input=backend.submit_script(script).encode("utf-8"), cwd=user.home,
                              env=backend.submit_environment(os.environ), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=ESTIMATE_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise Failed(f"{argv[0]} gave no answer within {ESTIMATE_TIMEOUT} s") from None
    except OSError as error:
        raise Failed(f"cannot run {argv[0]}: {error.strerror}") from None
    output = done.stdout.decode("utf-8", "replace")[-16384:]
    # The scheduler's own view the answer may need (Slurm: waiting jobs' planned starts, idle CPUs),
    # asked the same way; a failed one is left out, never a reason to fail the estimate.
    context = []
    for context_argv in backend.estimate_context_argvs(output, datetime.now()):
        try:
            more = subprocess.run(context_argv, stdin=subprocess.DEVNULL, cwd=user.home,
                                  env=backend.submit_environment(os.environ), stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, timeout=ESTIMATE_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired):
            break
        if more.returncode != 0:
            break
        context.append(more.stdout.decode("utf-8", "replace")[-262144:])
    return {"returncode": done.returncode, "output": output, "context": context}


def tail(user: UserHome, log_name: str, lines: int) -> bytes:
    """The last ``lines`` lines of ``~/.hpchub/logs/LOGNAME``, from at most its last TAIL_WINDOW bytes."""
    shown = user.path(LOGS_DIR, log_name)
    with user.hpchub_subdir(LOGS_DIR, create=False) as logs_fd:
        if logs_fd is None:
            raise Failed(f"no log {shown}: {user.path(LOGS_DIR)} does not exist")
        try:
            # O_NONBLOCK: a FIFO planted under the name must not hang the caller
            fd = os.open(log_name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=logs_fd)
        except FileNotFoundError:
            raise Failed(f"no log {shown}") from None
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise Refused(f"{shown} is a symlink; hpchub-job does not follow links") from None
            raise Refused(f"{shown} cannot be opened: {error.strerror}") from None
    try:
        size = os.fstat(fd)
        if not stat.S_ISREG(size.st_mode):
            raise Refused(f"{shown} is not a regular file")
        start = max(0, size.st_size - TAIL_WINDOW)
        os.lseek(fd, start, os.SEEK_SET)
        chunks = []
        remaining = TAIL_WINDOW
        while remaining > 0:
            chunk = os.read(fd, remaining)
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    finally:
        os.close(fd)
    return last_lines(b"".join(chunks), lines, whole_file=start == 0)


def last_lines(data: bytes, lines: int, whole_file: bool) -> bytes:
    """The last ``lines`` newline-separated lines of ``data``, as ``tail -n`` counts them; a line cut
    by the start of the window is left out."""
    if not data:
        return b""
    ends_with_newline = data.endswith(b"\n")
    parts = (data[:-1] if ends_with_newline else data).split(b"\n")
    if not whole_file and len(parts) > 1:
        parts = parts[1:]
    return b"\n".join(parts[-lines:]) + (b"\n" if ends_with_newline else b"")


def clean(user: UserHome, keep_days: int) -> dict[str, int]:
    """Remove job logs (``logs/*.log`` files) and job directories last modified ``keep_days`` days ago or earlier."""
    cutoff = time.time() - keep_days * 86400
    removed = {"removed_logs": 0, "removed_jobs": 0}
    with user.hpchub_subdir(LOGS_DIR, create=False) as logs_fd:
        if logs_fd is not None:
            for entry in list(os.scandir(logs_fd)):
                if (entry.name.endswith(".log") and entry.is_file(follow_symlinks=False)
                        and entry.stat(follow_symlinks=False).st_mtime <= cutoff):
                    os.unlink(entry.name, dir_fd=logs_fd)
                    removed["removed_logs"] += 1
    with user.hpchub_subdir(JOBS_DIR, create=False) as jobs_fd:
        if jobs_fd is not None:
            for entry in list(os.scandir(jobs_fd)):
                if entry.is_dir(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime <= cutoff:
                    shutil.rmtree(entry.name, dir_fd=jobs_fd)  # type: ignore[call-arg]  # typeshed lacks dir_fd
                    removed["removed_jobs"] += 1
    return removed


def run(args: Sequence[str]) -> int:
    user = UserHome()  # refuses root before anything else
    command, operands = (args[0], list(args[1:])) if args else ("", [])
    arity = {"prepare": 1, "submit": 2, "estimate": 1, "remove": 1, "tail": 2, "clean": 1}
    if command not in arity or len(operands) != arity[command]:
        raise Refused(USAGE)
    if command == "tail":
        log_name = check_name("log name", operands[0], LOG_NAME_PATTERN)
        lines = parse_count("line count", operands[1], 1, MAX_TAIL_LINES)
        sys.stdout.buffer.write(tail(user, log_name, lines))
        return 0
    if command == "clean":
        keep_days = parse_count("number of days", operands[0], 0, 100000)
        print(json.dumps(clean(user, keep_days)))
        return 0
    if command == "estimate":
        request = read_request(("script",))
        if request["files"]:
            raise Refused('an estimate writes no files: "files" must be empty')
        print(json.dumps(estimate(user, operands[0], request["script"])))
        return 0
    key = check_name("job key", operands[0], KEY_PATTERN)
    if command == "remove":
        remove(user, key)
        return 0
    if command == "prepare":
        print(json.dumps(prepare(user, key, read_request(())["files"])))
        return 0
    # keep_days: the hub's log retention, applied in the same call (one sudo per spawn).
    request = read_request(("script",), optional=("keep_days",))
    code = submit(user, key, operands[1], request["files"], request["script"])
    if code == 0 and "keep_days" in request:
        clean(user, request["keep_days"])
    return code


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except Refused as error:
        print(f"hpchub-job: {error}", file=sys.stderr)
        return 2
    except Failed as error:
        print(f"hpchub-job: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"hpchub-job: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
