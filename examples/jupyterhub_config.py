"""JupyterHub config for hpchub on the local test clusters (examples/local.sh and the e2e tests).

Everything site-specific comes from the environment, so tests and the main command share it:

  HPCHUB_SITE_CONFIG   site config (default: site-configs/local-slurm.yaml of this checkout)
  HPCHUB_HUB_IP        address the hub listens on, reachable from compute nodes
                       (default: 10.77.0.1, the local Slurm's bridge, if this host has it)
  HPCHUB_PORT          public port of the proxy (default 8000)
  HPCHUB_HUB_PORT      the hub's own port on HPCHUB_HUB_IP (default 8081)
  HPCHUB_PROXY_API     the proxy's REST API URL if the proxy runs on its own (tests);
                       without it the hub starts configurable-http-proxy itself
  HPCHUB_STATE_DIR     database and cookie secret (default /var/lib/hpchub-hub)
  HPCHUB_PASSWORD      the test login password for alice, bob and carol (default: hpchub-test)
  HPCHUB_ADMIN_TOKEN   if set, a service 'hpchub-admin' with this token may drive the REST API
  HPCHUB_POLL_INTERVAL seconds between status queries of running servers (default 30)
  HPCHUB_START_TIMEOUT seconds a spawn may take, queue wait included (default 180)
  HPCHUB_CULL_TIMEOUT  seconds a server may be idle before the idle culler stops it (and so cancels its
                       job; default 3600, 0: no culler)
  HPCHUB_CULL_EVERY    seconds between the culler's checks (default 300, at most the timeout)
  HPCHUB_SHARING       1: users may share their running servers from the home page (docs/sharing.md)
"""

import importlib.util
import os
import socket
import sys
from pathlib import Path

import hpchub

c = get_config()  # noqa: F821 - provided by JupyterHub

repo = Path(__file__).resolve().parent.parent
state = Path(os.environ.get("HPCHUB_STATE_DIR", "/var/lib/hpchub-hub"))
state.mkdir(parents=True, exist_ok=True)


def _local_address(candidate: str) -> bool:
    try:
        with socket.socket() as sock:
            sock.bind((candidate, 0))
        return True
    except OSError:
        return False


hub_ip = os.environ.get("HPCHUB_HUB_IP") or ("10.77.0.1" if _local_address("10.77.0.1") else "127.0.0.1")

c.JupyterHub.spawner_class = "hpchub"
# hpchub's home and spawn-pending pages (job state, time left, cancel), over JupyterHub's own.
c.JupyterHub.template_paths = [hpchub.HUB_TEMPLATES]
c.HPCSpawner.site_config = os.environ.get("HPCHUB_SITE_CONFIG", str(repo / "site-configs" / "local-slurm.yaml"))
c.HPCSpawner.startup_poll_interval = 1.0
c.Spawner.poll_interval = int(os.environ.get("HPCHUB_POLL_INTERVAL", "30"))
c.Spawner.start_timeout = int(os.environ.get("HPCHUB_START_TIMEOUT", "180"))
c.Spawner.http_timeout = 90
c.Spawner.default_url = "/lab"
# Several servers per user (e.g. a CPU and a GPU one), each its own job with its own profile; the
# default server works as before.
c.JupyterHub.allow_named_servers = True
c.JupyterHub.named_server_limit_per_user = 4

c.JupyterHub.bind_url = f"http://127.0.0.1:{os.environ.get('HPCHUB_PORT', '8000')}"
c.JupyterHub.hub_ip = hub_ip  # jobs on compute nodes call the hub here
c.JupyterHub.hub_port = int(os.environ.get("HPCHUB_HUB_PORT", "8081"))
c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")
# Servers are batch jobs: a hub restart must not stop them (the spawner reattaches to its jobs).
c.JupyterHub.cleanup_servers = False

proxy_api = os.environ.get("HPCHUB_PROXY_API")
if proxy_api:
    c.ConfigurableHTTPProxy.should_start = False
    c.ConfigurableHTTPProxy.api_url = proxy_api
else:
    c.ConfigurableHTTPProxy.command = ["/opt/hpchub/proxy/node_modules/.bin/configurable-http-proxy"]
    c.ConfigurableHTTPProxy.pid_file = str(state / "proxy.pid")

# A test login: alice, bob and carol with one password; each spawns as the unix user of that name.
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = os.environ.get("HPCHUB_PASSWORD", "hpchub-test")
c.Authenticator.allowed_users = {"alice", "bob", "carol"}
c.Authenticator.admin_users = set()

services: list[dict] = []
roles: list[dict] = []

# The idle culler stops servers nobody used for HPCHUB_CULL_TIMEOUT: stopping one cancels its job, so
# an idle notebook gives its cores back to the queue before its walltime ends. Pending spawns (jobs
# still in the queue) are never culled.
cull_timeout = int(os.environ.get("HPCHUB_CULL_TIMEOUT", "3600"))
if cull_timeout > 0 and importlib.util.find_spec("jupyterhub_idle_culler") is None:
    print("jupyterhub_config: jupyterhub-idle-culler is not installed (pip install jupyterhub-idle-culler): "
          "idle servers are not culled", file=sys.stderr)
elif cull_timeout > 0:
    cull_every = min(int(os.environ.get("HPCHUB_CULL_EVERY", "300")), cull_timeout)
    services.append({
        "name": "idle-culler",
        "command": [sys.executable, "-m", "jupyterhub_idle_culler", f"--timeout={cull_timeout}",
                    f"--cull-every={cull_every}"],
    })
    roles.append({
        "name": "idle-culler",
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": ["idle-culler"],
    })

admin_token = os.environ.get("HPCHUB_ADMIN_TOKEN")
if admin_token:
    services.append({"name": "hpchub-admin", "api_token": admin_token})
    roles.append({
        "name": "hpchub-admin",
        # read:metrics: scraping /hub/metrics (JupyterHub's and hpchub's series) with this token
        "scopes": ["admin:users", "admin:servers", "access:servers", "read:users", "list:users", "tokens",
                   "read:metrics"],
        "services": ["hpchub-admin"],
    })
# Sharing (docs/sharing.md): a "Share" page per running server, with a user, a group or a link. The
# 'user' role gets the 'shares' scope it needs; whoever joins a server runs code in it as its owner.
if os.environ.get("HPCHUB_SHARING") == "1":
    from hpchub.hub.sharing import sharing_roles

    c.HPCSpawner.sharing = True
    roles.extend(sharing_roles())

c.JupyterHub.services = services
c.JupyterHub.load_roles = roles
