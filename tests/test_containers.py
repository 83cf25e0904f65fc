"""Containers per profile (environment.container): the site config's checks, the launch wrapped in
podman / apptainer / singularity on Slurm and Grid Engine (golden files: tests/golden/example-containers--*),
every script valid for bash and shellcheck, a missing image failing the job with image and node, the
secrets read inside the container, and images offered to users by label only."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import textwrap
import time

import pytest
from helpers.support import SITE_CONFIGS, write_job_side, write_stand_in_server

from hpchub.core.config import SiteConfigError, load_site_config, parse_site_config
from hpchub.core.jobs import engine_job, server_job
from hpchub.core.options import OptionsError, resolve_request
from hpchub.core.render import UserAccount
from hpchub.hub.form import read_form, render_spawn_form

EXAMPLE = SITE_CONFIGS / "example-containers.yaml"
USER = UserAccount("alice", "/home/alice")
SHELLCHECK = shutil.which("shellcheck")

SITE_HEAD = """\
site: Test
clusters:
  main:
    scheduler: slurm
    submit: {via: sudo}
    environment:
      container:
        runtime: podman
        image: /srv/images/lab.tar
    queues:
      short: {max_walltime: "04:00:00", max_gpus: 2}
profiles:
  - slug: small
    name: Small
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


def with_profile_container(container_yaml: str) -> str:
    return SITE_HEAD + "    environment:\n      container:\n" + textwrap.indent(textwrap.dedent(container_yaml), " " * 8)


@pytest.mark.parametrize(("container", "line", "key", "message"), [
    ("runtime: docker\n", 20, "profiles[small].environment.container.runtime", "'podman', 'apptainer' or 'singularity'"),
    ("image: images/lab.tar\n", 20, "profiles[small].environment.container.image", "relative path"),
    ("runtime: apptainer\nimage: lab.sif\n", 21, "profiles[small].environment.container.image", "relative path"),
    ("binds: [scratch]\n", 20, "profiles[small].environment.container.binds[0]", "not an absolute path"),
    ("binds: [\"/a\\n--privileged\"]\n", 20, "profiles[small].environment.container.binds[0]", "single line"),
    ("binds: [\"--privileged\"]\n", 20, "profiles[small].environment.container.binds[0]", "read as a flag"),
    ("binds: [\"/data:/data:rx\"]\n", 20, "profiles[small].environment.container.binds[0]", "neither ro nor rw"),
    ("binds: [\"/data:data\"]\n", 20, "profiles[small].environment.container.binds[0]", "not an absolute path"),
    ("binds: [\"/a,/etc:/etc\"]\n", 20, "profiles[small].environment.container.binds[0]", "not allowed in a bind"),
    ("image: \"-v /:/host\"\n", 20, "profiles[small].environment.container.image", "read as a flag"),
    ("image: /srv/lab.sif\n", 20, "profiles[small].environment.container.image", "podman cannot run it"),
    ("runtime: apptainer\nimage: \"oci-archive:/srv/lab.tar\"\n", 21, "profiles[small].environment.container.image",
     "give apptainer a .sif file"),
    ("image: \"oci-archive:lab.tar\"\n", 20, "profiles[small].environment.container.image", "must be absolute"),
    ("image: \"Lab:Latest\"\n", 20, "profiles[small].environment.container.image", "neither an absolute path"),
    ("images: [{label: A, image: /a.tar}, {label: A, image: /b.tar}]\n", 20,
     "profiles[small].environment.container.images[1].label", "used by an earlier image"),
    ("image: /c.tar\nimages: [{label: A, image: /a.tar}, {label: B, image: /b.tar}]\n", 20,
     "profiles[small].environment.container.image", "must be one of them"),
    ("options: [--rm]\ngpus: sometimes\n", 21, "profiles[small].environment.container.gpus", "'auto' or 'off'"),
])
def test_bad_container_names_file_line_key_and_problem(tmp_path, container, line, key, message):
    problems = problems_of(with_profile_container(container), tmp_path)
    assert any(p.startswith(f":{line}: {key}: ") and message in p for p in problems), problems


def test_container_needs_a_runtime_and_an_image(tmp_path):
    text = SITE_HEAD.replace("        runtime: podman\n        image: /srv/images/lab.tar\n", "        binds: [/x]\n")
    problems = problems_of(text, tmp_path)
    assert ":7: clusters.main.environment.container: runtime is required: podman, apptainer or singularity" in problems
    assert ":7: clusters.main.environment.container: give an image (or images to pick from)" in problems


def test_a_venv_of_the_node_is_refused_around_a_container(tmp_path):
    text = SITE_HEAD.replace("    environment:\n", "    environment:\n      venv: /opt/venv\n")
    assert problems_of(text, tmp_path) == [
        ":7: clusters.main.environment.venv: a venv of the node means nothing inside the container image: the image "
        "brings its own Python (modules and the prologue still run on the node, e.g. to load the container runtime)"]


def test_a_profile_container_is_merged_into_the_cluster_one():
    site = parse_site_config(with_profile_container("binds: [/scratch]\ngpus: \"off\"\noptions: [--pull=never]\n")
                             .replace("        image: /srv/images/lab.tar\n",
                                      "        image: /srv/images/lab.tar\n        binds: [/data]\n"))
    profile = site.profile("small")
    container = site.clusters["main"].environment.extended_by(profile.environment).container
    assert container is not None
    assert (container.runtime, container.image, container.binds, container.gpus, container.options) == (
        "podman", "/srv/images/lab.tar", ["/data", "/scratch"], "off", ["--pull=never"])


def test_example_profiles_use_every_runtime_on_both_schedulers():
    site = load_site_config(EXAMPLE)
    seen = set()
    for profile in site.profiles:
        cluster = site.clusters[profile.cluster]
        container = cluster.environment.extended_by(profile.environment).container
        seen.add((cluster.scheduler, container.runtime))
    assert {("slurm", "apptainer"), ("slurm", "podman"), ("sge", "podman"), ("sge", "singularity")} <= seen


# --- the rendered scripts -----------------------------------------------------------------------

def example_scripts() -> list[tuple[str, str]]:
    """Every example profile's server job and engine job, by name."""
    site = load_site_config(EXAMPLE)
    scripts = []
    for profile in site.profiles:
        request = resolve_request(site, profile, {})
        scripts.append((f"{profile.slug}-server", server_job(site, request, USER).script))
        engines = engine_job(site, request, USER, 2, "123", ["ipengine", "--file=/home/alice/x.json"], key="k")
        scripts.append((f"{profile.slug}-engines", engines.script))
    return scripts


@pytest.mark.parametrize(("name", "script"), example_scripts(), ids=lambda value: value if len(value) < 40 else "")
def test_container_scripts_pass_bash_and_shellcheck(name, script):
    result = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    if SHELLCHECK is None:
        pytest.skip("shellcheck is not installed (tests/clusters/install-packages.sh installs it)")
    # SC2140: the templates splice a shell-quoted value into a message as "text "VALUE" text".
    result = subprocess.run([SHELLCHECK, "--shell=bash", "--severity=warning", "--exclude=SC2140", "-"],
                            input=script, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_podman_line_has_the_node_network_the_home_and_no_secret():
    site = load_site_config(EXAMPLE)
    request = resolve_request(site, site.profile("student"), {})
    script = server_job(site, request, USER).script
    run = script[script.index("podman run"):]
    for part in ("--rm --userns keep-id --network host --name \"$hpchub_container\"",
                 "--volume /home/alice:/home/alice --workdir /home/alice",
                 "--env 'HPCHUB_*'", "--env JOB_ID", "oci-archive:/srv/images/course.tar",
                 "/bin/sh -c 'set -a && . \"$1\" && set +a && shift && exec \"$@\"' hpchub-secrets "
                 "/home/alice/.hpchub/jobs/hpchub-alice-student/env /bin/sh "
                 "/home/alice/.hpchub/jobs/hpchub-alice-student/start-server.sh jupyterhub-singleuser"):
        assert part in run, part
    assert "=" not in run.split("oci-archive:")[0].replace("--env ", ""), "a value on podman's command line"
    # The secrets file is read in the container only, never by the job's own shell.
    assert "\n. /home/alice/.hpchub/jobs/hpchub-alice-student/env" not in script


def test_apptainer_line_binds_and_passes_the_gpu():
    site = load_site_config(EXAMPLE)
    script = server_job(site, resolve_request(site, site.profile("lab-gpu"), {}), USER).script
    assert "exec apptainer exec --nv --bind /scratch,/data/shared:/data:ro \\\n    /srv/images/jupyterlab.sif \\\n" \
        in script
    assert "module load apptainer" in script.split("exec apptainer")[0]
    without_gpu = server_job(site, resolve_request(site, site.profile("lab"), {}), USER).script
    assert "--nv" not in without_gpu


def test_multi_node_engines_check_and_start_the_image_on_every_node():
    site = load_site_config(EXAMPLE)
    request = resolve_request(site, site.profile("podman"), {"nodes": "2"})
    script = engine_job(site, request, USER, 4, "123", ["ipengine"], key="k").script
    task = script[script.index("srun --kill-on-bad-exit=0 /bin/bash -c "):]
    assert "[ -r /srv/images/lab4.tar ]" in task and "XDG_RUNTIME_DIR" in task and "podman run --rm" in task


# --- on a node: a missing image is a job failure naming image and node ---------------------------

def node_with(tmp_path, tools: dict[str, str]) -> dict[str, str]:
    """A PATH with these fake commands (name -> shell body) and the basic tools."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in tools.items():
        if name == "jupyterhub-singleuser":
            write_stand_in_server(bin_dir / name, body)
            continue
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}


def script_of(tmp_path, site_text: str) -> str:
    """Profile small's server job for a user whose home is ``tmp_path``, with its secrets file there."""
    site = parse_site_config(site_text)
    user = UserAccount("alice", str(tmp_path))
    job = server_job(site, resolve_request(site, site.profile("small"), {}), user)
    secrets = tmp_path / ".hpchub" / "jobs" / job.key / "env"
    secrets.parent.mkdir(parents=True)
    secrets.write_text("JUPYTERHUB_API_TOKEN=secret-token\n")
    write_job_side(secrets.parent)
    return job.script


def run_server_script(tmp_path, site_text: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script_of(tmp_path, site_text)], capture_output=True, text=True, env=env,
                          timeout=30, cwd=tmp_path)


def test_missing_image_file_fails_the_job_with_image_and_node(tmp_path):
    env = node_with(tmp_path, {"podman": "echo podman must not run >&2; exit 99"})
    result = run_server_script(tmp_path, SITE_HEAD, env)
    assert result.returncode == 1
    assert f"hpchub: container image /srv/images/lab.tar is not readable on {socket.gethostname()}" in result.stderr


def test_image_name_neither_stored_nor_pullable_fails_with_podmans_message_and_node(tmp_path):
    env = node_with(tmp_path, {"podman": textwrap.dedent("""\
        [ "$1 $2" = "image exists" ] && exit 1
        [ "$1" = pull ] && { echo "Error: initializing source docker://lab:5: pinging registry" >&2; exit 125; }
        exit 99""")})
    result = run_server_script(tmp_path, SITE_HEAD.replace("/srv/images/lab.tar", "localhost/lab:5"), env)
    assert result.returncode == 1
    assert "Error: initializing source docker://lab:5" in result.stderr
    assert f"container image localhost/lab:5 is not on {socket.gethostname()} and podman could not pull it" \
        in result.stderr


def test_runtime_missing_on_the_node_fails_the_job(tmp_path):
    result = run_server_script(tmp_path, SITE_HEAD.replace("runtime: podman", "runtime: apptainer")
                               .replace("/srv/images/lab.tar", "/srv/images/lab.sif"), node_with(tmp_path, {}))
    assert result.returncode == 1
    assert f"apptainer is not on the PATH on {socket.gethostname()}" in result.stderr


@pytest.mark.parametrize("how", ["terminated", "killed", "ended"])
def test_the_container_is_stopped_when_the_job_ends_however_it_ends(tmp_path, how):
    """podman's conmon leaves the job's process tree, so the scheduler cannot end the container: the
    job stops it on TERM (USR2 on Grid Engine), and a watcher outside the job once the job is gone,
    even after a SIGKILL. The stand-in podman's `stop` ends its `run`, as the real one does."""
    image = tmp_path / "lab.tar"
    image.write_text("")
    calls = tmp_path / "podman-calls"
    env = node_with(tmp_path, {"podman": textwrap.dedent(f"""\
        echo "$*" >> {calls}
        [ "$1" = run ] && {{ echo $$ > {tmp_path}/container-pid; exec sleep {0.2 if how == "ended" else 30}; }}
        [ "$1" = stop ] && kill "$(cat {tmp_path}/container-pid)" 2>/dev/null
        exit 0""")})
    job = subprocess.Popen(["bash", "-c", script_of(tmp_path, SITE_HEAD.replace("/srv/images/lab.tar", str(image)))],
                           env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: calls.exists() and calls.read_text().startswith("run "))
        if how == "terminated":
            job.terminate()
        elif how == "killed":
            job.kill()
        assert job.wait(timeout=10) == {"terminated": 143, "killed": -9, "ended": 0}[how]
        wait_for(lambda: len(calls.read_text().splitlines()) >= 2)
    finally:
        job.kill()
    run, *stops = calls.read_text().splitlines()
    name = run.split(" --name ")[1].split()[0]
    assert name.startswith("hpchub-0-") and stops[0] == f"stop --time 10 --ignore {name}"
    assert set(stops) <= {stops[0], f"rm --force --ignore {name}"}


def test_a_job_told_to_end_removes_its_container_when_no_one_records_its_exit(tmp_path):
    """Grid Engine's USR2 (qdel with -notify) reaches every process with the job's group id, also
    podman's conmon, which it ends: then no one records the container's exit, and `podman run` waits
    (20 s with podman 4.3) until the container is removed. The stand-in's `stop` does not end its `run`,
    `rm` does: the job ends at once, having removed its container."""
    image = tmp_path / "lab.tar"
    image.write_text("")
    calls = tmp_path / "podman-calls"
    env = node_with(tmp_path, {"podman": textwrap.dedent(f"""\
        echo "$*" >> {calls}
        [ "$1" = run ] && {{ echo $$ > {tmp_path}/container-pid; exec sleep 30; }}
        [ "$1" = rm ] && kill "$(cat {tmp_path}/container-pid)" 2>/dev/null
        exit 0""")})
    job = subprocess.Popen(["bash", "-c", script_of(tmp_path, SITE_HEAD.replace("/srv/images/lab.tar", str(image)))],
                           env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: calls.exists() and calls.read_text().startswith("run "))
        job.send_signal(signal.SIGUSR2)
        job.wait(timeout=5)
    finally:
        job.kill()
    run, stop, remove, *_ = calls.read_text().splitlines()
    name = run.split(" --name ")[1].split()[0]
    assert (stop, remove) == (f"stop --time 10 --ignore {name}", f"rm --force --ignore {name}")


def wait_for(condition, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_server_starts_in_the_container_with_the_secrets_read_inside(tmp_path):
    """A stand-in runtime that runs what follows the image: the command sees the secrets file's
    values and the job's variables, and the runtime's own command line carries no secret."""
    image = tmp_path / "lab.sif"
    image.write_text("")
    fake_apptainer = textwrap.dedent(f"""\
        echo "runtime args: $*" > {tmp_path}/runtime-args
        while [ "$1" != {image} ]; do shift; done; shift
        exec "$@\"""")
    fake_server = 'echo "token=$JUPYTERHUB_API_TOKEN end=${HPCHUB_JOB_END:+set} args=$*"'
    env = node_with(tmp_path, {"apptainer": fake_apptainer, "jupyterhub-singleuser": fake_server})
    text = SITE_HEAD.replace("runtime: podman", "runtime: apptainer").replace("/srv/images/lab.tar", str(image))
    result = run_server_script(tmp_path, text, env)
    assert result.returncode == 0, result.stderr
    assert "token=secret-token end=set args=--ServerApp.jpserver_extensions=hpchub_job.extension=True" in result.stdout
    assert "secret-token" not in (tmp_path / "runtime-args").read_text()


# --- images offered to users ---------------------------------------------------------------------

def test_user_picks_an_image_by_label_and_only_the_admins_image_reaches_the_script():
    site = load_site_config(EXAMPLE)
    profile = site.profile("podman")
    request = resolve_request(site, profile, {"image": "R and Python"})
    assert "    docker-archive:/srv/images/lab-r.tar \\\n" in server_job(site, request, USER).script
    default = server_job(site, resolve_request(site, profile, {}), USER).script
    assert "    oci-archive:/srv/images/lab4.tar \\\n" in default


@pytest.mark.parametrize("given", ["/srv/images/lab-r.tar", "docker-archive:/srv/images/lab-r.tar", "r and python",
                                   "R and Python\n", ["R and Python"], "$(id)"])
def test_an_image_not_on_the_list_is_refused(given):
    site = load_site_config(EXAMPLE)
    with pytest.raises(OptionsError) as caught:
        resolve_request(site, site.profile("podman"), {"image": given})
    assert set(caught.value.problems) == {"image"}


def test_a_profile_without_choices_refuses_another_image():
    site = load_site_config(EXAMPLE)
    with pytest.raises(OptionsError) as caught:
        resolve_request(site, site.profile("lab"), {"image": "/srv/images/other.sif"})
    assert caught.value.problems == {"image": "profile 'lab' does not let users choose the container image"}
    with pytest.raises(OptionsError):
        resolve_request(load_site_config(SITE_CONFIGS / "local-slurm.yaml"),
                        load_site_config(SITE_CONFIGS / "local-slurm.yaml").profiles[0], {"image": "x"})


def test_form_offers_the_labels_and_the_card_names_the_image():
    site = load_site_config(EXAMPLE)
    html = render_spawn_form(site, site.profiles)
    assert '<select name="podman--image" id="podman--image"' in html
    assert '<option value="R and Python" >R and Python</option>' in html
    assert "/srv/images/lab-r.tar" not in html
    assert '<div class="hpchub-image">container image Python 3.11, JupyterLab 4</div>' in html
    assert '<div class="hpchub-image">container image /srv/images/jupyterlab.sif</div>' in html
    assert 'name="lab--image"' not in html  # one image: nothing to pick
    options = read_form({"profile": ["podman"], "podman--image": ["R and Python"]}).options
    assert options == {"profile": "podman", "image": "R and Python"}


def test_render_cli_shows_the_container(tmp_path):
    result = subprocess.run([os.environ.get("HPCHUB_VENV", "/opt/hpchub/venv") + "/bin/hpchub", "render",
                             str(EXAMPLE), "--profile", "podman", "--user", "root", "--set", "image=R and Python"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "docker-archive:/srv/images/lab-r.tar" in result.stdout


def test_engines_run_in_the_image_the_notebooks_user_picked(monkeypatch):
    from hpchub.core.jobs import ENV_PARENT_IMAGE
    from hpchub.parallel import HPCEngineSetLauncher

    site = load_site_config(EXAMPLE)
    server = server_job(site, resolve_request(site, site.profile("podman"), {"image": "R and Python"}), USER)
    assert "export HPCHUB_IMAGE='R and Python'\n" in server.script
    monkeypatch.setenv(ENV_PARENT_IMAGE, "R and Python")
    launcher = HPCEngineSetLauncher(site_config=str(EXAMPLE), profile="podman", options={})
    assert "docker-archive:/srv/images/lab-r.tar" in launcher.prepare(2, "alice").script
    monkeypatch.setenv(ENV_PARENT_IMAGE, "an image this profile does not offer")
    assert "oci-archive:/srv/images/lab4.tar" in launcher.prepare(2, "alice").script


def test_doctor_says_the_container_did_not_start_and_where_it_is_configured():
    from hpchub.admin.doctor import EXIT_ENVIRONMENT, _no_report_problem
    from hpchub.core.jobs import probe_job

    site = load_site_config(EXAMPLE)
    request = resolve_request(site, site.profile("student"), {})
    job = probe_job(site, request, USER, [])
    log = ("hpchub: job 7 for alice started on node2 at 2026-12-07T15:00:00\n"
           "hpchub: container image /srv/images/course.tar is not readable on node2\n")
    problem = _no_report_problem(site, request, job, "7", log, None, True)
    assert problem.code == EXIT_ENVIRONMENT
    assert problem.message.startswith("The job's container did not start on node2: hpchub: container image "
                                      "/srv/images/course.tar is not readable on node2. Fix: the container of "
                                      f"{EXAMPLE}:23 (clusters.course.environment) needs its runtime")
    assert "[ -r /srv/images/course.tar ]" in job.script  # the probe runs in the image too


def test_check_warns_about_an_image_others_can_change_and_notes_one_it_cannot_see(tmp_path):
    from hpchub.admin.checks import container_findings

    images = tmp_path / "images"
    images.mkdir()
    images.chmod(0o755)
    loose = images / "lab.tar"
    loose.write_text("")
    loose.chmod(0o666)
    text = with_profile_container(f"images: [{{label: A, image: {loose}}}, {{label: B, image: /nowhere/b.tar}}]\n")
    path = tmp_path / "site.yaml"
    path.write_text(text)
    findings = [(finding.level, finding.line, finding.message) for finding in container_findings(load_site_config(path))]
    assert findings[0][:2] == ("warning", 20)
    assert findings[0][2].startswith(f"profiles[small].environment.container.images[0].image: container image {loose} "
                                     "is writable by its group and everyone (mode 0666)")
    assert findings[1] == ("info", 20, "profiles[small].environment.container.images[1].image: /nowhere/b.tar is not "
                                       "on this host: every node must have it (hpchub doctor --profile small runs a "
                                       "probe job in it)")
    loose.chmod(0o644)
    assert [finding.level for finding in container_findings(load_site_config(path))] == ["info"]
