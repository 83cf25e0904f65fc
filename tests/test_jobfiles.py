"""hpchub-job, the user-side file helper, run for real as a test user through sudo.

Tests that plant symlinks or foreign directories run it in a private mount namespace in which a scratch
directory is bind-mounted over carol's home: the command sees its usual home (from the password
database) while carol's real home, shared with other tests, is never touched. The Slurm submit test
uses alice's real home and removes what it made."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.support import REPO

PYTHON = os.environ.get("HPCHUB_VENV", "/opt/hpchub/venv") + "/bin/python"
DAY = 86400


@pytest.fixture(scope="module")
def package_dir() -> Iterator[Path]:
    """A copy of this checkout's hpchub package that the test users can read (the checkout may not be)."""
    scratch = Path(tempfile.mkdtemp(prefix="hpchub-jobfiles-pkg-"))
    shutil.copytree(REPO / "hpchub", scratch / "hpchub", ignore=shutil.ignore_patterns("__pycache__"))
    for directory, _, files in os.walk(scratch):
        os.chmod(directory, 0o755)
        for name in files:
            os.chmod(os.path.join(directory, name), 0o644)
    yield scratch
    shutil.rmtree(scratch)


def job_command(package: Path, *args: str) -> list[str]:
    return ["env", f"PYTHONPATH={package}", PYTHON, "-m", "hpchub.job.jobfiles", *args]


def run_as(user: str, package: Path, *args: str, input: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(["sudo", "-n", "-u", user, "--", *job_command(package, *args)], input=input,
                          capture_output=True, text=True, timeout=60, cwd="/")


class PrivateHome:
    """A scratch directory that stands in for ``user``'s home while the command runs."""

    def __init__(self, user: str, package: Path) -> None:
        self.user = user
        self.package = package
        self.account = pwd.getpwnam(user)
        self.home = self.account.pw_dir  # the path the command sees
        self.path = Path(tempfile.mkdtemp(prefix="hpchub-jobfiles-home-"))  # where it really is
        os.chown(self.path, self.account.pw_uid, self.account.pw_gid)
        self.path.chmod(0o755)

    def run(self, *args: str, input: str = "", timeout: float = 60) -> subprocess.CompletedProcess:
        return self.run_as_user(job_command(self.package, *args), input=input, timeout=timeout)

    def run_as_user(self, argv: list[str], input: str = "", timeout: float = 60) -> subprocess.CompletedProcess:
        mount_then_run = 'mount --bind "$1" "$2" && shift 2 && exec "$@"'
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", mount_then_run, "sh",
                str(self.path), self.home, "sudo", "-n", "-u", self.user, "--", *argv]
        return subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, cwd="/")

    def make(self, relative: str, *, text: str | None = None, link_to: str | None = None, owner: str | None = None,
             mode: int = 0o700) -> Path:
        """Plant a directory, a file (``text``) or a symlink (``link_to``) as the user (or ``owner``) would."""
        path = self.path / relative
        if link_to is not None:
            path.symlink_to(link_to)
        elif text is not None:
            path.write_text(text)
            path.chmod(0o600)
        else:
            path.mkdir(mode=mode)
            path.chmod(mode)
        account = pwd.getpwnam(owner) if owner else self.account
        os.lchown(path, account.pw_uid, account.pw_gid)
        return path

    def tree(self) -> dict[str, str]:
        """Every entry below the home, relative path -> kind/content, for 'nothing changed' checks."""
        found = {}
        for directory, dirs, files in os.walk(self.path):
            for name in dirs + files:
                path = Path(directory, name)
                relative = str(path.relative_to(self.path))
                if path.is_symlink():
                    found[relative] = "-> " + os.readlink(path)
                elif path.is_dir():
                    found[relative] = "dir"
                else:
                    found[relative] = path.read_text()
        return found


@pytest.fixture
def carol_home(package_dir) -> Iterator[PrivateHome]:
    home = PrivateHome("carol", package_dir)
    yield home
    shutil.rmtree(home.path)


def files_request(**files: str) -> str:
    return json.dumps({"files": files})


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_prepare_writes_user_only_files_in_user_only_dirs(carol_home):
    result = carol_home.run("prepare", "srv-1", input=files_request(**{"env": "TOKEN=s3cret\n", "tls.key": "KEY"}))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"dir": f"{carol_home.home}/.hpchub/jobs/srv-1",
                                         "logs": f"{carol_home.home}/.hpchub/logs"}
    hpchub = carol_home.path / ".hpchub"
    for directory in (hpchub, hpchub / "logs", hpchub / "jobs", hpchub / "jobs/srv-1"):
        assert mode_of(directory) == 0o700 and directory.lstat().st_uid == carol_home.account.pw_uid, directory
    env, key = hpchub / "jobs/srv-1/env", hpchub / "jobs/srv-1/tls.key"
    assert (env.read_text(), key.read_text()) == ("TOKEN=s3cret\n", "KEY")
    assert mode_of(env) == mode_of(key) == 0o600 and env.stat().st_uid == carol_home.account.pw_uid

    again = carol_home.run("prepare", "srv-1", input=files_request(env="TOKEN=new\n"))
    assert again.returncode == 0, again.stderr
    assert sorted(os.listdir(hpchub / "jobs/srv-1")) == ["env"] and env.read_text() == "TOKEN=new\n"


def test_prepare_writes_files_in_subdirectories_made_user_only(carol_home):
    # The job side's bundle (hpchub.core.bundle) comes as files in subdirectories of the job directory.
    files = {"env": "TOKEN=s3cret\n", "python/hpchub_job/__init__.py": "", "python/hpchub_job/extension.py": "X = 1\n",
             "python/hpchub_job-0.1.0.dist-info/entry_points.txt": "",
             "jupyter/labextensions/hpchub-walltime/static/remoteEntry.0a1b.js": "var x;\n"}
    result = carol_home.run("prepare", "srv-2", input=json.dumps({"files": files}))
    assert result.returncode == 0, result.stderr
    job = carol_home.path / ".hpchub/jobs/srv-2"
    for name, text in files.items():
        assert (job / name).read_text() == text and mode_of(job / name) == 0o600
    for directory in ("python", "python/hpchub_job", "python/hpchub_job-0.1.0.dist-info", "jupyter",
                      "jupyter/labextensions", "jupyter/labextensions/hpchub-walltime",
                      "jupyter/labextensions/hpchub-walltime/static"):
        assert mode_of(job / directory) == 0o700 and (job / directory).lstat().st_uid == carol_home.account.pw_uid


def test_a_subdirectory_swapped_for_a_link_after_the_check_is_not_followed(carol_home):
    carol_home.make("elsewhere")
    result = carol_home.run_as_user(["env", f"PYTHONPATH={carol_home.package}", PYTHON, "-c", SWAP_AFTER_CHECK, "python",
                                     "prepare", "k"], input=files_request(**{"python/m.py": "X = 1\n"}))
    shown = f"{carol_home.home}/.hpchub/jobs/k/python"
    assert result.returncode == 2 and f"hpchub-job: {shown} cannot be opened as a directory" in result.stderr
    assert os.listdir(carol_home.path / "elsewhere") == []


DIRS_USED = {"prepare": {"jobs", "logs"}, "remove": {"jobs"}, "tail": {"logs"}, "clean": {"jobs", "logs"}}


@pytest.mark.parametrize("linked", [".hpchub", ".hpchub/jobs", ".hpchub/logs"])
@pytest.mark.parametrize("args", [["prepare", "k"], ["remove", "k"], ["tail", "x.log", "5"], ["clean", "0"]])
def test_a_symlinked_directory_is_refused_and_nothing_is_written_through_it(carol_home, linked, args):
    carol_home.make("elsewhere")
    carol_home.make("elsewhere/k")
    carol_home.make("elsewhere/k/env", text="TOKEN=old\n")
    carol_home.make("elsewhere/x.log", text="private\n")
    if linked != ".hpchub":
        carol_home.make(".hpchub")
    carol_home.make(linked, link_to=os.path.relpath(carol_home.path / "elsewhere", (carol_home.path / linked).parent))
    before = carol_home.tree()

    result = carol_home.run(*args, input=files_request(env="TOKEN=s3cret\n"))

    if linked == ".hpchub" or linked.split("/")[1] in DIRS_USED[args[0]]:
        assert result.returncode == 2 and result.stdout == ""
        refusal = f"{carol_home.home}/{linked} is a symlink; hpchub-job does not follow links under ~/.hpchub"
        assert result.stderr == f"hpchub-job: {refusal}\n"
    else:  # the other directory is never opened: its link is left alone
        assert result.returncode in (0, 1), result.stderr
    after = carol_home.tree()
    assert {path: after.get(path) for path in before} == before  # the link and everything behind it as they were
    assert set(after) - set(before) <= {".hpchub/logs"}  # prepare may have made logs before it found jobs linked


SWAP_AFTER_CHECK = """
import os, sys
from hpchub.job import jobfiles

real_stat = os.stat

def stat_then_swap(path, *args, **kwargs):
    # Let the check see the real directory, then swap it for a link before the command opens it.
    found = real_stat(path, *args, **kwargs)
    if path == sys.argv[1] and kwargs.get("dir_fd") is not None:
        os.rename(path, "moved", src_dir_fd=kwargs["dir_fd"], dst_dir_fd=kwargs["dir_fd"])
        target = {".hpchub": "elsewhere", "jobs": "../elsewhere", "python": "../../../elsewhere"}[path]
        os.symlink(target, path, dir_fd=kwargs["dir_fd"])
    return found

jobfiles.os.stat = stat_then_swap
sys.exit(jobfiles.main(sys.argv[2:]))
"""


@pytest.mark.parametrize("swapped", [".hpchub", "jobs"])
def test_a_directory_swapped_for_a_link_after_the_check_is_not_followed(carol_home, swapped):
    carol_home.make("elsewhere")
    carol_home.make(".hpchub")
    carol_home.make(".hpchub/jobs")
    carol_home.make(".hpchub/logs")

    result = carol_home.run_as_user(["env", f"PYTHONPATH={carol_home.package}", PYTHON, "-c", SWAP_AFTER_CHECK, swapped,
                                     "prepare", "k"], input=files_request(env="TOKEN=s3cret\n"))

    shown = f"{carol_home.home}/.hpchub" + ("" if swapped == ".hpchub" else "/jobs")
    assert result.returncode == 2 and f"hpchub-job: {shown} cannot be opened as a directory" in result.stderr
    assert os.listdir(carol_home.path / "elsewhere") == []


def test_a_planted_env_symlink_is_replaced_and_its_target_untouched(carol_home):
    carol_home.make("precious.txt", text="my thesis\n")
    for directory in (".hpchub", ".hpchub/jobs", ".hpchub/jobs/k"):
        carol_home.make(directory)
    carol_home.make(".hpchub/jobs/k/env", link_to="../../../precious.txt")

    result = carol_home.run("prepare", "k", input=files_request(env="TOKEN=s3cret\n"))

    assert result.returncode == 0, result.stderr
    assert (carol_home.path / "precious.txt").read_text() == "my thesis\n"
    env = carol_home.path / ".hpchub/jobs/k/env"
    assert not env.is_symlink() and env.read_text() == "TOKEN=s3cret\n" and mode_of(env) == 0o600


@pytest.mark.parametrize("planted, problem", [
    ({"owner": "bob", "mode": 0o777}, "is owned by uid"),
    ({"text": "not a dir\n"}, "is not a directory"),
])
def test_an_hpchub_dir_of_another_user_or_not_a_dir_is_refused(carol_home, planted, problem):
    carol_home.make(".hpchub", **planted)
    before = carol_home.tree()

    result = carol_home.run("prepare", "k", input=files_request(env="TOKEN=s3cret\n"))

    assert result.returncode == 2 and f"{carol_home.home}/.hpchub {problem}" in result.stderr
    assert carol_home.tree() == before


@pytest.mark.parametrize("args, stdin", [
    (["remove", "../x"], ""),
    (["remove", "a/b"], ""),
    (["remove", ".hidden"], ""),
    (["remove", ""], ""),
    (["remove", "x" * 201], ""),
    (["prepare", "../x"], files_request(env="x")),
    (["prepare", "k"], files_request(**{"../env": "x"})),
    (["prepare", "k"], files_request(**{".env": "x"})),
    (["prepare", "k"], files_request(**{"a/../env": "x"})),
    (["prepare", "k"], files_request(**{"a/./env": "x"})),
    (["prepare", "k"], files_request(**{"a//env": "x"})),
    (["prepare", "k"], files_request(**{"/tmp/env": "x"})),
    (["prepare", "k"], files_request(**{"a/": "x"})),
    (["prepare", "k"], files_request(**{"a/.env": "x"})),
    (["prepare", "k"], files_request(**{".a/env": "x"})),
    (["prepare", "k"], files_request(**{"a\\b": "x"})),
    (["prepare", "k"], files_request(**{"a/b/c/d/e/f/g": "x"})),
    (["prepare", "k"], files_request(**{"a": "x", "a/b": "y"})),
    (["prepare", "k"], files_request(**{f"f{i}": "x" for i in range(101)})),
    (["prepare", "k"], json.dumps({"files": {"env": 1}})),
    (["prepare", "k"], json.dumps({"files": {}, "script": "#!/bin/sh"})),
    (["prepare", "k"], "{not json"),
    (["prepare", "k"], ""),
    (["submit", "k", "slurm"], files_request(env="x")),
    (["submit", "k", "pbs"], json.dumps({"files": {}, "script": "#!/bin/sh"})),
    (["tail", "../x.log", "5"], ""),
    (["tail", "x.txt", "5"], ""),
    (["tail", "x.log", "0"], ""),
    (["tail", "x.log", "1001"], ""),
    (["tail", "x.log", "-1"], ""),
    (["clean", "-1"], ""),
    (["clean", "1.5"], ""),
    (["remove"], ""),
    (["rm", "-rf", "/"], ""),
    ([], ""),
])
def test_bad_names_and_requests_are_refused_before_anything_is_written(carol_home, args, stdin):
    result = carol_home.run(*args, input=stdin)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("hpchub-job: ") and result.stdout == ""
    assert carol_home.tree() == {}


def make_logs(home: PrivateHome) -> Path:
    home.make(".hpchub")
    return home.make(".hpchub/logs")


def test_tail_prints_the_last_lines_within_the_last_64_kib(carol_home):
    logs = make_logs(carol_home)
    carol_home.make(".hpchub/logs/short.log", text="one\ntwo\nthree")  # no final newline: still a line
    carol_home.make(".hpchub/logs/long.log", text="".join(f"line {n:05d} {'x' * 90}\n" for n in range(3000)))

    assert carol_home.run("tail", "short.log", "2").stdout == "two\nthree"
    assert carol_home.run("tail", "short.log", "10").stdout == "one\ntwo\nthree"
    last = carol_home.run("tail", "long.log", "3")
    assert last.returncode == 0 and last.stdout.splitlines() == [f"line {n:05d} {'x' * 90}" for n in (2997, 2998, 2999)]
    window = carol_home.run("tail", "long.log", "1000").stdout
    assert len(window.encode()) <= 64 * 1024 and window.endswith("line 02999 " + "x" * 90 + "\n")
    assert all(line.startswith("line ") and len(line) == 101 for line in window.splitlines())  # no cut first line
    assert (logs / "long.log").stat().st_size > 64 * 1024

    missing = carol_home.run("tail", "gone.log", "5")
    assert missing.returncode == 1 and f"no log {carol_home.home}/.hpchub/logs/gone.log" in missing.stderr


def test_tail_refuses_a_symlinked_log_and_a_fifo(carol_home):
    make_logs(carol_home)
    carol_home.make("secret.txt", text="not for the hub\n")
    carol_home.make(".hpchub/logs/x.log", link_to="../../secret.txt")
    linked = carol_home.run("tail", "x.log", "5")
    assert linked.returncode == 2 and linked.stdout == "" and "x.log is a symlink" in linked.stderr

    os.mkfifo(carol_home.path / ".hpchub/logs/pipe.log")
    os.chown(carol_home.path / ".hpchub/logs/pipe.log", carol_home.account.pw_uid, carol_home.account.pw_gid)
    fifo = carol_home.run("tail", "pipe.log", "5", timeout=20)  # must not wait for a writer
    assert fifo.returncode == 2 and "pipe.log is not a regular file" in fifo.stderr


def test_remove_takes_the_job_dir_and_never_follows_links(carol_home):
    carol_home.make("data")
    carol_home.make("data/results.csv", text="1,2,3\n")
    assert carol_home.run("prepare", "k", input=files_request(env="x")).returncode == 0
    carol_home.make(".hpchub/jobs/k/data", link_to="../../../data")
    carol_home.make(".hpchub/jobs/k/results.csv", link_to="../../../data/results.csv")
    carol_home.make(".hpchub/jobs/linked", link_to="../../data")

    for key in ("k", "linked", "never-there"):
        result = carol_home.run("remove", key)
        assert result.returncode == 0 and result.stderr == "", (key, result.stderr)

    assert os.listdir(carol_home.path / ".hpchub/jobs") == []
    assert (carol_home.path / "data/results.csv").read_text() == "1,2,3\n"


def test_clean_removes_old_logs_and_job_dirs_only(carol_home):
    logs = make_logs(carol_home)
    jobs = carol_home.make(".hpchub/jobs")
    carol_home.make("keep")
    for name in ("old.log", "new.log", "old.txt"):
        carol_home.make(f".hpchub/logs/{name}", text="output\n")
    carol_home.make(".hpchub/logs/link.log", link_to="../../keep")
    for name in ("old", "new"):
        carol_home.make(f".hpchub/jobs/{name}")
        carol_home.make(f".hpchub/jobs/{name}/env", text="TOKEN=x\n")
    carol_home.make(".hpchub/jobs/oldlink", link_to="../../keep")
    ten_days_ago = time.time() - 10 * DAY
    for path in (logs / "old.log", logs / "old.txt", logs / "link.log", jobs / "old", jobs / "oldlink"):
        os.utime(path, (ten_days_ago, ten_days_ago), follow_symlinks=False)

    week = carol_home.run("clean", "7")
    assert week.returncode == 0 and json.loads(week.stdout) == {"removed_logs": 1, "removed_jobs": 1}
    assert sorted(os.listdir(logs)) == ["link.log", "new.log", "old.txt"]
    assert sorted(os.listdir(jobs)) == ["new", "oldlink"]

    everything = carol_home.run("clean", "0")
    assert everything.returncode == 0 and json.loads(everything.stdout) == {"removed_logs": 1, "removed_jobs": 1}
    assert sorted(os.listdir(logs)) == ["link.log", "old.txt"] and os.listdir(jobs) == ["oldlink"]
    assert (carol_home.path / "keep").is_dir()


def test_root_is_refused(package_dir, tmp_path):
    result = subprocess.run(job_command(package_dir, "prepare", "k"), input=files_request(env="x"),
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 2 and result.stderr == "hpchub-job: hpchub-job must run as the job's user, not root\n"


def test_a_system_account_is_refused(package_dir):
    """Below UID_MIN of /etc/login.defs (daemon: uid 1) nothing is done, whoever started the command."""
    result = run_as("daemon", package_dir, "prepare", "k", input=files_request(env="x"))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("hpchub-job: hpchub-job runs as the job's user, not as a system account: uid 1 is "
                                    "below UID_MIN 1000 of /etc/login.defs")


def job_script(log: str, *lines: str, partition: str = "debug") -> str:
    return "\n".join(["#!/bin/bash", f"#SBATCH --partition={partition}", "#SBATCH --time=1",
                      "#SBATCH --job-name=hpchub-jobfiles-test", f"#SBATCH --output={log}", *lines, ""])


def sge_job_script(log: str, *lines: str) -> str:
    return "\n".join(["#!/bin/bash", "#$ -S /bin/bash", "#$ -q short.q", "#$ -N hpchub-jobfiles-test", "#$ -j y",
                      f"#$ -o {log}", *lines, ""])


@pytest.mark.parametrize("scheduler, cluster_fixture, script_for, cancel", [
    pytest.param("slurm", "slurm_cluster", job_script, "scancel", marks=pytest.mark.slurm),
    pytest.param("sge", "sge_cluster", sge_job_script, "qdel", marks=pytest.mark.sge),
])
def test_submit_writes_the_files_and_submits_the_job(request, package_dir, scheduler, cluster_fixture, script_for,
                                                      cancel):
    request.getfixturevalue(cluster_fixture)
    account = pwd.getpwnam("alice")
    key = f"jobfiles-test-{uuid.uuid4().hex[:12]}"
    jobs = Path(account.pw_dir, ".hpchub/jobs")
    jobs_existed = jobs.exists()
    log = Path(account.pw_dir, ".hpchub/logs", f"{key}.log")
    secret = f"TOKEN={uuid.uuid4().hex}"
    script = script_for(str(log), f'cat "$HOME/.hpchub/jobs/{key}/env"', "pwd")
    submission = {"files": {"env": secret + "\n"}, "script": script}
    job_id = ""
    try:
        result = run_as("alice", package_dir, "submit", key, scheduler, input=json.dumps(submission))
        assert result.returncode == 0, result.stderr
        job_id = result.stdout.strip()
        assert job_id.isdigit(), result.stdout
        assert mode_of(jobs / key / "env") == 0o600 and (jobs / key / "env").stat().st_uid == account.pw_uid

        deadline, output = time.monotonic() + 120, ""
        while time.monotonic() < deadline and account.pw_dir not in output:
            output = run_as("alice", package_dir, "tail", log.name, "10").stdout
            time.sleep(0.5)
        assert output.splitlines() == [secret, account.pw_dir]  # the job read its file; it ran in the home
    finally:
        if job_id:
            subprocess.run(["sudo", "-n", "-u", "alice", cancel, job_id], capture_output=True, timeout=60)
        removed = run_as("alice", package_dir, "remove", key)
        log.unlink(missing_ok=True)
        if not jobs_existed:
            with contextlib.suppress(OSError):  # only if nobody else put anything there meanwhile
                jobs.rmdir()
    assert removed.returncode == 0 and not (jobs / key).exists()


@pytest.mark.slurm
def test_a_failed_submit_passes_the_error_through_and_leaves_no_job_dir(slurm_cluster, carol_home):
    script = job_script("/dev/null", "true", partition="no-such-partition")
    direct = subprocess.run(["sudo", "-n", "-u", "carol", "sbatch", "--parsable"], input=script,
                            capture_output=True, text=True, timeout=60, cwd="/")
    assert direct.returncode != 0

    result = carol_home.run("submit", "k", "slurm", input=json.dumps({"files": {"env": "TOKEN=x\n"}, "script": script}))

    assert (result.returncode, result.stdout, result.stderr) == (direct.returncode, direct.stdout, direct.stderr)
    assert "invalid partition" in result.stderr.lower()
    assert os.listdir(carol_home.path / ".hpchub/jobs") == []
