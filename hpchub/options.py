"""User choices (spawn form, REST ``user_options``, ``hpchub render --set``) checked against a profile.

User values are untrusted input. They may only change the fields the admin made adjustable,
only within the admin's bounds and the queue's limits, and they never override anything else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .config import Cluster, Profile, QueueLimits, SiteConfig
from .units import Memory, Walltime

RESOURCE_FIELDS = ("cores", "memory", "walltime", "gpus", "nodes")
ADJUSTABLE_FIELDS = (*RESOURCE_FIELDS, "queue", "account")
# Keys a caller may include that are not resource choices (the spawner reads them itself).
PASSTHROUGH_KEYS = frozenset({"profile"})

_INT_RE = re.compile(r"^\s*[0-9]{1,6}\s*$")


class OptionsError(ValueError):
    """User choices that cannot be accepted; ``problems`` maps each field to the reason."""

    def __init__(self, problems: dict[str, str]):
        self.problems = problems
        super().__init__("; ".join(f"{field}: {message}" for field, message in problems.items()))


@dataclass(frozen=True)
class JobRequest:
    """Everything a job script needs to know about what to ask the scheduler for."""

    profile: Profile
    cluster_name: str
    cluster: Cluster
    queue: str
    cores: int
    memory: Memory | None
    walltime: Walltime
    gpus: int
    nodes: int
    account: str | None

    @property
    def queue_limits(self) -> QueueLimits:
        return self.cluster.queues[self.queue]


def _parse(field: str, value: Any) -> Any:
    if field in ("cores", "gpus", "nodes"):
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not a whole number")
        if isinstance(value, int):
            return value
        if isinstance(value, str) and _INT_RE.match(value):
            return int(value)
        raise ValueError(f"{value!r} is not a whole number")
    if field == "memory":
        return Memory.parse(value)
    if field == "walltime":
        return Walltime.parse(value)
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a name")
    return value


_MINIMUM = {"cores": 1, "nodes": 1, "gpus": 0}
_LIMIT = {"cores": "max_cores", "memory": "max_memory", "walltime": "max_walltime", "nodes": "max_nodes", "gpus": "max_gpus"}


def resolve_request(site: SiteConfig, profile: Profile, values: Mapping[str, Any] | None = None) -> JobRequest:
    """The job a user gets from ``profile`` with their ``values``; raise OptionsError if any is refused."""
    values = dict(values or {})
    cluster = site.clusters[profile.cluster]
    adjustable = profile.user_adjustable.fields()
    chosen: dict[str, Any] = {}
    problems: dict[str, str] = {}

    for field, raw in values.items():
        if field in PASSTHROUGH_KEYS:
            continue
        if field not in ADJUSTABLE_FIELDS:
            problems[field] = f"unknown option (options: {', '.join(ADJUSTABLE_FIELDS)})"
            continue
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            continue  # left empty: the profile's value stands
        if field not in adjustable:
            problems[field] = f"profile {profile.slug!r} does not let users change {field}"
            continue
        try:
            value = _parse(field, raw)
        except ValueError as error:
            problems[field] = str(error)
            continue
        bound = adjustable[field]
        if getattr(bound, "choices", None) is not None and value not in bound.choices:
            problems[field] = f"{value} is not one of {', '.join(map(str, bound.choices))}"
            continue
        if getattr(bound, "min", None) is not None and value < bound.min:
            problems[field] = f"{value} is below the minimum {bound.min}"
            continue
        if getattr(bound, "max", None) is not None and value > bound.max:
            problems[field] = f"{value} is above the maximum {bound.max}"
            continue
        if field in _MINIMUM and value < _MINIMUM[field]:
            problems[field] = f"{value} is below the minimum {_MINIMUM[field]}"
            continue
        chosen[field] = value

    queue = chosen.get("queue", profile.queue)
    limits = cluster.queues[queue]
    resources = {field: chosen.get(field, getattr(profile.resources, field)) for field in RESOURCE_FIELDS}
    for field in RESOURCE_FIELDS:
        limit = getattr(limits, _LIMIT[field])
        value = resources[field]
        if field not in problems and limit is not None and value is not None and value > limit:
            problems[field] = f"{value} exceeds queue {queue!r} limit {limit}"
    if problems:
        raise OptionsError(problems)
    return JobRequest(
        profile=profile,
        cluster_name=profile.cluster,
        cluster=cluster,
        queue=queue,
        account=chosen.get("account", profile.account),
        **resources,
    )
