"""Whom the hub acts as over SSH, on the real login node (tests/clusters/login.sh): never the
accounts it uses for itself (the query account, the service account that sudo's) nor the site's
service accounts, whatever a hub user's name maps to; and hpchub-job on the login node refuses to
work for a system account, however it was reached."""

from __future__ import annotations

import pwd
import subprocess
from pathlib import Path

import pytest
from helpers.profiles import local_site_text

from hpchub.core.config import parse_site_config
from hpchub.transports.cluster import AccountRefused, client_for

pytestmark = [pytest.mark.ssh, pytest.mark.slurm]

JOB_HELPER = "/opt/hpchub/venv/bin/hpchub-job"
KEY = "hpchub-test-refused-account"


def ssh_site(login_node, account: str):
    keys = str(login_node.keys["alice"]).replace("alice", "{user}")
    submit = (f"submit: {{via: ssh, host: {login_node.host}, {account}, key: '{keys}', "
              f"known_hosts: {login_node.known_hosts}, jobfiles: {JOB_HELPER}}}")
    return parse_site_config(local_site_text("slurm").replace("submit: {via: sudo}", submit))


@pytest.mark.parametrize("account", [
    "user: '{user}', query_user: hpchub-svc",
    "user: hpchub-svc, sudo: true",
    "user: '{user}', query_user: alice, service_accounts: [hpchub-svc]",
], ids=["query_user", "sudo-service-account", "service_accounts"])
async def test_a_hub_user_mapped_to_a_service_account_is_refused_before_any_login(slurm_cluster, login_node, account):
    client = client_for(ssh_site(login_node, account), "slurm")
    service = login_node.service_account
    since = login_node.log_offset()
    with pytest.raises(AccountRefused, match="is a service account"):
        await client.submit(service, KEY, "#!/bin/bash\ntrue\n", {"env": "TOKEN=x\n"})
    with pytest.raises(AccountRefused, match="is a service account"):
        await client.cancel(service, ["1"])
    assert login_node.accepted_logins(since, service) == 0
    assert not (Path(pwd.getpwnam(service).pw_dir) / ".hpchub" / "jobs" / KEY).exists()


def test_hpchub_job_on_the_login_node_refuses_a_system_account(login_node):
    service = login_node.service_account  # a system account: uid below 1000
    assert pwd.getpwnam(service).pw_uid < 1000
    result = subprocess.run(login_node.ssh_argv(service, JOB_HELPER, "clean", "0"), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "not as a system account" in result.stderr and result.stdout == ""
