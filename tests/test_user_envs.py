"""Users' own environments (environment.user_envs): the site config's key and its checks, the path a
user gives checked like every user value (under the home, no traversal, nothing unquoted in the
script), the form's field and the card, the engines in the same env, the rendered block run by bash
on a stand-in node (a venv, a conda env, a missing env, one without jupyterhub-singleuser), and, on the
local Slurm through a real hub, a server started from a venv in the user's home and one that fails fast."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from helpers.support import SITE_CONFIGS, write_job_side, write_stand_in_server

from hpchub.core.config import SiteConfigError, load_site_config, parse_site_config
from hpchub.core.jobs import ENV_PARENT_USER_ENV, engine_job, server_job
from hpchub.core.options import OptionsError, resolve_request
from hpchub.core.render import UserAccount
from hpchub.hub.form import read_form, render_spawn_form

USER = UserAccount("alice", "/home/alice")
SHELLCHECK = shutil.which("shellcheck")

SITE = """\
site: Test
clusters:
  main:
    scheduler: slurm
    submit: {via: sudo}
    environment:
      modules: [python/3.11]
    queues:
      short: {max_walltime: "04:00:00"}
profiles:
  - slug: own
    name: Own env
    cluster: main
    queue: short
    resources: {walltime: "01:00:00"}
    environment:
      user_envs: true
  - slug: site-only
    name: Site env
    cluster: main
    queue: short
    resources: {walltime: "01:00:00"}
"""


def problems_of(text: str, tmp_path) -> list[str]:
    path = tmp_path / "site.yaml"
    path.write_text(text)
    with pytest.raises(SiteConfigError) as caught:
        load_site_config(path)
    return [line[len(str(path)):] for line in str(caught.value).splitlines()]


# --- the site config ------------------------------------------------------------------------------

def test_user_envs_is_off_unless_set_and_a_profile_setting_wins():
    site = parse_site_config(SITE.replace("    environment:\n      modules", "    environment:\n      user_envs: true\n"
                                          "      modules")
                             .replace("      user_envs: true\n  - slug", "      user_envs: false\n  - slug"))
    cluster = site.clusters["main"]
    assert not cluster.environment.extended_by(site.profile("own").environment).allows_user_envs
    assert cluster.environment.extended_by(site.profile("site-only").environment).allows_user_envs
    plain = parse_site_config(SITE.replace("    environment:\n      user_envs: true\n", ""))
    assert not any(plain.clusters["main"].environment.extended_by(p.environment).allows_user_envs
                   for p in plain.profiles)


@pytest.mark.parametrize(("value", "message"), [
    ("sometimes", "Input should be a valid boolean"),
    ("1", "Input should be a valid boolean"),
])
def test_user_envs_must_be_true_or_false_naming_file_line(tmp_path, value, message):
    problems = problems_of(SITE.replace("user_envs: true", f"user_envs: {value}"), tmp_path)
    assert any(p.startswith(":17: profiles[own].environment.user_envs: ") and message in p for p in problems), problems


def test_user_envs_and_a_container_are_refused_naming_file_line(tmp_path):
    text = SITE.replace("      modules: [python/3.11]\n",
                        "      container: {runtime: podman, image: /srv/images/lab.tar}\n")
    problems = problems_of(text, tmp_path)
    assert len(problems) == 1 and problems[0].startswith(
        ":17: profiles[own].environment.user_envs: a user's own venv or conda env and a container image exclude each "
        "other"), problems


# --- the user's value ------------------------------------------------------------------------------

@pytest.mark.parametrize(("given", "path"), [
    ("envs/lab", "envs/lab"), ("~/envs/lab", "envs/lab"), (" .venv/ ", ".venv"),
    ("miniforge3/envs/py3.12@x", "miniforge3/envs/py3.12@x"),
])
def test_a_path_under_the_home_is_taken_relative_to_it(given, path):
    site = parse_site_config(SITE)
    request = resolve_request(site, site.profile("own"), {"user_env": given})
    assert request.user_env == path
    script = server_job(site, request, USER).script
    assert f"hpchub_user_env=/home/alice/{path}\n" in script


@pytest.mark.parametrize(("given", "message"), [
    ("../bob/envs/lab", "no '.', '..' or empty parts"),
    ("envs/../../bob/lab", "no '.', '..' or empty parts"),
    ("~/../bob", "no '.', '..' or empty parts"),
    ("./envs", "no '.', '..' or empty parts"),
    ("envs//lab", "no '.', '..' or empty parts"),
    ("/opt/conda/envs/lab", "not an absolute path"),
    ("/home/alice/envs/lab", "not an absolute path"),
    ("~bob/envs/lab", "under your own home"),
    ("~", "under your own home"),
    ("~/", "not the home itself"),
    ("envs/lab\nrm -rf ~", "without control characters"),
    ("envs/lab\x00", "without control characters"),
    ("envs/$(id)", "use letters, digits"),
    ("envs/`id`", "use letters, digits"),
    ("envs/lab;id", "use letters, digits"),
    ("envs/my lab", "use letters, digits"),
    ("envs/'lab'", "use letters, digits"),
    ("envs/*", "use letters, digits"),
    ("-rf/lab", "use letters, digits"),
    ("envs/--lab", "use letters, digits"),
    ("e" * 201, "at most 200 characters"),
    (["envs/lab"], "is not a path"),
])
def test_traversal_and_shell_text_are_refused(given, message):
    site = parse_site_config(SITE)
    with pytest.raises(OptionsError) as caught:
        resolve_request(site, site.profile("own"), {"user_env": given})
    assert set(caught.value.problems) == {"user_env"} and message in caught.value.problems["user_env"]


def test_a_profile_without_user_envs_refuses_one():
    site = parse_site_config(SITE)
    with pytest.raises(OptionsError) as caught:
        resolve_request(site, site.profile("site-only"), {"user_env": "envs/lab"})
    assert caught.value.problems == {"user_env": "profile 'site-only' does not let users choose their own environment"}
    assert resolve_request(site, site.profile("site-only"), {"user_env": ""}).user_env is None


def test_nothing_of_the_path_reaches_the_script_unquoted():
    """Every line that names the env either assigns the checked path or quotes it; the env's name in a
    message is one quoted word."""
    site = parse_site_config(SITE)
    script = server_job(site, resolve_request(site, site.profile("own"), {"user_env": "~/envs/lab+1"}), USER).script
    mentions = [line for line in script.splitlines() if "envs/lab+1" in line]
    assert mentions[0] == "hpchub_user_env=/home/alice/envs/lab+1"
    assert mentions[-1] == "export HPCHUB_USER_ENV=envs/lab+1"
    assert all("'~/envs/lab+1'" in line for line in mentions[1:-1]) and len(mentions) >= 6
    # No user env: no block.
    assert "hpchub_user_env" not in server_job(site, resolve_request(site, site.profile("own"), {}), USER).script


@pytest.mark.parametrize("scheduler", ["slurm", "sge"])
def test_user_env_scripts_pass_bash_and_shellcheck(scheduler):
    site = parse_site_config(SITE.replace("scheduler: slurm", f"scheduler: {scheduler}"))
    request = resolve_request(site, site.profile("own"), {"user_env": "envs/lab"})
    for script in (server_job(site, request, USER).script,
                   engine_job(site, request, USER, 2, "123", ["ipengine"], key="k").script):
        result = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        if SHELLCHECK is None:
            continue
        result = subprocess.run([SHELLCHECK, "--shell=bash", "--severity=warning", "--exclude=SC2140", "-"],
                                input=script, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout


def test_engines_run_in_the_notebooks_user_env(monkeypatch, tmp_path):
    from hpchub.parallel import HPCEngineSetLauncher

    path = tmp_path / "site.yaml"
    path.write_text(SITE)
    site = load_site_config(path)
    engines = engine_job(site, resolve_request(site, site.profile("own"), {"user_env": "envs/lab"}), USER, 2, "1",
                         ["ipengine"], key="k").script
    assert "hpchub_user_env=/home/alice/envs/lab\n" in engines
    assert "jupyterhub-singleuser" not in engines  # engines need ipyparallel, not the server
    monkeypatch.setenv(ENV_PARENT_USER_ENV, "envs/lab")
    launcher = HPCEngineSetLauncher(site_config=str(path), profile="own", options={})
    assert "hpchub_user_env=/home/alice/envs/lab\n" in launcher.prepare(2, "alice").script
    # A parent's env the engines' profile does not allow gives way to the profile's environment.
    launcher = HPCEngineSetLauncher(site_config=str(path), profile="site-only", options={})
    assert "hpchub_user_env" not in launcher.prepare(2, "alice").script


# --- the form and the card -------------------------------------------------------------------------

def test_form_offers_a_text_field_and_the_card_says_so():
    site = parse_site_config(SITE)
    html = render_spawn_form(site, site.profiles)
    assert '<input type="text" name="own--user_env" id="own--user_env" value="" ' \
           'placeholder="envs/lab or ~/miniforge3/envs/lab" maxlength="200"' in html
    assert html.count('<div class="hpchub-user-env">you may use your own venv or conda env (under your home)</div>') \
        == 1
    assert 'name="site-only--user_env"' not in html
    options = read_form({"profile": ["own"], "own--user_env": ["~/envs/lab"]}).options
    assert options == {"profile": "own", "user_env": "~/envs/lab"}


def test_form_shows_a_refused_path_again_escaped_with_its_problem():
    from hpchub.hub.form import Preselection

    site = parse_site_config(SITE)
    given = '"><script>alert(1)</script>'
    try:
        resolve_request(site, site.profile("own"), {"user_env": given})
    except OptionsError as error:
        problems = error.problems
    html = render_spawn_form(site, site.profiles, preselection=Preselection("own", {"user_env": given}, problems))
    assert "<script>alert(1)" not in html and "&lt;script&gt;" in html
    assert 'id="own--user_env-error">' in html and 'aria-invalid="true"' in html


# --- the rendered block on a stand-in node -----------------------------------------------------------

def run_env_block(tmp_path: Path, user_env: str) -> subprocess.CompletedProcess:
    """The server job of profile ``own`` for a user whose home is ``tmp_path``, without modules, run by bash
    with a stand-in ``jupyterhub-singleuser`` on the system PATH (the user's env must bring its own)."""
    site = parse_site_config(SITE.replace("      modules: [python/3.11]\n", "      env: {A: b}\n"))
    user = UserAccount("alice", str(tmp_path))
    job = server_job(site, resolve_request(site, site.profile("own"), {"user_env": user_env}), user)
    secrets = tmp_path / ".hpchub" / "jobs" / job.key / "env"
    secrets.parent.mkdir(parents=True, exist_ok=True)
    secrets.write_text("JUPYTERHUB_API_TOKEN=t\n")
    write_job_side(secrets.parent)
    system = tmp_path / "system-bin"
    system.mkdir(exist_ok=True)
    write_stand_in_server(system / "jupyterhub-singleuser", 'echo "system singleuser"')
    env = {"PATH": f"{system}:/usr/bin:/bin", "HOME": str(tmp_path)}
    return subprocess.run(["bash", "-c", job.script], capture_output=True, text=True, env=env, timeout=30,
                          cwd=tmp_path)


def write_program(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/bash\n{body}\n")
    path.chmod(0o755)


def test_a_venv_is_activated_and_its_server_runs(tmp_path):
    venv = tmp_path / "envs" / "lab"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text(f'export VIRTUAL_ENV={venv}; export PATH="$VIRTUAL_ENV/bin:$PATH"\n')
    write_stand_in_server(venv / "bin" / "jupyterhub-singleuser", 'echo "venv singleuser in $VIRTUAL_ENV"')
    result = run_env_block(tmp_path, "~/envs/lab")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == f"venv singleuser in {venv}"


def test_a_conda_env_without_conda_in_the_shell_goes_first_on_the_path(tmp_path):
    env = tmp_path / "miniforge3" / "envs" / "lab"
    (env / "conda-meta").mkdir(parents=True)
    write_stand_in_server(env / "bin" / "jupyterhub-singleuser", 'echo "conda singleuser in $CONDA_PREFIX"')
    result = run_env_block(tmp_path, "miniforge3/envs/lab")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == f"conda singleuser in {env}"


@pytest.mark.parametrize(("make", "message"), [
    ("nothing", "your environment ~/envs/lab does not exist on {host} (or is not readable)"),
    ("empty dir", "your environment ~/envs/lab is neither a venv (no bin/activate) nor a conda env (no conda-meta) "
                  "on {host}"),
    ("venv without jupyterhub", "your environment ~/envs/lab has no jupyterhub-singleuser: install JupyterHub and "
                                "JupyterLab into it"),
])
def test_a_missing_or_unfit_env_fails_the_job_with_its_name(tmp_path, make, message):
    import socket

    venv = tmp_path / "envs" / "lab"
    if make != "nothing":
        venv.mkdir(parents=True)
    if make == "venv without jupyterhub":
        (venv / "bin").mkdir()
        (venv / "bin" / "activate").write_text(f'export PATH="{venv}/bin:$PATH"\n')
    result = run_env_block(tmp_path, "envs/lab")
    assert result.returncode == 1 and "system singleuser" not in result.stdout
    assert f"hpchub: {message.format(host=socket.gethostname())}" in result.stderr, result.stderr


# --- on the local Slurm, through a real hub ----------------------------------------------------------

E2E_USER = "carol"
E2E_PROFILE = "uenv-own"


def make_user_venv(home: Path, name: str, user: str, singleuser: bool) -> Path:
    """A venv in ``user``'s home made cheaply from /opt/hpchub/venv: a fresh venv whose site-packages
    point at that venv's (a .pth file), with its own jupyterhub-singleuser script (or none)."""
    venv = home / name
    source = Path("/opt/hpchub/venv")
    subprocess.run([str(source / "bin" / "python"), "-m", "venv", "--without-pip", str(venv)], check=True)
    (site_packages,) = (source / "lib").glob("python3*/site-packages")
    (venv / "lib" / site_packages.parent.name / "site-packages" / "hpchub-test-base.pth").write_text(f"{site_packages}\n")
    if singleuser:
        text = (source / "bin" / "jupyterhub-singleuser").read_text().split("\n", 1)[1]
        (venv / "bin" / "jupyterhub-singleuser").write_text(f"#!{venv}/bin/python\n{text}")
        (venv / "bin" / "jupyterhub-singleuser").chmod(0o755)
    account = pwd.getpwnam(user)
    for path in (venv, *venv.rglob("*")):
        os.lchown(path, account.pw_uid, account.pw_gid)
    return venv


@pytest.fixture(scope="module")
def uenv_hub(slurm_cluster, tmp_path_factory):
    from helpers.hub import run_hub
    from helpers.profiles import local_site_text, profile

    extra = profile(E2E_PROFILE, "own env", "slurm", memory="512M", environment="user_envs: true")
    yield from run_hub(tmp_path_factory.mktemp("hub-uenv"), local_site_text("slurm", extra), (E2E_USER,),
                       poll_interval=2, leftover_slurm_profiles=(E2E_PROFILE,))


@pytest.fixture
def user_venvs():
    made: list[Path] = []

    def make(singleuser: bool) -> Path:
        venv = make_user_venv(Path(pwd.getpwnam(E2E_USER).pw_dir), f".hpchub-test-uenv-{os.getpid()}-{len(made)}",
                              E2E_USER, singleuser)
        made.append(venv)
        return venv

    yield make
    for venv in made:
        shutil.rmtree(venv, ignore_errors=True)


@pytest.mark.e2e
@pytest.mark.slurm
def test_server_starts_from_a_venv_in_the_users_home(uenv_hub, user_venvs):
    from helpers.hub import spawn, stop

    venv = user_venvs(singleuser=True)
    server = spawn(uenv_hub, E2E_USER, {"profile": E2E_PROFILE, "user_env": f"~/{venv.name}"})
    assert uenv_hub.get_user_url(E2E_USER, "api/status").status_code == 200
    running = subprocess.run(["pgrep", "-u", E2E_USER, "-f", f"{venv}/bin/python {venv}/bin/jupyterhub-singleuser"],
                             capture_output=True, text=True)
    assert running.stdout.strip(), f"no jupyterhub-singleuser of {venv} runs as {E2E_USER}"
    assert server["state"]["job_id"]
    stop(uenv_hub, E2E_USER)


@pytest.mark.e2e
@pytest.mark.slurm
def test_a_user_env_without_jupyterhub_singleuser_fails_fast_with_the_message(uenv_hub, user_venvs):
    from helpers.hub import spawn_failure_message

    venv = user_venvs(singleuser=False)
    started = time.monotonic()
    message = spawn_failure_message(uenv_hub, E2E_USER, {"profile": E2E_PROFILE, "user_env": venv.name})
    assert f"your environment ~/{venv.name} has no jupyterhub-singleuser" in message, message
    assert time.monotonic() - started < 60


def test_the_example_site_offers_user_envs_on_a_profile():
    site = load_site_config(SITE_CONFIGS / "example-slurm-production.yaml")
    allowing = [p.slug for p in site.profiles
                if site.clusters[p.cluster].environment.extended_by(p.environment).allows_user_envs]
    assert allowing == ["cpu-small"]
    script = server_job(site, resolve_request(site, site.profile("cpu-small"), {"user_env": "envs/lab"}), USER).script
    assert textwrap.dedent("""\
        hpchub_user_env=/home/alice/envs/lab
        if [ -d "$hpchub_user_env/conda-meta" ]; then
        """) in script


@pytest.mark.slurm
def test_engines_a_notebook_in_a_user_env_starts_run_in_that_env(slurm_cluster, user_venvs):
    """As a notebook in a server started from the user's env (its job exports HPCHUB_USER_ENV): the
    engine job activates the same env on its node."""
    import json

    from helpers.profiles import local_site_text, profile
    from helpers.support import run_as_user, user_readable

    venv = user_venvs(singleuser=True)
    site = user_readable(f"uenv-engines-{os.getpid()}.yaml", local_site_text(
        "slurm", profile(E2E_PROFILE, "own env", "slurm", memory="512M", environment="user_envs: true")))
    result = json.loads(run_as_user(E2E_USER, f"""
        import asyncio, json, os
        os.environ["{ENV_PARENT_USER_ENV}"] = {venv.name!r}
        import hpchub.parallel

        async def main():
            cluster = hpchub.parallel.Cluster(profile={E2E_PROFILE!r}, n=2, site_config={str(site)!r})
            rc = await cluster.start_and_connect()
            envs = rc[:].apply_sync(lambda: __import__("os").environ.get("VIRTUAL_ENV"))
            await cluster.stop_cluster()
            print(json.dumps({{"envs": envs}}))

        asyncio.run(main())
    """))
    assert result["envs"] == [str(venv), str(venv)]
