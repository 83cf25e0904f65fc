"""JupyterHub's internal_ssl for servers that run as batch jobs (hub side, no I/O but reading).

With ``c.JupyterHub.internal_ssl = True`` JupyterHub makes a key and certificate for each server
before ``Spawner.start()`` (``create_certs``, then ``move_certs``; the result is
``Spawner.cert_paths``) in a directory only the hub can read. The job runs as the user, maybe on
another host, so the PEM texts travel with the job's other secrets into the user-only job
directory, and the job's environment points JupyterHub's variables at those copies.

The certificate must name the address the hub and the proxy connect to (they check it), and
the node is not known before the job runs: ``node_alt_names`` turns the addresses of the nodes
the job may land on into subject alternative names (see ``Spawner.ssl_alt_names``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from pathlib import Path

# File name in the job directory -> key of JupyterHub's cert_paths.
TLS_FILES = {"tls.key": "keyfile", "tls.crt": "certfile", "ca.crt": "cafile"}
# Environment variable jupyterhub-singleuser reads -> file name in the job directory.
TLS_ENV = {"JUPYTERHUB_SSL_KEYFILE": "tls.key", "JUPYTERHUB_SSL_CERTFILE": "tls.crt", "JUPYTERHUB_SSL_CLIENT_CA": "ca.crt"}


def tls_files(cert_paths: Mapping[str, str]) -> dict[str, str]:
    """File name -> PEM text of the server's key, certificate and the CA bundle it trusts (the
    hub's and the proxy's CAs), read from the paths JupyterHub's create_certs returned."""
    missing = [key for key in TLS_FILES.values() if not cert_paths.get(key)]
    if missing:
        raise ValueError(f"JupyterHub's cert_paths lacks {', '.join(missing)}")
    return {name: Path(cert_paths[key]).read_text() for name, key in TLS_FILES.items()}


def tls_env(job_dir: str) -> dict[str, str]:
    """The job's JUPYTERHUB_SSL_* variables for the files written by ``tls_files`` into ``job_dir``
    (replacing the hub-side paths JupyterHub's get_env puts there)."""
    return {variable: f"{job_dir.rstrip('/')}/{name}" for variable, name in TLS_ENV.items()}


def node_alt_names(addresses: Iterable[str]) -> list[str]:
    """Subject alternative names for the addresses a server may be reached at: ``IP:`` for IP
    addresses, ``DNS:`` for host names; sorted, without duplicates."""
    names = set()
    for address in addresses:
        address = address.strip()
        if not address:
            continue
        try:
            names.add(f"IP:{ipaddress.ip_address(address)}")
        except ValueError:
            names.add(f"DNS:{address}")
    return sorted(names)
