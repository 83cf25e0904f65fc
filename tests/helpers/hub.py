"""A real JupyterHub with a real configurable-http-proxy, for the end-to-end tests.

The proxy runs on its own (as in production), so the hub can be restarted under it. Both
are stopped by pid at the end; the hub's database lives in a temporary directory.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import requests

from hpchub.core.config import load_site_config

from .support import REPO, user_readable

VENV = Path(os.environ.get("HPCHUB_VENV", "/opt/hpchub/venv"))
PROXY = Path("/opt/hpchub/proxy/node_modules/.bin/configurable-http-proxy")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


class Hub:
    def __init__(self, site_config: Path, state_dir: Path, poll_interval: int = 5, config_file: Path | None = None,
                 start_timeout: int = 180, user: str | None = None):
        self.site_config = site_config
        self.config_file = config_file or REPO / "examples" / "jupyterhub_config.py"
        self.state_dir = state_dir
        self.port = free_port()
        self.proxy_api_port = free_port()
        self.hub_port = free_port()
        self.proxy_token = secrets.token_hex(16)
        self.admin_token = secrets.token_hex(16)
        self.poll_interval = poll_interval
        self.start_timeout = start_timeout
        self.url = f"http://127.0.0.1:{self.port}"
        self.proxy: subprocess.Popen | None = None
        self.hub: subprocess.Popen | None = None
        self.hub_log = state_dir / "hub.log"
        # The account the hub process runs as (None: this process's, root in the tests); the proxy stays ours.
        self.user = user

    # -- processes --------------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("JUPYTERHUB_")}
        env.update(
            HPCHUB_SITE_CONFIG=str(self.site_config),
            HPCHUB_PORT=str(self.port),
            HPCHUB_HUB_PORT=str(self.hub_port),
            HPCHUB_PROXY_API=f"http://127.0.0.1:{self.proxy_api_port}",
            HPCHUB_STATE_DIR=str(self.state_dir),
            HPCHUB_ADMIN_TOKEN=self.admin_token,
            HPCHUB_POLL_INTERVAL=str(self.poll_interval),
            HPCHUB_START_TIMEOUT=str(self.start_timeout),
            CONFIGPROXY_AUTH_TOKEN=self.proxy_token,
            PATH=f"{VENV / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
        )
        if self.user is not None:
            env.update(HOME=str(self.state_dir), USER=self.user, LOGNAME=self.user)
        return env

    def _as_hub_account(self) -> dict:
        """Popen arguments that run the hub as ``self.user``, with no supplementary groups of ours."""
        if self.user is None:
            return {}
        account = pwd.getpwnam(self.user)
        os.chown(self.state_dir, account.pw_uid, account.pw_gid)
        return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}

    def start(self) -> None:
        self._start_proxy()
        config_file = self.config_file
        if self.user is not None:
            # The hub's account must read its config; the checkout may be root's alone (a clone under
            # /root, mode 700 on Debian). Where the example config is, it only names the default site.
            config_file = user_readable(f"jupyterhub_config-{self.port}.py", self.config_file.read_text())
        self.hub = subprocess.Popen(
            [str(VENV / "bin" / "jupyterhub"), "-f", str(config_file)],
            cwd=self.state_dir, env=self._env(), stdout=subprocess.DEVNULL, stderr=open(self.hub_log, "ab"),
            **self._as_hub_account(),
        )
        self._wait_until_up()

    def _start_proxy(self) -> None:
        if self.proxy is None:
            self.proxy = subprocess.Popen(
                [str(PROXY), "--ip", "127.0.0.1", "--port", str(self.port), "--api-ip", "127.0.0.1",
                 "--api-port", str(self.proxy_api_port), "--error-target", f"http://127.0.0.1:{self.port}/hub/error"],
                env=self._env(), stdout=subprocess.DEVNULL, stderr=open(self.state_dir / "proxy.log", "ab"),
            )

    def _wait_until_up(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.hub.poll() is not None:
                raise RuntimeError(f"jupyterhub exited with {self.hub.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/hub/api/", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"jupyterhub did not answer in {timeout} s:\n{self.log_tail()}")

    def stop_hub(self) -> None:
        if self.hub is not None and self.hub.poll() is None:
            self.hub.send_signal(signal.SIGTERM)
            try:
                self.hub.wait(30)
            except subprocess.TimeoutExpired:
                self.hub.kill()
                self.hub.wait()
        self.hub = None

    def restart_hub(self) -> None:
        self.stop_hub()
        self.start()

    def close(self) -> None:
        self.stop_hub()
        if self.proxy is not None:
            self.proxy.terminate()
            try:
                self.proxy.wait(10)
            except subprocess.TimeoutExpired:
                self.proxy.kill()
            self.proxy = None

    def submissions(self) -> int:
        """The jobs this hub has submitted so far (the spawner logs each submission), whatever the
        other lanes of tests/run.sh submit meanwhile for the same users."""
        try:
            return self.hub_log.read_text(errors="replace").count(": the submission took ")
        except FileNotFoundError:
            return 0

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.hub_log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no hub log)"

    # -- REST API ---------------------------------------------------------------------------
    def api(self, method: str, path: str, token: str | None = None, **kwargs) -> requests.Response:
        headers = {"Authorization": f"token {token or self.admin_token}"}
        return requests.request(method, f"{self.url}/hub/api{path}", headers=headers, timeout=30, **kwargs)

    def server(self, user: str, name: str = "") -> dict | None:
        model = self.api("GET", f"/users/{user}").json()
        return model.get("servers", {}).get(name)

    def wait_for_server(self, user: str, ready: bool = True, timeout: float = 120, name: str = "") -> dict | None:
        """Wait until the server is ready (or, with ready=False, until it is gone)."""
        deadline = time.monotonic() + timeout
        server = None
        while time.monotonic() < deadline:
            server = self.server(user, name)
            if ready and server and server.get("ready"):
                return server
            if not ready and not server:
                return None
            if ready and server is None:
                raise AssertionError(f"{user}'s server is gone (spawn failed?); hub log:\n{self.log_tail()}")
            time.sleep(0.5)
        raise AssertionError(f"{user}'s server not {'ready' if ready else 'gone'} after {timeout} s: {server}\n{self.log_tail()}")

    def poller_failures(self) -> float:
        """The most consecutive failed status queries of any cluster's poller now, from the hub's
        /hub/metrics (hpchub_status_poller_consecutive_failures)."""
        response = requests.get(f"{self.url}/hub/metrics", headers={"Authorization": f"token {self.admin_token}"},
                                timeout=30)
        response.raise_for_status()
        values = [float(line.rsplit(" ", 1)[1]) for line in response.text.splitlines()
                  if line.startswith("hpchub_status_poller_consecutive_failures{")]
        assert values, "no hpchub_status_poller_consecutive_failures series on /hub/metrics"
        return max(values)

    def wait_for_poller_answer(self, timeout: float = 90) -> float:
        """Wait until every poller's last status query succeeded; the seconds it took."""
        started = time.monotonic()
        while self.poller_failures() > 0:
            assert time.monotonic() - started < timeout, f"the status queries still fail after {timeout} s"
            time.sleep(0.5)
        return time.monotonic() - started

    def get_user_url(self, user: str, path: str, name: str = "") -> requests.Response:
        prefix = f"/user/{user}/{name + '/' if name else ''}"
        return requests.get(f"{self.url}{prefix}{path}", headers={"Authorization": f"token {self.admin_token}"}, timeout=30)


TLS_CONFIG = """
load_subconfig({example!r})
import os
c.JupyterHub.internal_ssl = True
# Jobs call the hub at hub_ip: its certificate must name that address.
c.JupyterHub.trusted_alt_names = ["IP:" + c.JupyterHub.hub_ip]
c.ConfigurableHTTPProxy.should_start = True
c.ConfigurableHTTPProxy.api_url = "https://127.0.0.1:" + os.environ["HPCHUB_TLS_PROXY_API_PORT"]
"""
"""jupyterhub_config.py of a hub with internal_ssl (format it with the example config's path)."""


class HubWithItsOwnProxy(Hub):
    """The hub starts the proxy itself, as it must for internal_ssl: it hands the proxy the
    certificates it creates at start-up, and stops the proxy when it stops."""

    def _env(self) -> dict[str, str]:
        env = super()._env()
        del env["HPCHUB_PROXY_API"]
        env["HPCHUB_TLS_PROXY_API_PORT"] = str(self.proxy_api_port)
        return env

    def _start_proxy(self) -> None:
        """Nothing: the hub starts its proxy."""


def run_hub(state: Path, site_text: str, users: Sequence[str] = (), hub_class: type[Hub] = Hub,
            leftover_slurm_profiles: Sequence[str] = (), **options) -> Iterator[Hub]:
    """A started hub for a test module: writes the site config, yields the Hub, then stops the
    users' servers and the hub and proxy, removes the users' new job logs and cancels the users'
    Slurm jobs of ``leftover_slurm_profiles`` (a generator for pytest fixtures)."""
    site = user_readable(f"{state.name}.yaml", site_text)  # notebooks in the jobs read it too
    hub = hub_class(site, state, **options)
    started = time.time()
    hub.start()
    try:
        yield hub
    finally:
        for user in users:
            hub.api("DELETE", f"/users/{user}/server")
        hub.close()
        loaded = load_site_config(site)
        remove_job_logs(users, since=started, clusters=tuple(loaded.clusters),
                        profiles=tuple(profile.slug for profile in loaded.profiles))
        cancel_slurm_jobs_named(users, leftover_slurm_profiles)


def cancel_slurm_jobs_named(users: Sequence[str], profiles: Sequence[str]) -> None:
    """Whatever a failed test left behind: cancel the users' hpchub server jobs of ``profiles``
    (by job name, as each user)."""
    if not profiles:
        return
    for user in users:
        for profile in profiles:  # one call per name: scancel keeps only the last --name given
            subprocess.run(["sudo", "-n", "-u", user, "scancel", f"--name=hpchub-{user}-{profile}"], capture_output=True)


def remove_job_logs(users, since: float, clusters: Sequence[str], profiles: Sequence[str]) -> None:
    """Delete the job output the test users' servers of ``profiles`` on ``clusters`` wrote since
    ``since`` (test cleanup). A job's log is named hpchub-USER-PROFILE[.s-NAME|.e-JOB].CLUSTER.JOBID.log:
    the tests of the other lane (tests/run.sh), which run meanwhile, keep theirs."""
    for user, cluster, profile in ((u, c, p) for u in users for c in clusters for p in profiles):
        for log in Path(f"/home/{user}/.hpchub/logs").glob(f"hpchub-{user}-{profile}.*{cluster}.*.log"):
            if not log.name.startswith(f"hpchub-{user}-{profile}.") or f".{cluster}." not in log.name:
                continue
            if log.stat().st_mtime >= since:
                log.unlink(missing_ok=True)


def jobs_of(client, user: str) -> dict:
    """The user's active jobs, straight from the scheduler."""
    import asyncio

    return {job_id: job for job_id, job in asyncio.run(client.status([user])).items() if job.state.is_active}


def active_job_names(client, user: str) -> dict[str, str]:
    """Job id -> name of the user's active jobs (status answers carry no names; see hpchub.schedulers)."""
    import asyncio

    active = jobs_of(client, user)
    return {job_id: name for job_id, name in asyncio.run(client.job_names(user)).items() if job_id in active}


def spawn(hub: Hub, user: str, options: dict, timeout: float = 120) -> dict:
    response = hub.api("POST", f"/users/{user}/server", json=options)
    assert response.status_code in (201, 202), response.text
    return hub.wait_for_server(user, timeout=timeout)


def stop(hub: Hub, user: str) -> None:
    assert hub.api("DELETE", f"/users/{user}/server").status_code in (202, 204)
    hub.wait_for_server(user, ready=False, timeout=90)


def spawn_failure_message(hub: Hub, user: str, options: dict) -> str:
    """POST a spawn that is expected to fail; return the message the user gets."""
    response = hub.api("POST", f"/users/{user}/server", json=options)
    if response.status_code == 202:  # slower than the hub's slow_spawn_timeout: the progress stream says why
        return requests.get(f"{hub.url}/hub/api/users/{user}/server/progress",
                            headers={"Authorization": f"token {hub.admin_token}"}, timeout=120).text
    assert response.status_code == 500, response.text
    return response.json()["message"]


def job_info_rpcs() -> int:
    """squeue calls slurmctld saw since the last `sdiag --reset`: REQUEST_JOB_INFO (all jobs)
    and REQUEST_JOB_INFO_SINGLE (squeue -j ID)."""
    text = subprocess.run(["sdiag"], capture_output=True, text=True, check=True).stdout
    return sum(int(count) for count in re.findall(r"REQUEST_JOB_INFO(?:_SINGLE)?\s+\(\s*\d+\)\s+count:(\d+)", text))
