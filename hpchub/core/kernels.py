"""The kernels each profile's environment offers, as the profile's card lists them.

``hpchub doctor`` and ``hpchub check --live`` run a probe job as a user in a profile's environment
(hpchub/job/probe.py); its report includes ``jupyter kernelspec list --json`` as run there. They
record the kernels here, in a small JSON file next to the site config (``site.yaml`` ->
``site.kernels.json``), which the hub reads when it draws the form. The hub never runs probes
itself: a probe is a job, and a job runs as some user; the admin who runs the doctor says as whom.

Entries are keyed by the environment, not the profile: the cluster, the merged environment block
and the container image. An edited environment has another key, so its card shows no kernels until
it is probed again rather than the old environment's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .config import ContainerImage, Profile, SiteConfig

CACHE_SUFFIX = ".kernels.json"
CACHE_VERSION = 1
# Names shown on a card: at most this many, the rest counted.
CARD_KERNELS = 6


@dataclass(frozen=True)
class Kernel:
    name: str
    display_name: str
    language: str


def parse_kernelspecs(report: Mapping[str, Any]) -> list[Kernel] | None:
    """The kernels in a probe's report (its ``kernelspecs``: the JSON of ``jupyter kernelspec list --json``);
    None when the probe could not list them (no ``jupyter`` there, an error, an older probe)."""
    listed = report.get("kernelspecs")
    if not isinstance(listed, Mapping) or not isinstance(listed.get("kernelspecs"), Mapping):
        return None
    kernels = []
    for name, entry in listed["kernelspecs"].items():
        spec = entry.get("spec") if isinstance(entry, Mapping) else None
        spec = spec if isinstance(spec, Mapping) else {}
        display = spec.get("display_name")
        language = spec.get("language")
        kernels.append(Kernel(str(name), str(display) if isinstance(display, str) and display.strip() else str(name),
                              str(language) if isinstance(language, str) else ""))
    return sorted(kernels, key=lambda kernel: (kernel.display_name.lower(), kernel.name))


def cache_path(site: SiteConfig) -> Path | None:
    """``site.kernels.json`` next to the site config ``site.yaml`` (None: a config not read from a file)."""
    if site.source is None:
        return None
    source = Path(site.source)
    return source.with_name(source.stem + CACHE_SUFFIX)


def environment_key(site: SiteConfig, profile: Profile, image: ContainerImage | None = None) -> str:
    """What a job of ``profile`` runs in: its cluster, merged environment and container image
    (``image``, else the profile's default)."""
    environment = site.clusters[profile.cluster].environment.extended_by(profile.environment)
    if image is None and environment.container is not None:
        image = environment.container.default_image()
    # The list of images offered and the user_envs switch do not change what a job of this image runs in.
    block = environment.model_dump(mode="json", exclude={"user_envs"})
    if isinstance(block.get("container"), dict):
        block["container"].pop("images", None)
        block["container"]["image"] = image.image if image is not None else None
    text = json.dumps([profile.cluster, block], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _current_keys(site: SiteConfig) -> set[str]:
    """The environment keys of every profile, with each image it offers."""
    keys = set()
    for profile in site.profiles:
        keys.add(environment_key(site, profile))
        container = site.clusters[profile.cluster].environment.extended_by(profile.environment).container
        keys.update(environment_key(site, profile, offered) for offered in (container.images if container else ()))
    return keys


def read_cache(path: Path) -> dict[str, Any]:
    """The cache's environments (key -> entry); empty when the file is missing or not ours."""
    try:
        stat = path.stat()
    except OSError:
        return {}
    return _read_cache(str(path), stat.st_mtime_ns, stat.st_size)


# The hub draws the form often: the file is parsed again only when it changed.
_parsed: dict[str, tuple[tuple[int, int], dict[str, Any]]] = {}


def _read_cache(path: str, mtime_ns: int, size: int) -> dict[str, Any]:
    seen = _parsed.get(path)
    if seen is not None and seen[0] == (mtime_ns, size):
        return seen[1]
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        data = None
    environments = data.get("environments") if isinstance(data, dict) and data.get("version") == CACHE_VERSION \
        else None
    result = environments if isinstance(environments, dict) else {}
    _parsed[path] = ((mtime_ns, size), result)
    return result


def record(site: SiteConfig, profile: Profile, kernels: list[Kernel], image: ContainerImage | None = None,
           user: str = "", node: str = "") -> Path | None:
    """Write the kernels of ``profile``'s environment into the cache (atomically, readable by the hub);
    the cache's path, None when the site config has no file. OSError when it cannot be written."""
    path = cache_path(site)
    if path is None:
        return None
    # Entries of environments the site config no longer has are dropped: they could never show again.
    current = _current_keys(site)
    environments = {key: entry for key, entry in read_cache(path).items() if key in current}
    environments[environment_key(site, profile, image)] = {
        "kernels": [{"name": k.name, "display_name": k.display_name, "language": k.language} for k in kernels],
        "profile": profile.slug,
        "image": image.label if image is not None else None,
        "probed_as": user,
        "node": node,
        "probed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    text = json.dumps({"version": CACHE_VERSION, "environments": environments}, indent=1, sort_keys=True) + "\n"
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as file:
            file.write(text)
        os.chmod(temporary, 0o644)  # the hub reads it, whatever account it runs as
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return path


def profile_kernels(site: SiteConfig, profile: Profile) -> list[str] | None:
    """The display names of the kernels a job of ``profile`` (its default image) offers, as last
    probed; None when its environment was never probed (or not since it changed)."""
    path = cache_path(site)
    if path is None:
        return None
    entry = read_cache(path).get(environment_key(site, profile))
    if not isinstance(entry, dict) or not isinstance(entry.get("kernels"), list):
        return None
    return [str(kernel.get("display_name") or kernel.get("name")) for kernel in entry["kernels"]
            if isinstance(kernel, dict)]


def kernels_text(names: list[str] | None) -> str | None:
    """``Kernels: Python 3 (ipykernel), R`` for a card; None when unknown."""
    if names is None:
        return None
    if not names:
        return "Kernels: none found"
    shown = ", ".join(names[:CARD_KERNELS])
    more = len(names) - CARD_KERNELS
    return f"Kernels: {shown}" + (f" and {more} more" if more > 0 else "")
