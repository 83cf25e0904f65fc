"""`hpchub check` beyond the schema: who can change what jobs run, as whom jobs run, and (--live)
whether the real schedulers agree with the site config."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import textwrap

import pytest
from helpers.support import REPO, SITE_CONFIGS
from helpers.support import run_hpchub as hpchub
from test_allocations_real import qrsub

from hpchub.admin.checks import (
    PRIVATE_DATA_JOBS,
    jobfiles_problems,
    live_findings,
    site_findings,
    slurm_private_data_finding,
    slurm_private_data_jobs,
)
from hpchub.core.config import load_site_config, parse_site_config
from hpchub.transports.cluster import default_jobfiles_command

SITE = textwrap.dedent(
    """\
    site: checks test
    clusters:
      main:
        scheduler: slurm
        submit: {via: sudo}
        queues:
          q: {}
    profiles:
      - slug: p
        name: p
        cluster: main
        queue: q
        resources: {walltime: "01:00:00"}
    """
)

def site_warnings(site) -> list[str]:
    return [finding.message for finding in site_findings(site) if finding.level == "warning"]


def site_errors(site) -> list[str]:
    return [finding.message for finding in site_findings(site) if finding.level == "error"]


async def live_problems(site) -> list[str]:
    """What stops the hub from working with a cluster: the errors of live_findings."""
    return [finding.message for finding in await live_findings(site) if finding.level == "error"]


SCONTROL_SHOW_CONFIG = (REPO / "tests" / "data" / "scontrol-show-config.txt").read_text()


def _site_in(directory, text=SITE, templates: bool = True):
    """The site config written into ``directory`` (mode 700, owned by root like pytest's tmp dirs)."""
    path = directory / "site.yaml"
    path.write_text(text + ("templates_dir: templates\n" if templates else ""))
    path.chmod(0o644)
    if templates:
        (directory / "templates" / "partials").mkdir(parents=True, exist_ok=True)
        (directory / "templates" / "partials" / "environment.sh.j2").write_text("module load site\n")
    return path


def test_a_tidy_site_has_no_warnings(tmp_path):
    site = load_site_config(_site_in(tmp_path))
    assert site_warnings(site) == [] and site_errors(site) == []


@pytest.mark.parametrize(
    "target, mode, what",
    [
        ("site.yaml", 0o664, "site config {path} is writable by its group (mode 0664)"),
        ("site.yaml", 0o646, "site config {path} is writable by everyone (mode 0646)"),
        ("templates", 0o777, "templates_dir {path} is writable by its group and everyone (mode 0777)"),
        ("templates/partials", 0o775, "template {path} is writable by its group (mode 0775)"),
        ("templates/partials/environment.sh.j2", 0o666, "template {path} is writable by its group and everyone"),
        (".", 0o777, "site config directory {path} is writable by its group and everyone"),
    ],
)
def test_files_others_can_write_are_warned_about(tmp_path, target, mode, what):
    site = load_site_config(_site_in(tmp_path))
    path = tmp_path / target
    path.chmod(mode)
    warnings = site_warnings(site)
    expected = what.format(path=tmp_path if target == "." else path)
    assert [w for w in warnings if expected in w], warnings
    assert len(warnings) == 1 and "decides what jobs run" in warnings[0]


def test_a_sticky_config_directory_is_fine_but_a_sticky_templates_dir_is_not(tmp_path):
    # In a sticky directory others cannot replace the config, but they can add a template that the
    # site-first lookup would pick up.
    site = load_site_config(_site_in(tmp_path))
    tmp_path.chmod(0o1777)
    (tmp_path / "templates").chmod(0o1777)
    (warning,) = site_warnings(site)
    assert warning.startswith(f"templates_dir {tmp_path / 'templates'} is writable by its group and everyone")


def test_files_owned_by_another_account_are_warned_about(tmp_path):
    site = load_site_config(_site_in(tmp_path))
    alice = pwd.getpwnam("alice")
    template = tmp_path / "templates" / "partials" / "environment.sh.j2"
    os.chown(template, alice.pw_uid, alice.pw_gid)
    os.chown(tmp_path / "site.yaml", alice.pw_uid, alice.pw_gid)
    assert sorted(site_warnings(site)) == sorted([
        f"site config {tmp_path / 'site.yaml'} is owned by alice, not by root or root: its owner decides what jobs run",
        f"template {template} is owned by alice, not by root or root: its owner decides what jobs run",
    ])


def test_a_missing_templates_dir_is_warned_about(tmp_path):
    path = _site_in(tmp_path, templates=False)
    path.write_text(path.read_text() + "templates_dir: site-templates\n")
    assert site_warnings(load_site_config(path)) == [
        f"templates_dir {tmp_path / 'site-templates'} does not exist: only the packaged templates are used"
    ]


LOCAL = SITE.replace("submit: {via: sudo}", "submit: {via: local}")


def test_local_submission_as_root_is_an_error():
    assert os.geteuid() == 0, "the tests run as root"
    assert site_errors(parse_site_config(LOCAL)) == [
        "clusters.main.submit.via: refused: local submission as root would run every user's job as root; "
        "use via: sudo"
    ]


def _in_child_as(user: str, function, *args) -> object:
    """``function(*args)`` in a forked child that runs as ``user`` (modules are imported already,
    so the child reads no files); its JSON result."""
    account = pwd.getpwnam(user)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        status = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(account.pw_gid)
            os.setuid(account.pw_uid)
            os.write(write_end, json.dumps(function(*args)).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        output = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return json.loads(output)


def test_local_submission_as_another_account_is_a_warning_naming_it():
    site = parse_site_config(LOCAL)
    assert _in_child_as("alice", site_warnings, site) == [
        "clusters.main.submit.via: local: all users' jobs run as alice"
    ]
    assert _in_child_as("alice", site_errors, site) == []


def test_check_command_exit_codes_for_warnings_and_errors(tmp_path):
    path = _site_in(tmp_path)
    path.chmod(0o666)
    result = hpchub("check", str(path))
    assert result.returncode == 0, result.stderr
    assert f"warning: {path}: site config {path} is writable by its group and everyone" in result.stderr
    assert f"{path}: ok (" in result.stdout
    path.write_text(LOCAL)
    result = hpchub("check", str(path))
    assert result.returncode == 1 and ": ok (" not in result.stdout
    assert f"{path}: clusters.main.submit.via: refused: local submission as root" in result.stderr


# --- Slurm PrivateData ---

def test_private_data_parse_on_captured_scontrol_output():
    assert "PrivateData             = none\n" in SCONTROL_SHOW_CONFIG
    assert not slurm_private_data_jobs(SCONTROL_SHOW_CONFIG)
    for value, hides_jobs in [("jobs", True), ("accounts,jobs,usage", True), ("usage,users", False), ("all", True),
                              ("reservations", False)]:
        text = SCONTROL_SHOW_CONFIG.replace("PrivateData             = none", f"PrivateData             = {value}")
        assert slurm_private_data_jobs(text) is hides_jobs, value


def test_private_data_jobs_is_an_error_unless_the_account_sees_every_job():
    text = SCONTROL_SHOW_CONFIG.replace("PrivateData             = none", "PrivateData             = jobs,usage")
    assert "SlurmUser               = root(0)\n" in text
    hub = pwd.getpwnam("alice").pw_uid
    finding = slurm_private_data_finding(text, hub)
    assert finding is not None and finding.level == "error" and finding.message == PRIVATE_DATA_JOBS
    assert "Slurm PrivateData=jobs" in PRIVATE_DATA_JOBS and "SlurmUser or an operator" in PRIVATE_DATA_JOBS
    as_slurm_user = text.replace("SlurmUser               = root(0)", f"SlurmUser               = alice({hub})")
    assert slurm_private_data_finding(as_slurm_user, hub).level == "warning"
    assert slurm_private_data_finding(text, 0).level == "warning"
    assert slurm_private_data_finding(SCONTROL_SHOW_CONFIG, hub) is None


# --- check --live against the real schedulers ---

def _with_missing_queue(name: str, queue: str) -> str:
    text = (SITE_CONFIGS / name).read_text()
    anchor = "    queues:\n"
    assert anchor in text
    return text.replace(anchor, anchor + f"      {queue}: {{max_walltime: \"01:00:00\"}}\n", 1)


# queues the config names, and a queue the scheduler does not have
LIVE_QUEUES = {"slurm": (("debug", "multi"), "nosuch"), "sge": (("short.q", "long.q"), "gpu.q")}


async def test_live_check_on_the_local_cluster(scheduler, tmp_path):
    queues, missing_queue = LIVE_QUEUES[scheduler]
    site = load_site_config(SITE_CONFIGS / f"local-{scheduler}.yaml")
    findings = await live_findings(site)
    assert [f for f in findings if f.level == "error"] == []
    expected = f"clusters.{scheduler}: {scheduler} answers; queues {', '.join(queues)} are up"
    assert any(f.message == expected for f in findings), findings
    missing = tmp_path / "site.yaml"
    missing.write_text(_with_missing_queue(f"local-{scheduler}.yaml", missing_queue))
    (problem,) = await live_problems(load_site_config(missing))
    # the scheduler's own queue list, in its order
    assert problem.startswith(f"clusters.{scheduler}.queues.{missing_queue}: the scheduler has no such queue (it has: ")
    assert all(queue in problem for queue in queues)


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
def test_check_live_command(tmp_path):
    result = hpchub("check", "--live", str(SITE_CONFIGS / "local-slurm.yaml"))
    assert result.returncode == 0, result.stderr
    assert "info: " in result.stdout and ": ok (" in result.stdout
    missing = tmp_path / "site.yaml"
    missing.write_text(_with_missing_queue("local-slurm.yaml", "nosuch"))
    result = hpchub("check", "--live", str(missing))
    assert result.returncode == 1
    line = missing.read_text().splitlines().index('      nosuch: {max_walltime: "01:00:00"}') + 1
    assert f"{missing}:{line}: clusters.slurm.queues.nosuch: the scheduler has no such queue" in result.stderr


async def test_a_scheduler_that_does_not_answer_is_reported(tmp_path, monkeypatch):
    # No scheduler commands on PATH: the check names the cluster and the failing command.
    monkeypatch.setenv("PATH", str(tmp_path))
    site = load_site_config(SITE_CONFIGS / "local-slurm.yaml")
    problems = await live_problems(site)
    (problem,) = [problem for problem in problems if "does not answer" in problem]
    assert problem.startswith("clusters.slurm: the slurm scheduler does not answer: command `sinfo")
    # The submit mode's commands are missing too (via: sudo runs them on this host).
    for command in ("sbatch", "scancel", "squeue"):
        assert f"clusters.slurm.submit.via: the scheduler command {command} is not found on the PATH" in problems
    assert "clusters.slurm.submit.via: sudo: 'sudo' is not found" in " ".join(problems)


def test_one_fixed_ssh_account_without_sudo_is_a_warning_naming_it():
    shared = SITE.replace("submit: {via: sudo}", "submit: {via: ssh, host: login, user: jupyter, key: /k, known_hosts: /kh}")
    assert site_warnings(parse_site_config(shared)) == [
        "clusters.main.submit.user: jupyter without sudo: all users' jobs run as jupyter on the login node"
    ]
    own = SITE.replace("submit: {via: sudo}", "submit: {via: ssh, host: login, key: '/k/{user}', known_hosts: /kh, "
                                              "query_user: q}")
    assert site_warnings(parse_site_config(own)) == []


# --- the files behind the hub's trust: known_hosts, the SSH keys, hpchub-job's environment ---

def _ssh_site_in(directory, key="{user}.key"):
    """An SSH site config in ``directory``, with a known_hosts file and a key directory holding the
    keys of alice and of the query account q, all as an admin makes them (root's only, keys unreadable)."""
    keys = directory / "keys"
    keys.mkdir()
    keys.chmod(0o700)
    for user in ("alice", "q"):
        (keys / key.format(user=user)).write_text("a private key\n")
        (keys / key.format(user=user)).chmod(0o600)
    (directory / "known_hosts").write_text("login ssh-ed25519 AAAA\n")
    (directory / "known_hosts").chmod(0o644)
    text = SITE.replace("submit: {via: sudo}", f"submit: {{via: ssh, host: login, key: '{keys}/{key}', "
                                               f"known_hosts: {directory}/known_hosts, query_user: q}}")
    return _site_in(directory, text, templates=False)


def site_error_lines(site) -> list[tuple[int | None, str]]:
    return [(finding.line, finding.message) for finding in site_findings(site) if finding.level == "error"]


SUBMIT_LINE = 5  # the line of `submit:` in SITE, where its keys are


def test_a_tidy_ssh_site_has_no_errors(tmp_path):
    assert site_error_lines(load_site_config(_ssh_site_in(tmp_path))) == []


@pytest.mark.parametrize("target, mode, message", [
    ("known_hosts", 0o664, "clusters.main.submit.known_hosts: known_hosts {path} is writable by its group (mode 0664)"),
    ("keys", 0o1777, "clusters.main.submit.key: key directory {path} is writable by its group and everyone "
                     "(mode 1777)"),
    ("keys/alice.key", 0o640, "clusters.main.submit.key: key file {path} is readable by its group (mode 0640)"),
    ("keys/q.key", 0o606, "clusters.main.submit.key: key file {path} is writable by everyone and readable by "
                          "everyone (mode 0606)"),
    (".", 0o770, "clusters.main.submit.known_hosts: {path}, a directory above known_hosts {path}/known_hosts, is "
                 "writable by its group (mode 0770)"),
])
def test_trust_files_others_can_change_or_read_are_errors_at_their_key(tmp_path, target, mode, message):
    site = load_site_config(_ssh_site_in(tmp_path))
    path = (tmp_path / target).resolve()
    path.chmod(mode)
    errors = site_error_lines(site)
    expected = message.format(path=path)
    assert [(line, text) for line, text in errors if text.startswith(expected)] != [], errors
    assert {line for line, _ in errors} == {SUBMIT_LINE}


def test_public_keys_beside_the_keys_are_no_secret(tmp_path):
    site = load_site_config(_ssh_site_in(tmp_path, key="{user}"))
    (tmp_path / "keys" / "alice.pub").write_text("ssh-ed25519 AAAA hpchub:alice\n")
    (tmp_path / "keys" / "alice.pub").chmod(0o644)
    assert site_errors(site) == []
    (tmp_path / "keys" / "alice").chmod(0o644)
    assert site_errors(site) == [
        f"clusters.main.submit.key: key file {tmp_path}/keys/alice is readable by its group and everyone (mode 0644): "
        "whoever can change it can put in a key of their own, and whoever can read a key logs in as its account"]


def test_a_key_owned_by_another_account_is_an_error(tmp_path):
    site = load_site_config(_ssh_site_in(tmp_path))
    alice = pwd.getpwnam("alice")
    os.chown(tmp_path / "keys" / "alice.key", alice.pw_uid, alice.pw_gid)
    assert site_errors(site) == [
        f"clusters.main.submit.key: key file {tmp_path}/keys/alice.key is owned by alice, not by root or root "
        "(mode 0600): whoever can change it can put in a key of their own, and whoever can read a key logs in as its "
        "account"]


def test_check_names_the_line_of_a_loose_known_hosts_and_fails(tmp_path):
    path = _ssh_site_in(tmp_path)
    (tmp_path / "known_hosts").chmod(0o666)
    result = hpchub("check", str(path))
    assert result.returncode == 1
    assert (f"{path}:{SUBMIT_LINE}: clusters.main.submit.known_hosts: known_hosts {tmp_path}/known_hosts is writable "
            "by its group and everyone (mode 0666): whoever can change it") in result.stderr


def _venv_in(directory):
    """A virtual environment's layout with hpchub-job in it, as pip and chmod -R a+rX leave it."""
    venv = directory / "venv"
    site_packages = venv / "lib" / "python3.11" / "site-packages"
    for folder in (venv / "bin", site_packages / "hpchub", site_packages / "jupyterlab" / "static"):
        folder.mkdir(parents=True)
    for file, text in (("pyvenv.cfg", "home = /usr/bin\n"), ("bin/hpchub-job", "#!/usr/bin/python3\n"),
                       ("lib/python3.11/site-packages/distutils-precedence.pth", "import os\n"),
                       ("lib/python3.11/site-packages/hpchub/jobfiles.py", "\n"),
                       ("lib/python3.11/site-packages/jupyterlab/static/app.js", "\n")):
        (venv / file).write_text(text)
    for folder, _, files in os.walk(directory):
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o644)
    (venv / "bin" / "hpchub-job").chmod(0o755)
    return venv


def test_an_environment_of_hpchub_job_others_can_change_is_an_error(tmp_path):
    venv = _venv_in(tmp_path)
    command = str(venv / "bin" / "hpchub-job")
    assert jobfiles_problems(command) == []
    site_packages = venv / "lib" / "python3.11" / "site-packages"
    (site_packages / "distutils-precedence.pth").chmod(0o666)  # runs at every start of Python
    (site_packages / "jupyterlab" / "static").chmod(0o777)  # a module can be added there
    (site_packages / "jupyterlab" / "static" / "app.js").chmod(0o666)  # no code hpchub-job runs
    (problem,) = jobfiles_problems(command)
    assert problem == (
        f"the environment {venv} of hpchub-job has what others can change: {site_packages}/distutils-precedence.pth "
        f"is writable by its group and everyone (mode 0666); {site_packages}/jupyterlab/static is writable by its group "
        "and everyone (mode 0777): the hub runs hpchub-job for every job (as its user with via: sudo): whoever can "
        f"change what it runs, runs code as them; chmod -R go-w {venv}")
    (venv / "bin").chmod(0o775)
    assert f"{venv}/bin, a directory above hpchub-job {command}, is writable by its group (mode 0775)" in \
        " ".join(jobfiles_problems(command))


def test_the_hubs_own_hpchub_job_and_environment_are_checked_for_sudo_and_local():
    """The tests' own environment is only root's: nothing to report, and the check takes the hpchub-job
    that default_jobfiles_command names (the one the sudoers rule names)."""
    assert jobfiles_problems(default_jobfiles_command()) == []
    assert site_errors(parse_site_config(SITE)) == []


# --- check --live: the accounts, QoS and reservations profiles name ---

ALLOCATION_PROFILES = {
    # slug: (the profile's allocation keys, who it is for)
    "slurm": {
        "chem-high": ("account: chem\n    qos: high", "unix_users: [alice, bob]"),
        "nosuch": ("account: nosuch", "unix_users: [alice]"),
        "phys-high": ("account: phys\n    qos: [high]", ""),
        "later": ("reservation: course-later", "unix_users: [carol]"),
        "open-course": ("reservation: course", "unix_users: [bob, carol]"),
        "mine": ("account: {from_scheduler: true}", "unix_users: [nobody, alice]"),
    },
    "sge": {
        "chem-high": ("account: chem", "unix_users: [alice, bob]"),
        "nosuch": ("account: nosuch", "unix_users: [alice]"),
        "later": ("reservation: course", "unix_users: [bob, carol]"),
        "mine": ("account: {from_scheduler: true}", "unix_users: [nobody, alice]"),
    },
}


def _with_allocation_profiles(scheduler: str) -> str:
    text = (SITE_CONFIGS / f"local-{scheduler}.yaml").read_text()
    queue = {"slurm": "debug", "sge": "short.q"}[scheduler]
    for slug, (allocation, who) in ALLOCATION_PROFILES[scheduler].items():
        text += (f"\n  - slug: {slug}\n    name: {slug}\n    cluster: {scheduler}\n    queue: {queue}\n"
                 f"    resources: {{cores: 1, memory: 1G, walltime: \"01:00:00\"}}\n    {allocation}\n"
                 + (f"    {who}\n" if who else ""))
    return text


async def test_live_check_finds_allocations_that_do_not_exist_or_are_not_open_to_the_profiles_users(
        scheduler, tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text(_with_allocation_profiles(scheduler))
    lines = path.read_text().splitlines()
    findings = await live_findings(load_site_config(path), probe=False)
    by_message = {finding.message: finding for finding in findings}

    def found(level: str, start: str, key_line: str, after_slug: str) -> None:
        """A finding of ``level`` whose message starts with ``start``, at the line of ``key_line``
        (the first such line after the profile ``after_slug`` begins)."""
        matches = [f for f in findings if f.message.startswith(start)]
        assert matches, (start, [str(f) for f in findings])
        slug_line = lines.index(f"  - slug: {after_slug}")
        assert matches[0].level == level and matches[0].line == lines.index(key_line, slug_line) + 1, matches

    index = {slug: slug for slug in ALLOCATION_PROFILES[scheduler]}  # findings name profiles by slug
    project = "account" if scheduler == "slurm" else "project"
    found("error", f"profiles[{index['nosuch']}].account: the scheduler has no {project} 'nosuch' (it has: ",
          "    account: nosuch", "nosuch")
    found("error", f"profiles[{index['chem-high']}].account: bob may not use chem, so the scheduler refuses every job",
          "    account: chem", "chem-high")
    found("error", f"profiles[{index['mine']}].account: nobody has no {project} on the scheduler",
          "    account: {from_scheduler: true}", "mine")
    # alice may use all of these; a name the scheduler lacks is reported once, not once per user
    assert not any("alice" in message for message in by_message), [m for m in by_message if "alice" in m]
    if scheduler == "slurm":
        found("error", f"profiles[{index['phys-high']}].qos: no association of account 'phys' allows QoS 'high' "
                       "(it allows: normal)", "    qos: [high]", "phys-high")
        found("error", f"profiles[{index['chem-high']}].qos: bob may not use high", "    qos: high", "chem-high")
        found("info", f"profiles[{index['later']}].reservation: reservation 'course-later' is not open yet; it opens 20",
              "    reservation: course-later", "later")
        found("error", f"profiles[{index['open-course']}].reservation: bob may not use course",
              "    reservation: course", "open-course")
        assert not any("carol" in message for message in by_message)
    else:
        found("info", f"profiles[{index['later']}].reservation: reservation 'course' is not open yet; it opens 20",
              "    reservation: course", "later")
        found("error", f"profiles[{index['later']}].reservation: bob may not use course",
              "    reservation: course", "later")


@pytest.mark.sge
@pytest.mark.usefixtures("sge_cluster")
async def test_live_check_names_a_pinned_reservations_namesakes_and_one_no_admin_made(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text((SITE_CONFIGS / "local-sge.yaml").read_text()
                    + "\n  - {slug: pinned, name: pinned, cluster: sge, queue: long.q, unix_users: [carol],\n"
                      "     resources: {cores: 1, memory: 1G, walltime: \"01:00:00\"}, reservation: hpchub-pinned-e}\n")
    made: list[str] = []
    subprocess.run(["qconf", "-au", "bob", "arusers"], capture_output=True, check=True, timeout=60)
    try:
        made.append(qrsub("hpchub-pinned-e", 20, user="bob"))
        made.append(qrsub("hpchub-pinned-e", 21))  # root's
        messages = {f.message: f.level for f in await live_findings(load_site_config(path), probe=False)}
        assert messages.get(f"profiles[pinned].reservation: reservation 'hpchub-pinned-e' has namesakes made by users: "
                            f"{made[0]} (made by bob); hpchub ignores them and uses {made[1]} (someone may be trying "
                            "to catch this profile's jobs)") == "warning", messages
        subprocess.run(["qrdel", made.pop()], capture_output=True, check=True, timeout=60)
        messages = {f.message: f.level for f in await live_findings(load_site_config(path), probe=False)}
        assert messages.get(f"profiles[pinned].reservation: reservation 'hpchub-pinned-e' was made by an account that "
                            f"is neither a Grid Engine manager or operator nor in clusters.sge.sge.reservation_owners "
                            f"({made[0]} (made by bob)): hpchub refuses every spawn of this profile") == "error", messages
    finally:
        for number in made:
            subprocess.run(["qrdel", number], capture_output=True, timeout=60)
        subprocess.run(["qconf", "-du", "bob", "arusers"], capture_output=True, timeout=60)


# --- the hub off the cluster: to_hub needs internal_ssl; descriptors for the forwards ---

OFF_CLUSTER = SITE.replace(
    "submit: {via: sudo}",
    "submit: {via: ssh, host: login, key: '/k/{user}', known_hosts: /kh, query_user: q}\n    network: {to_hub: TO_HUB}")


@pytest.mark.parametrize("to_hub", ["reverse", "'http://hub.example.org:8081/hub/api'"])
def test_a_to_hub_someone_else_could_answer_is_an_error_without_internal_ssl(tmp_path, to_hub):
    site = parse_site_config(OFF_CLUSTER.replace("TO_HUB", to_hub))
    (error,) = [finding for finding in site_findings(site) if finding.level == "error"]
    assert error.message.startswith(f"clusters.main.network.to_hub: {to_hub.strip(chr(39))} needs "
                                    "c.JupyterHub.internal_ssl = True")
    assert "receives every job's API token" in error.message and "--internal-ssl" in error.message
    assert site_errors(site) and not [f for f in site_findings(site, internal_ssl=True) if f.level == "error"]
    # The command: an error, naming the line, unless told the hub has internal_ssl.
    path = _site_in(tmp_path, OFF_CLUSTER.replace("TO_HUB", to_hub), templates=False)
    result = hpchub("check", str(path))
    assert result.returncode == 1 and f"{path}:6: clusters.main.network.to_hub: " in result.stderr, result.stderr
    assert hpchub("check", "--internal-ssl", str(path)).returncode == 0


def test_https_and_direct_to_hub_need_no_internal_ssl():
    for to_hub in ("direct", "'https://hub.example.org/hub/api'"):
        assert site_errors(parse_site_config(OFF_CLUSTER.replace("TO_HUB", to_hub))) == []


def test_a_low_open_file_limit_is_a_warning_for_sites_that_forward(tmp_path):
    """Each forwarded connection holds descriptors: under the example unit's old limit (1024) a few
    hundred exhausted the hub's. The check says so when it runs under a limit that low."""
    import resource
    import subprocess
    import sys

    from hpchub.transports.sshpool import descriptors_needed

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    path = _site_in(tmp_path, OFF_CLUSTER.replace("TO_HUB", "reverse"), templates=False)
    argv = [sys.executable, "-m", "hpchub.admin.cli", "check", "--internal-ssl", str(path)]
    low = subprocess.run(argv, capture_output=True, text=True, timeout=60, preexec_fn=low_limit)
    assert low.returncode == 0, low.stderr
    assert (f"warning: {path}: tunnels and reverse forwards: the open-file limit is 1024 (soft), below the "
            f"{descriptors_needed()}") in low.stderr and "LimitNOFILE=" in low.stderr
    high = subprocess.run(argv, capture_output=True, text=True, timeout=60, preexec_fn=lambda: resource.setrlimit(
        resource.RLIMIT_NOFILE, (descriptors_needed(), descriptors_needed())))
    assert high.returncode == 0 and "open-file limit" not in high.stderr, high.stderr
    # A site that forwards nothing is not warned.
    direct = _site_in(tmp_path, SITE, templates=False)
    quiet = subprocess.run([sys.executable, "-m", "hpchub.admin.cli", "check", str(direct)], capture_output=True, text=True,
                           timeout=60, preexec_fn=low_limit)
    assert quiet.returncode == 0 and "open-file limit" not in quiet.stderr


def test_the_example_unit_raises_the_open_file_limit_enough():
    from hpchub.transports.sshpool import descriptors_needed

    unit = (REPO / "examples" / "hpchub-hub.service").read_text()
    (limit,) = [int(line.split("=", 1)[1]) for line in unit.splitlines() if line.startswith("LimitNOFILE=")]
    assert limit >= descriptors_needed()
