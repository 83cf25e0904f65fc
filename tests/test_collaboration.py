"""Teaching together (issue 20, items 2 and 4): the site config's environment.collaboration and
environment.jupytext, the server arguments a job gets from them (hpchub.core.jobs), the hub's copy of
jupytext's formats grammar (hpchub.core.notebook_formats) held against jupytext itself, and the job
side's check (hpchub.job.requirements) in fakes and in real environments (tests/setup-envs.sh: `teach`
has jupyter-collaboration and jupytext, `jh6` neither). The browser tests are test_e2e_collaboration.py."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest
from helpers.support import write_job_side

from hpchub.admin.doctor import EXIT_JUPYTERHUB, Diagnosis, _judge_report
from hpchub.core import notebook_formats
from hpchub.core.config import SiteConfigError, load_site_config, parse_site_config
from hpchub.core.jobs import SERVER_ARGS, environment_server_args, server_job
from hpchub.core.options import resolve_request
from hpchub.core.render import UserAccount
from hpchub.job import probe, requirements

ENVS = Path("/opt/hpchub-test/envs")
USER = UserAccount("alice", "/home/alice")
JOB_DIR = "/home/alice/.hpchub/jobs/hpchub-alice-course"

SITE = """\
site: Test
clusters:
  main:
    scheduler: slurm
    submit: {via: sudo}
    environment:
      jupytext: "ipynb,md:myst"
    queues:
      short: {max_walltime: "04:00:00"}
profiles:
  - slug: course
    name: Course
    cluster: main
    queue: short
    resources: {walltime: "01:00:00"}
    environment:
      collaboration: true
      jupytext: "ipynb,py:percent"
  - slug: plain
    name: Plain
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


def server_command(site_text: str, profile: str) -> list[str]:
    """The server's command line as the rendered job script runs it (its exec line, unquoted by a shell)."""
    site = parse_site_config(site_text)
    script = server_job(site, resolve_request(site, site.profile(profile)), USER).script
    (line,) = [line for line in script.splitlines() if line.startswith("exec /bin/sh ")]
    return shlex.split(line)[3:]


# --- the site config ------------------------------------------------------------------------------

def test_a_profiles_collaboration_and_jupytext_win_over_its_clusters():
    site = parse_site_config(SITE)
    cluster = site.clusters["main"].environment
    course = cluster.extended_by(site.profile("course").environment)
    assert (course.collaboration, course.jupytext) == (True, "ipynb,py:percent")
    plain = cluster.extended_by(site.profile("plain").environment)
    assert (plain.collaboration, plain.jupytext) == (None, "ipynb,md:myst")
    off = parse_site_config(SITE.replace("collaboration: true", "collaboration: false"))
    assert off.clusters["main"].environment.extended_by(off.profile("course").environment).collaboration is False


@pytest.mark.parametrize("formats", [
    "ipynb,py:percent", "ipynb,md:myst", "ipynb,py:light,md", "ipynb,py:percent;ipynb,md", "ipynb,notebooks///py:percent",
    "notebooks///ipynb,scripts///py:percent", "ipynb,.pct.py:percent", "ipynb,auto:percent", "ipynb,Rmd", "ipynb,qmd",
    "notebook,myst", "ipynb,jl:percent,R:percent", "md,py:percent", "ipynb,c++",
])
def test_jupytext_formats_strings_the_site_config_takes(formats):
    assert notebook_formats.formats_problem(formats) is None
    site = parse_site_config(SITE.replace('"ipynb,py:percent"', json.dumps(formats)))
    assert site.profile("course").environment.jupytext == formats


@pytest.mark.parametrize("value, message", [
    ('"ipynb,py:nonsense"', "'nonsense' in 'py:nonsense' is not a jupytext format name (one of hydrogen, light"),
    ('"ipynb,txt"', "'txt' is not a notebook extension jupytext knows"),
    ('"ipynb,percent"', "'percent' is not a notebook extension jupytext knows"),
    ('"py:percent"', "'py:percent' pairs nothing: give two formats or more"),
    ('"ipynb,py:percent;md"', "'md' pairs nothing"),
    ('""', "must not be empty"),
    ('"ipynb,,py"', "has an empty format"),
    ('"ipynb, py:percent"', "has characters a jupytext formats string does not have"),
    ('"ipynb,py:percent\\nmd"', "has characters a jupytext formats string does not have"),
    ('"ipynb,py:$(id)"', "has characters"),
    ("[ipynb, py]", "Input should be a valid string"),
    ("true", "Input should be a valid string"),
])
def test_a_jupytext_value_jupytext_would_refuse_names_file_line_and_key(tmp_path, value, message):
    problems = problems_of(SITE.replace('"ipynb,py:percent"', value), tmp_path)
    assert len(problems) == 1 and problems[0].startswith(":18: profiles[course].environment.jupytext: "), problems
    assert message in problems[0], problems


@pytest.mark.parametrize("value", ["sometimes", "1", '"true"'])
def test_collaboration_is_true_or_false_naming_file_line_and_key(tmp_path, value):
    problems = problems_of(SITE.replace("collaboration: true", f"collaboration: {value}"), tmp_path)
    assert problems == [problems[0]] and problems[0].startswith(
        ":17: profiles[course].environment.collaboration: Input should be a valid boolean"), problems


# --- the job ---------------------------------------------------------------------------------------

def test_collaboration_and_jupytext_reach_the_servers_command_line_quoted():
    text = SITE.replace('"ipynb,py:percent"', '"ipynb,py:percent;ipynb,md"')
    command = server_command(text, "course")
    assert command[0] == "jupyterhub-singleuser" and "--ServerApp.port=0" in command
    assert command[-6:] == [
        "--ServerApp.jpserver_extensions=jupyter_server_ydoc=True", "--YDocExtension.disable_rtc=False",
        f"--SQLiteYStore.db_path={JOB_DIR}/ystore.db", f"--BaseFileIdManager.db_path={JOB_DIR}/file_id.db",
        "--ServerApp.jpserver_extensions=jupyterlab_jupytext=True", "--ContentsManager.formats=ipynb,py:percent;ipynb,md"]
    # The ";" reaches the server as part of its argument, not as the shell's end of a command.
    script = server_job(parse_site_config(text), resolve_request(parse_site_config(text),
                        parse_site_config(text).profile("course")), USER).script
    assert "'--ContentsManager.formats=ipynb,py:percent;ipynb,md'" in script


def test_unset_collaboration_leaves_the_environment_as_it_is_and_false_turns_it_off():
    site = parse_site_config(SITE)
    plain = site.clusters["main"].environment.extended_by(site.profile("plain").environment)
    assert environment_server_args(plain.model_copy(update={"jupytext": None}), JOB_DIR) == ()
    assert environment_server_args(plain.model_copy(update={"jupytext": None, "collaboration": False}), JOB_DIR) == (
        "--YDocExtension.disable_rtc=True",)
    assert server_command(SITE.replace("collaboration: true", "collaboration: false"), "course")[-3:] == [
        "--YDocExtension.disable_rtc=True", "--ServerApp.jpserver_extensions=jupyterlab_jupytext=True",
        "--ContentsManager.formats=ipynb,py:percent"]
    # The cluster's pairing, no collaboration argument at all.
    assert server_command(SITE, "plain")[-3:] == [
        SERVER_ARGS[-1], "--ServerApp.jpserver_extensions=jupyterlab_jupytext=True",
        "--ContentsManager.formats=ipynb,md:myst"]


def test_in_a_container_the_server_inside_gets_the_arguments_and_checks_them_there():
    text = SITE.replace("      collaboration: true\n", "      collaboration: true\n      container: "
                        "{runtime: apptainer, image: /srv/images/course.sif}\n")
    site = parse_site_config(text)
    script = server_job(site, resolve_request(site, site.profile("course")), USER).script
    (line,) = [line for line in script.splitlines() if "hpchub-secrets" in line]
    # The container runs start-server.sh (its check, then the server) with the server's whole command line.
    inside = shlex.split(line)[shlex.split(line).index("hpchub-secrets") + 2:]
    assert inside[:3] == ["/bin/sh", f"{JOB_DIR}/start-server.sh", "jupyterhub-singleuser"]
    assert inside[-6:] == list(environment_server_args(
        site.clusters["main"].environment.extended_by(site.profile("course").environment), JOB_DIR))


def test_the_job_side_reads_the_arguments_the_hub_side_writes():
    site = parse_site_config(SITE)
    environment = site.clusters["main"].environment.extended_by(site.profile("course").environment)
    args = environment_server_args(environment, JOB_DIR)
    assert requirements.COLLABORATION_ON in args and requirements.JUPYTEXT_ON in args
    assert f"{requirements.JUPYTEXT_FORMATS}ipynb,py:percent" in args


# --- the job side's check, with fakes ----------------------------------------------------------------

COLLAB = [requirements.COLLABORATION_ON]
PAIRED = [requirements.JUPYTEXT_ON, f"{requirements.JUPYTEXT_FORMATS}ipynb,py:percent"]
TEACH = {"jupyterlab": "4.6.6", "jupyter-collaboration": "5.0.4", "jupytext": "1.19.7"}


@pytest.mark.parametrize("args, versions, modules, errors", [
    ([], {}, set(), []),
    (COLLAB + PAIRED, TEACH, {"jupyter_server_ydoc"}, []),
    (COLLAB, {"jupyterlab": "4.6.6"}, set(), [
        "jupyter-collaboration is not installed in the environment of PY; the profile's environment.collaboration "
        "needs jupyter-collaboration 5.x (for JupyterLab 4.6)"]),
    (COLLAB, {"jupyterlab": "4.2.5"}, set(), [
        "jupyter-collaboration is not installed in the environment of PY; the profile's environment.collaboration "
        "needs jupyter-collaboration 3.x (for JupyterLab 4.2)"]),
    (COLLAB, {"jupyterlab": "4.2.5", "jupyter-collaboration": "2.1.5"}, set(), [
        "jupyter-collaboration 2.1.5 in the environment of PY is too old; the profile's environment.collaboration "
        "needs jupyter-collaboration 3.x (for JupyterLab 4.2)"]),
    (COLLAB, {}, set(), ["jupyter-collaboration is not installed in the environment of PY; the profile's "
                         "environment.collaboration needs jupyter-collaboration 3.x or newer (5.x for JupyterLab 4.6)"]),
    (PAIRED, {}, set(), ["jupytext is not installed in the environment of PY; the profile's environment.jupytext "
                         "needs jupytext 1.16 or newer"]),
    (PAIRED, {"jupytext": "1.15.2"}, set(), ["jupytext 1.15.2 in the environment of PY is too old; the profile's "
                                             "environment.jupytext needs jupytext 1.16 or newer"]),
    (["--YDocExtension.disable_rtc=True"], {}, set(), []),
])
def test_the_job_side_names_what_the_environment_lacks_for_what_the_server_is_told(args, versions, modules, errors):
    assert requirements.server_arg_problems(["jupyterhub-singleuser", *args], versions.get, modules.__contains__,
                                            lambda formats: None, "PY") == errors


def test_the_job_side_reports_jupytexts_own_refusal():
    refused = requirements.server_arg_problems(PAIRED, TEACH.get, lambda module: True,
                                               lambda formats: f"no to {formats}", "PY")
    assert refused == ["environment.jupytext 'ipynb,py:percent': jupytext 1.19.7 refuses it: no to ipynb,py:percent"]


# --- in real environments (tests/setup-envs.sh) -------------------------------------------------------

def env_python(name: str) -> str:
    python = ENVS / name / "bin" / "python"
    assert python.exists(), f"{python} missing: run bash tests/setup-envs.sh"
    return str(python)


def run_check(tmp_path, env: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([env_python(env), "-m", "hpchub_job.requirements", "jupyterhub-singleuser", *args],
                          capture_output=True, text=True, timeout=60, cwd="/",
                          env={"PATH": "/usr/bin:/bin", **write_job_side(tmp_path)})


def test_the_check_passes_in_an_environment_with_both(tmp_path):
    result = run_check(tmp_path, "teach", *COLLAB, *PAIRED)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@pytest.mark.parametrize("args, line", [
    (COLLAB, "hpchub: jupyter-collaboration is not installed in the environment of {python}; the profile's "
             "environment.collaboration needs jupyter-collaboration 5.x (for JupyterLab 4.6)\n"),
    (PAIRED, "hpchub: jupytext is not installed in the environment of {python}; the profile's environment.jupytext "
             "needs jupytext 1.16 or newer\n"),
])
def test_the_check_ends_the_job_naming_the_missing_piece(tmp_path, args, line):
    result = run_check(tmp_path, "jh6", *args)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == line.format(python=env_python("jh6")), result.stderr


def test_the_check_ends_the_job_with_jupytexts_own_answer(tmp_path):
    result = run_check(tmp_path, "teach", f"{requirements.JUPYTEXT_FORMATS}ipynb,py:nonsense")
    assert result.returncode == 1
    assert result.stderr.startswith("hpchub: environment.jupytext 'ipynb,py:nonsense': jupytext 1."), result.stderr
    assert "nonsense is not a valid format name" in result.stderr and result.stderr.count("\n") == 1


# Strings the hub's grammar takes or refuses, each checked against the environment's jupytext too.
AGREEMENT = ["ipynb,py:percent", "ipynb,md:myst", "ipynb,py:light,md", "ipynb,py:percent;ipynb,md", "ipynb,Rmd",
             "notebooks///ipynb,scripts///py:percent", "ipynb,.pct.py:percent", "ipynb,auto:percent", "notebook,myst",
             "ipynb,py:nonsense", "ipynb,txt", "ipynb,percent", "ipynb,/py", "ipynb,py:bare", "ipynb,c++", "ipynb,qmd"]


def test_the_hubs_copy_of_the_grammar_agrees_with_jupytext(tmp_path):
    """A canary for a new jupytext: what the site config takes (apart from its own rules, a pair and a
    character set) is what the environment's jupytext takes."""
    code = ("import json, sys\nfrom hpchub_job.requirements import jupytext_refusal\n"
            "print(json.dumps({f: jupytext_refusal(f) is None for f in json.loads(sys.argv[1])}))")
    result = subprocess.run([env_python("teach"), "-W", "ignore", "-c", code, json.dumps(AGREEMENT)], capture_output=True,
                            text=True, timeout=60, env={"PATH": "/usr/bin:/bin", **write_job_side(tmp_path)})
    assert result.returncode == 0, result.stderr
    jupytext_takes = json.loads(result.stdout)
    assert {f: notebook_formats.formats_problem(f) is None for f in AGREEMENT} == jupytext_takes
    assert sum(jupytext_takes.values()) >= 8  # both kinds are in the list


# --- hpchub doctor: a profile that turns on what its environment lacks is exit 4 -----------------------

def probe_optional(env: str) -> dict:
    """What the doctor's probe (a job file of its own, hpchub/job/probe.py) finds in ``env``."""
    code = ("import importlib.util, json, sys\nspec = importlib.util.spec_from_file_location('probe', sys.argv[1])\n"
            "probe = importlib.util.module_from_spec(spec); spec.loader.exec_module(probe)\n"
            "print(json.dumps(probe._optional()))")
    result = subprocess.run([env_python(env), "-I", "-c", code, probe.__file__], capture_output=True, text=True,
                            timeout=60, cwd="/")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_doctors_probe_finds_what_collaboration_and_jupytext_need():
    teach = probe_optional("teach")
    assert teach["modules"] == {"jupyter_server_ydoc": True}
    assert teach["versions"]["jupyterlab"] == "4.6.6" and teach["versions"]["jupyter-collaboration"].startswith("5.0.")
    assert teach["versions"]["jupytext"] is not None
    jh6 = probe_optional("jh6")
    assert jh6["modules"] == {"jupyter_server_ydoc": False}
    assert jh6["versions"]["jupyter-collaboration"] is None and jh6["versions"]["jupytext"] is None


def doctor_problems(optional: dict, server_args: list[str]) -> list[str]:
    report = {"python": {"executable": "/venv/bin/python3", "version": "3.11.2"},
              "jupyterhub": {"importable": True, "version": "6.1.1"},
              "jupyter_server": {"importable": True, "version": "2.17.0"}, "optional": optional,
              "singleuser_command": "/venv/bin/jupyterhub-singleuser", "hpchub": {"importable": False},
              "hub_api": {"asked": False}, "node": "node7", "port": 40000}
    diagnosis = Diagnosis()
    _judge_report(diagnosis, report, "slurm", "", server_args)
    assert all(problem.code == EXIT_JUPYTERHUB for problem in diagnosis.problems)
    return [problem.message for problem in diagnosis.problems]


def test_the_doctor_says_what_a_profiles_environment_lacks_for_collaboration_and_jupytext():
    site = parse_site_config(SITE)
    args = list(environment_server_args(site.clusters["main"].environment.extended_by(site.profile("course").environment),
                                        JOB_DIR))
    assert doctor_problems(probe_optional("teach"), args) == []
    assert doctor_problems(probe_optional("jh6"), args) == [
        "jupyter-collaboration is not installed in the environment of /venv/bin/python3; the profile's "
        "environment.collaboration needs jupyter-collaboration 5.x (for JupyterLab 4.6) (on node7). Fix: install it "
        "into the environment the profile's jobs use, or take the key out of the profile's environment.",
        "jupytext is not installed in the environment of /venv/bin/python3; the profile's environment.jupytext needs "
        "jupytext 1.16 or newer (on node7). Fix: install it into the environment the profile's jobs use, or take the "
        "key out of the profile's environment."]
    # A profile that turns nothing on needs nothing of them.
    assert doctor_problems(probe_optional("jh6"), []) == []
