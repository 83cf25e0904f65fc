"""Users and groups from LDAP, for real (tests/clusters/ldap.sh: OpenLDAP slapd, nslcd): NSS answers
for the directory's users dora and emil, hpchub finds their secondary groups, and a real hub with
JupyterHub's LDAP authenticator (examples/jupyterhub_config_ldap.py) logs dora in with her LDAP
password, offers her the course profile that emil does not get, and runs her server as her own Grid
Engine job. The hub-user -> unix-account map for real: hub user dora@uni.example spawns as dora."""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
from pathlib import Path

import pytest
import requests
from helpers.hub import Hub, jobs_of, run_hub, spawn, stop
from helpers.profiles import local_site_text
from helpers.support import REPO

from hpchub.core.accounts import unix_groups

pytestmark = [pytest.mark.ldap]

# tests/clusters/ldap.sh's directory (a test directory: these are no secrets).
PASSWORDS = {"dora": "dora-ldap-2026", "emil": "emil-ldap-2026"}
UIDS = {"dora": 20001, "emil": 20002}


@pytest.fixture(scope="session")
def ldap_directory() -> None:
    """The test directory is up: NSS resolves dora and emil (tests/clusters/ldap.sh up)."""
    try:
        found = {name: pwd.getpwnam(name).pw_uid for name in UIDS}
    except KeyError:
        found = {}
    if found != UIDS:
        message = "the test LDAP directory is not up (start it with tests/clusters/ldap.sh up)"
        if os.environ.get("HPCHUB_REQUIRE_CLUSTERS") == "1":
            pytest.fail(message)
        pytest.skip(message)


def test_the_directorys_users_come_through_nss_not_from_local_files(ldap_directory):
    local = {line.split(":", 1)[0] for line in Path("/etc/passwd").read_text().splitlines()}
    assert not local & set(UIDS)
    dora = pwd.getpwnam("dora")
    assert (dora.pw_uid, dora.pw_dir) == (20001, "/home/dora") and os.stat("/home/dora").st_uid == 20001
    # root acts as her (the hub's sudo submission), and she is who the kernel says.
    out = subprocess.run(["sudo", "-n", "-u", "dora", "id", "-un"], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "dora", out.stderr


def test_unix_groups_of_directory_users_include_their_secondary_groups(ldap_directory):
    assert unix_groups("dora") == {"dora", "course2026", "ldapusers"}
    assert unix_groups("emil") == {"emil", "ldapusers"}
    # nslcd does not list all groups (nss_disable_enumeration, as SSSD by default): hpchub asks for
    # this one user's groups (os.getgrouplist), so it needs no enumeration.
    assert "course2026" not in {group.gr_name for group in grp.getgrall()}


COURSE_PROFILE = """
  - slug: course
    name: "Course 2026 (LDAP group course2026)"
    cluster: sge
    queue: short.q
    unix_groups: [course2026]
    resources: {cores: 1, memory: 2G, walltime: "00:30:00"}
"""


class LdapHub(Hub):
    """The LDAP recipe's hub; hub users named by an address in uni.example run as that account."""

    def __init__(self, site_config: Path, state_dir: Path, **options):
        super().__init__(site_config, state_dir, config_file=REPO / "examples" / "jupyterhub_config_ldap.py", **options)

    def _env(self) -> dict[str, str]:
        return dict(super()._env(), HPCHUB_UNIX_ACCOUNT_DOMAINS="uni.example")


@pytest.fixture(scope="module")
def hub(ldap_directory, sge_cluster, tmp_path_factory):
    yield from run_hub(tmp_path_factory.mktemp("hub-ldap"), local_site_text("sge", COURSE_PROFILE),
                       ("dora", "dora@uni.example"), hub_class=LdapHub, poll_interval=5)


def login(hub: Hub, user: str, password: str) -> requests.Session:
    """The hub's login form, as a browser posts it; the session holds the login cookie on success."""
    session = requests.Session()
    session.get(f"{hub.url}/hub/login", timeout=30)
    response = session.post(f"{hub.url}/hub/login", allow_redirects=False, timeout=30, data={
        "username": user, "password": password, "_xsrf": session.cookies.get("_xsrf", "")})
    session.login_status = response.status_code  # type: ignore[attr-defined]
    return session


def spawn_form(session: requests.Session, hub: Hub) -> str:
    response = session.get(f"{hub.url}/hub/spawn", timeout=60)
    assert response.status_code == 200, response.text[:500]
    return response.text


@pytest.mark.e2e
@pytest.mark.sge
def test_ldap_login_group_profile_and_a_job_as_the_directory_user(hub, client):
    assert login(hub, "dora", "not-her-password").login_status == 403
    dora = login(hub, "dora", PASSWORDS["dora"])
    assert dora.login_status == 302, hub.log_tail()
    emil = login(hub, "emil", PASSWORDS["emil"])
    assert emil.login_status == 302
    # course2026 is a secondary LDAP group of dora's only (memberUid): the card is hers alone.
    assert 'value="course"' in spawn_form(dora, hub) and 'value="small"' in spawn_form(dora, hub)
    emils_form = spawn_form(emil, hub)
    assert 'value="small"' in emils_form and 'value="course"' not in emils_form
    response = hub.api("POST", "/users/emil/server", json={"profile": "course"})
    assert response.status_code == 400 and "'course' is not available to you" in response.json()["message"]

    server = spawn(hub, "dora", {"profile": "course"})
    job_id = server["state"]["job_id"]
    job = jobs_of(client, "dora")[job_id]
    assert (job.user, job.name, job.queue) == ("dora", "hpchub-dora-course", "short.q")
    owner = subprocess.run(["qstat", "-u", "dora"], capture_output=True, text=True, timeout=30).stdout
    assert any(line.split()[:1] == [job_id] and line.split()[3] == "dora" for line in owner.splitlines())
    assert hub.get_user_url("dora", "api/status").status_code == 200
    stop(hub, "dora")
    assert job_id not in jobs_of(client, "dora")


@pytest.mark.e2e
@pytest.mark.sge
def test_a_hub_user_named_by_address_runs_as_the_unix_account(hub, client):
    for name in ("dora@uni.example", "dora@elsewhere.example"):
        assert hub.api("POST", f"/users/{name}").status_code in (201, 409)
    refused = hub.api("POST", "/users/dora@elsewhere.example/server", json={"profile": "small"})
    assert refused.status_code == 403 and "'elsewhere.example' is not one of" in refused.json()["message"]

    server = spawn(hub, "dora@uni.example", {"profile": "course"})  # dora's LDAP group, through the map
    job_id = server["state"]["job_id"]
    assert server["state"]["job_user"] == "dora"
    job = jobs_of(client, "dora")[job_id]
    assert (job.user, job.name) == ("dora", "hpchub-dora-course")
    assert hub.get_user_url("dora@uni.example", "api/status").status_code == 200
    stop(hub, "dora@uni.example")
    assert job_id not in jobs_of(client, "dora")
