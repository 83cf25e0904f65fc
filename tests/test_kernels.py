"""The kernels an environment offers, on the profile's card: the probe lists them (``jupyter kernelspec
list --json`` where the job runs, stdlib only, no ``jupyter`` tolerated), the doctor and ``check --live``
record them next to the site config, the form reads that file; and the doctor shows the job's log when
an environment or an image does not start. On the local Slurm, a real doctor run reports the kernels
of /opt/hpchub/venv's environment and the card then lists them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.profiles import local_site_text
from helpers.support import SITE_CONFIGS, user_readable

from hpchub.admin.doctor import EXIT_ENVIRONMENT, Diagnosis, _judge_report, _no_report_problem, record_kernels
from hpchub.core import kernels
from hpchub.core.config import load_site_config
from hpchub.core.jobs import probe_job
from hpchub.core.options import resolve_request
from hpchub.core.render import UserAccount
from hpchub.hub.form import render_spawn_form
from hpchub.job import probe

USER = UserAccount("alice", "/home/alice")
KERNELSPEC_JSON = {"kernelspecs": {
    "python3": {"resource_dir": "/x/python3", "spec": {"argv": ["python"], "display_name": "Python 3 (ipykernel)",
                                                        "language": "python"}},
    "ir": {"resource_dir": "/x/ir", "spec": {"argv": ["R"], "display_name": "R", "language": "R"}},
}}


# --- the probe -----------------------------------------------------------------------------------

def fake_jupyter(tmp_path: Path, body: str) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "jupyter").write_text(f"#!/bin/sh\n{body}\n")
    (bin_dir / "jupyter").chmod(0o755)
    return str(bin_dir)


def test_probe_lists_the_kernelspecs_without_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", fake_jupyter(tmp_path, f"echo '{json.dumps(KERNELSPEC_JSON)}'") + ":/usr/bin:/bin")
    listed = probe._kernelspecs()
    assert listed == {"kernelspecs": {"python3": {"spec": {"display_name": "Python 3 (ipykernel)", "language": "python"}},
                                      "ir": {"spec": {"display_name": "R", "language": "R"}}}}
    assert [k.display_name for k in kernels.parse_kernelspecs({"kernelspecs": listed})] == ["Python 3 (ipykernel)", "R"]


def test_probe_lists_the_environments_kernels_not_the_probing_users(tmp_path, monkeypatch):
    """The real jupyter of /opt/hpchub/venv, with a kernel of the user's own in ~/.local/share/jupyter."""
    private = tmp_path / ".local" / "share" / "jupyter" / "kernels" / "private"
    private.mkdir(parents=True)
    (private / "kernel.json").write_text(json.dumps({"argv": ["x"], "display_name": "Mine", "language": "x"}))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("JUPYTER_DATA_DIR", raising=False)
    monkeypatch.setenv("PATH", "/opt/hpchub/venv/bin:/usr/bin:/bin")
    seen = subprocess.run(["jupyter", "kernelspec", "list", "--json"], capture_output=True, text=True, timeout=60)
    assert "private" in json.loads(seen.stdout)["kernelspecs"]  # what a plain listing as that user shows
    listed = probe._kernelspecs()
    assert list(listed["kernelspecs"]) == ["python3"], listed


@pytest.mark.parametrize(("body", "error"), [
    (None, "jupyter is not on the PATH"),
    ("echo 'No such subcommand' >&2; exit 2", "jupyter kernelspec list exited with 2: No such subcommand"),
    ("echo not json", "printed no JSON"),
    ("echo '{\"other\": 1}'", "printed no kernelspecs"),
])
def test_probe_tolerates_a_missing_or_failing_jupyter(tmp_path, monkeypatch, body, error):
    path = fake_jupyter(tmp_path, body) if body is not None else str(tmp_path)
    monkeypatch.setenv("PATH", f"{path}:/nonexistent")
    listed = probe._kernelspecs()
    assert error in listed["error"]
    assert kernels.parse_kernelspecs({"kernelspecs": listed}) is None


def test_the_probe_still_reports_everything_else_without_jupyter(tmp_path):
    """The whole probe, as the job runs it, with a Python that has no jupyter on its PATH."""
    script = Path(probe.__file__)
    result = subprocess.run([sys.executable, "-c", f"import json, socket, runpy; m = runpy.run_path({str(script)!r}); "
                             "s = socket.socket(); s.bind(('127.0.0.1', 0)); print(json.dumps(m['report']('', 'X', s)))"],
                            capture_output=True, text=True, env={"PATH": "/nonexistent"}, timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["kernelspecs"] == {"error": "jupyter is not on the PATH"} and report["python"]["version"]


@pytest.mark.parametrize("report", [{}, {"kernelspecs": "x"}, {"kernelspecs": {"error": "e"}},
                                    {"kernelspecs": {"kernelspecs": []}}])
def test_a_report_without_a_list_has_no_kernels(report):
    assert kernels.parse_kernelspecs(report) is None


def test_odd_entries_fall_back_to_the_kernels_name():
    listed = {"kernelspecs": {"kernelspecs": {"julia-1.10": {"spec": {"display_name": " "}}, "x": "y"}}}
    assert [(k.name, k.display_name) for k in kernels.parse_kernelspecs(listed)] == [("julia-1.10", "julia-1.10"),
                                                                                     ("x", "x")]


# --- the cache and the card ----------------------------------------------------------------------

def site_copy(tmp_path: Path, name: str = "example-containers.yaml", text: str | None = None):
    path = tmp_path / "site.yaml"
    path.write_text(text if text is not None else (SITE_CONFIGS / name).read_text())
    return load_site_config(path)


def diagnosis_of(site, slug: str, options: dict | None = None) -> Diagnosis:
    request = resolve_request(site, site.profile(slug), options or {})
    diagnosis = Diagnosis(request=request, user="alice", node="node2")
    _judge_report(diagnosis, {"kernelspecs": KERNELSPEC_JSON}, request.cluster_name, "")
    return diagnosis


def test_recorded_kernels_show_on_the_cards_of_profiles_with_that_environment(tmp_path):
    site = site_copy(tmp_path, "local-slurm.yaml")
    assert "hpchub-kernels" not in render_spawn_form(site, site.profiles)  # never probed: nothing claimed
    diagnosis = diagnosis_of(site, "small")
    assert "kernels: Python 3 (ipykernel) [python3], R [ir]" in diagnosis.facts
    assert record_kernels(site, diagnosis) == f"kernels recorded for the card in {tmp_path / 'site.kernels.json'}"
    cache = tmp_path / "site.kernels.json"
    assert cache.stat().st_mode & 0o777 == 0o644
    (entry,) = json.loads(cache.read_text())["environments"].values()
    assert entry["profile"] == "small" and entry["probed_as"] == "alice" and entry["node"] == "node2"
    html = render_spawn_form(site, site.profiles)
    # Both local profiles share the cluster's environment: one probe serves both cards.
    assert html.count('<div class="hpchub-kernels">Kernels: Python 3 (ipykernel), R</div>') == len(site.profiles)


def test_an_edited_environment_shows_no_kernels_until_probed_again(tmp_path):
    site = site_copy(tmp_path, "local-slurm.yaml")
    record_kernels(site, diagnosis_of(site, "small"))
    edited = site_copy(tmp_path, text=(SITE_CONFIGS / "local-slurm.yaml").read_text().replace(
        'OMP_NUM_THREADS: "1"', 'OMP_NUM_THREADS: "2"'))
    assert kernels.profile_kernels(edited, edited.profiles[0]) is None
    assert "hpchub-kernels" not in render_spawn_form(edited, edited.profiles)
    # Probed again: the old environment's entry, which could never show again, is dropped.
    record_kernels(edited, diagnosis_of(edited, "small"))
    assert list(json.loads((tmp_path / "site.kernels.json").read_text())["environments"]) == [
        kernels.environment_key(edited, edited.profiles[0])]


def test_each_image_has_its_own_kernels_and_a_user_env_is_not_recorded(tmp_path):
    site = site_copy(tmp_path)
    # Another image than the default: recorded under that image, the card (the default image) shows none.
    record_kernels(site, diagnosis_of(site, "podman", {"image": "R and Python"}))
    assert kernels.profile_kernels(site, site.profile("podman")) is None
    record_kernels(site, diagnosis_of(site, "podman"))
    assert kernels.profile_kernels(site, site.profile("podman")) == ["Python 3 (ipykernel)", "R"]
    production = site_copy(tmp_path, "example-slurm-production.yaml")
    assert record_kernels(production, diagnosis_of(production, "cpu-small", {"user_env": "envs/lab"})) is None


def test_a_cache_the_hub_cannot_use_is_ignored(tmp_path):
    site = site_copy(tmp_path, "local-slurm.yaml")
    cache = tmp_path / "site.kernels.json"
    for text in ("not json", json.dumps({"version": 99, "environments": {}}), json.dumps([1])):
        cache.write_text(text)
        assert kernels.profile_kernels(site, site.profiles[0]) is None
    record_kernels(site, diagnosis_of(site, "small"))  # a broken file is replaced
    assert kernels.profile_kernels(site, site.profiles[0]) == ["Python 3 (ipykernel)", "R"]


def test_a_cache_that_cannot_be_written_is_said_not_raised(tmp_path):
    site = site_copy(tmp_path, "local-slurm.yaml")
    (tmp_path / "site.kernels.json").mkdir()  # not a file: cannot be replaced, even by root
    assert record_kernels(site, diagnosis_of(site, "small")).startswith("kernels not recorded for the card: ")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["site.kernels.json", "site.yaml"]  # no temporary left
    assert "hpchub-kernels" not in render_spawn_form(site, site.profiles)


def test_card_text_counts_what_it_does_not_list():
    assert kernels.kernels_text(None) is None
    assert kernels.kernels_text([]) == "Kernels: none found"
    assert kernels.kernels_text([f"K{i}" for i in range(8)]) == "Kernels: K0, K1, K2, K3, K4, K5 and 2 more"


# --- the doctor shows the log of an environment or image that does not start ----------------------

def test_an_image_without_python3_is_a_container_failure_with_the_log():
    site = load_site_config(SITE_CONFIGS / "example-containers.yaml")
    request = resolve_request(site, site.profile("student"), {})
    job = probe_job(site, request, USER, [])
    log = ("hpchub: job 7 for alice started on node2 at 2026-12-07T15:00:00\n"
           "Error: runc: exec failed: unable to start container process: exec: \"python3\": executable file not "
           "found in $PATH\n")
    problem = _no_report_problem(site, request, job, "7", log, None, True)
    assert problem.code == EXIT_ENVIRONMENT
    assert problem.message.startswith("The job's container did not start on node2: Error: runc: exec failed")
    assert problem.message.endswith("is kept; it ends:\n  | hpchub: job 7 for alice started on node2 at "
                                    "2026-12-07T15:00:00\n  | Error: runc: exec failed: unable to start container "
                                    "process: exec: \"python3\": executable file not found in $PATH")


def test_a_user_env_that_does_not_load_names_it_with_the_log():
    site = load_site_config(SITE_CONFIGS / "example-slurm-production.yaml")
    request = resolve_request(site, site.profile("cpu-small"), {"user_env": "envs/lab"})
    job = probe_job(site, request, USER, [])
    log = "".join(f"line {i}\n" for i in range(20)) + "hpchub: your environment ~/envs/lab does not exist on n1\n"
    problem = _no_report_problem(site, request, job, "7", log, "n1", True)
    assert problem.code == EXIT_ENVIRONMENT
    assert problem.message.startswith("The user's own environment did not load on n1: hpchub: your environment "
                                      "~/envs/lab does not exist on n1. Fix: the user makes ~/envs/lab a venv")
    tail = problem.message.split("it ends:\n", 1)[1].splitlines()
    assert len(tail) == 12 and tail[0] == "  | line 9" and tail[-1].endswith("does not exist on n1")


# --- on the local Slurm: a real doctor run ------------------------------------------------------------

@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
def test_doctor_reports_and_records_the_kernels_of_the_venv_and_the_card_lists_them(tmp_path):
    site_path = user_readable(f"kernels-{tmp_path.name}.yaml", local_site_text("slurm"))
    cache = site_path.with_name(site_path.stem + ".kernels.json")
    cache.unlink(missing_ok=True)
    try:
        result = subprocess.run([sys.executable, "-m", "hpchub.admin.cli", "doctor", str(site_path), "--profile",
                                 "small", "--user", "bob"], capture_output=True, text=True,
                                timeout=240)
        assert "kernels: Python 3 (ipykernel) [python3]" in result.stdout, result.stdout + result.stderr
        assert f"kernels recorded for the card in {cache}" in result.stdout
        site = load_site_config(site_path)
        assert kernels.profile_kernels(site, site.profile("small")) == ["Python 3 (ipykernel)"]
        assert '<div class="hpchub-kernels">Kernels: Python 3 (ipykernel)</div>' in render_spawn_form(site,
                                                                                                      site.profiles)
    finally:
        cache.unlink(missing_ok=True)
