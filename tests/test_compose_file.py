"""docker-compose.test.yml stays consistent with the repository: the services exist, every
repository path it references exists, and the scripts it runs can be run. (Docker itself is
not needed: the file is only read.)"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker-compose.test.yml"
MOUNT = "/src"  # where the services see the repository
SERVICES = {"slurm-head", "slurm-node1", "slurm-node2", "sge", "login"}


def load() -> dict:
    with COMPOSE.open() as f:
        return yaml.safe_load(f)


def command_text(service: dict) -> str:
    command = service.get("command", "")
    if isinstance(command, list):
        return " ".join(command)
    return str(command)


def volume_parts(volume) -> tuple[str, str, str]:
    """(source, target, mode) of a short ('src:dst:ro') or long-syntax volume."""
    if isinstance(volume, dict):
        mode = "ro" if volume.get("read_only") else "rw"
        return str(volume.get("source", "")), str(volume["target"]), mode
    parts = str(volume).split(":")
    if len(parts) == 1:
        return "", parts[0], "rw"
    return parts[0], parts[1], parts[2] if len(parts) > 2 else "rw"


def is_bind(source: str) -> bool:
    return source.startswith((".", "/", "~"))


def repo_paths_in(command: str) -> list[tuple[str | None, str]]:
    """(word before it, repository-relative path) for each /src/... word of a shell command."""
    found = []
    words = shlex.split(command.replace("&&", " ; ").replace(";", " ; "))
    for i, word in enumerate(words):
        for match in re.finditer(rf"(?:^|[=\s]){re.escape(MOUNT)}/([^\s'\";&|]+)", word):
            found.append((words[i - 1] if i else None, match.group(1)))
    return found


def test_services_present():
    services = load()["services"]
    assert SERVICES <= set(services), f"missing services: {SERVICES - set(services)}"


def test_debian_12_base_image():
    for name, service in load()["services"].items():
        assert service.get("image") == "debian:12", f"{name} uses {service.get('image')!r}"


def test_repo_mounted_read_only_at_src():
    for name, service in load()["services"].items():
        mounts = [volume_parts(v) for v in service.get("volumes", [])]
        src = [(s, m) for s, t, m in mounts if t == MOUNT]
        assert src, f"{name} does not mount the repository at {MOUNT}"
        source, mode = src[0]
        assert (REPO / source).resolve() == REPO, f"{name} mounts {source!r}, not the repository"
        assert mode == "ro", f"{name} mounts the repository writable"


def test_bind_mount_sources_exist_and_named_volumes_declared():
    data = load()
    declared = set(data.get("volumes") or {})
    for name, service in data["services"].items():
        for volume in service.get("volumes", []):
            source, target, _ = volume_parts(volume)
            if not source:
                continue
            if is_bind(source):
                assert not source.startswith(("/", "~")), f"{name}: host path {source!r} outside the repository"
                assert (REPO / source).exists(), f"{name}: bind mount source {source!r} does not exist"
            else:
                assert source in declared, f"{name}: named volume {source!r} is not declared"


def test_referenced_scripts_exist_and_can_run():
    services = load()["services"]
    checked = 0
    for name, service in services.items():
        command = command_text(service)
        paths = repo_paths_in(command)
        assert paths, f"{name} runs nothing from the repository: {command!r}"
        for before, rel in paths:
            path = REPO / rel
            assert path.is_file(), f"{name}: {MOUNT}/{rel} does not exist in the repository"
            if before not in ("bash", "sh"):
                assert os.access(path, os.X_OK), f"{name}: {rel} is run directly but not executable"
            checked += 1
    assert checked >= len(SERVICES)


def test_roles_and_shared_munge_key():
    services = load()["services"]
    assert "slurm.sh controller" in command_text(services["slurm-head"])
    for node in ("slurm-node1", "slurm-node2"):
        assert f"slurm.sh node {node}" in command_text(services[node])
        assert services[node].get("hostname") == node
    assert "sge.sh" in command_text(services["sge"])
    assert "login.sh serve" in command_text(services["login"])
    assert services["login"].get("hostname") == "login"
    key_volumes = []
    for name in ("slurm-head", "slurm-node1", "slurm-node2", "login"):
        env = services[name].get("environment") or {}
        key = env.get("HPCHUB_MUNGE_KEY")
        assert key, f"{name} has no HPCHUB_MUNGE_KEY"
        mounts = {t: s for s, t, _ in (volume_parts(v) for v in services[name].get("volumes", []))}
        key_dir = str(Path(key).parent)
        assert key_dir in mounts, f"{name}: {key_dir} (munge key) is not a volume"
        key_volumes.append(mounts[key_dir])
    assert len(set(key_volumes)) == 1, "the Slurm services do not share one munge key volume"
    # The node list the controller is configured with names the node services.
    nodes = services["slurm-head"]["environment"]["HPCHUB_SLURM_COMPUTE_NODES"].split(",")
    assert set(nodes) == {"slurm-node1", "slurm-node2"}


def test_services_share_a_network():
    data = load()
    declared = set(data.get("networks") or {})
    for name, service in data["services"].items():
        networks = service.get("networks") or []
        assert networks, f"{name} is on no compose network"
        assert set(networks) <= declared, f"{name} uses undeclared networks"
