"""hpchub.transports.tls: JupyterHub's per-server certificate files as texts for the job's user-only files."""

from __future__ import annotations

import pytest

from hpchub.transports.tls import node_alt_names, tls_env, tls_files


def test_tls_files_are_the_pem_texts_of_jupyterhubs_cert_paths(tmp_path):
    paths = {}
    for key, text in (("keyfile", "KEY"), ("certfile", "CERT"), ("cafile", "CA")):
        (tmp_path / key).write_text(f"-----BEGIN {text}-----\n")
        paths[key] = str(tmp_path / key)
    assert tls_files(paths) == {"tls.key": "-----BEGIN KEY-----\n", "tls.crt": "-----BEGIN CERT-----\n",
                                "ca.crt": "-----BEGIN CA-----\n"}
    with pytest.raises(ValueError, match="lacks cafile"):
        tls_files({"keyfile": paths["keyfile"], "certfile": paths["certfile"]})


def test_tls_env_points_jupyterhubs_variables_at_the_job_directory():
    assert tls_env("/home/alice/.hpchub/jobs/k1/") == {
        "JUPYTERHUB_SSL_KEYFILE": "/home/alice/.hpchub/jobs/k1/tls.key",
        "JUPYTERHUB_SSL_CERTFILE": "/home/alice/.hpchub/jobs/k1/tls.crt",
        "JUPYTERHUB_SSL_CLIENT_CA": "/home/alice/.hpchub/jobs/k1/ca.crt",
    }


def test_node_alt_names_are_ip_or_dns_names_once_each():
    assert node_alt_names(["10.77.0.11", "cn01.cluster", " 10.77.0.11 ", "", "fd00::11"]) == [
        "DNS:cn01.cluster", "IP:10.77.0.11", "IP:fd00::11"]
