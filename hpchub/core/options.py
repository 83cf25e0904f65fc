"""User choices (spawn form, REST ``user_options``, ``hpchub render --set``) checked against a profile.

User values are untrusted input. They may only change the fields the admin made adjustable,
only within the admin's bounds and the queue's limits, and they never override anything else.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..schedulers.base import Allocations, Reservation
from .config import ALLOCATION_FIELDS, AllocationRule, Cluster, ContainerImage, Profile, QueueLimits, SiteConfig
from .units import Memory, Walltime

RESOURCE_FIELDS = ("cores", "memory", "walltime", "gpus", "nodes")
ADJUSTABLE_FIELDS = (*RESOURCE_FIELDS, "queue", *ALLOCATION_FIELDS, "image", "user_env")
# What an engine job takes over from its notebook's server job where the user leaves it out.
INHERITED_FIELDS = (*ALLOCATION_FIELDS, "image", "user_env")
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
    account: str | None  # Slurm account / Grid Engine project (-P)
    qos: str | None = None
    # What the job names: Slurm the reservation's name, Grid Engine the AR's number.
    reservation: str | None = None
    reservation_name: str | None = None
    reservation_opens: datetime | None = None  # the reservation is not open yet (scheduler's local time)
    image: ContainerImage | None = None  # the container image picked from the profile's list (None: its default)
    # The user's own venv or conda env (environment.user_envs): a path relative to their home, checked.
    user_env: str | None = None

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


def needs_allocations(site: SiteConfig, profile: Profile) -> bool:
    """Whether the caller should fetch the user's Allocations before ``resolve_request``: a field comes
    from the scheduler, or the profile names a reservation (Grid Engine: its number; the card: when it opens)."""
    return profile.reservation is not None or any(
        rule.from_scheduler for rule in profile.allocation_rules().values())


def placeholder_allocations(site: SiteConfig, profile: Profile) -> Allocations:
    """Allocations that allow what ``profile`` names, plus ``example-account``/``example-qos`` for
    fields from the scheduler: for checks that render a profile's job without a user or a scheduler
    (``hpchub check``), which check the directives, not the names."""
    account, qos = profile.allocation("account"), profile.allocation("qos")
    accounts = account.choices or ("example-account",)
    qos_names = qos.choices or ("example-qos",)
    sge = site.clusters[profile.cluster].scheduler == "sge"
    reservations = tuple(Reservation(name, str(number) if sge else name, None, None, True)
                         for number, name in enumerate(profile.allocation("reservation").choices, start=1))
    return Allocations(accounts=accounts, default_account=accounts[0], qos=qos_names,
                       qos_by_account={name: qos_names for name in accounts}, default_qos=qos_names[0],
                       reservations=reservations)


def allowed_values(rule: AllocationRule, allocations: Allocations | None,
                   account: str | None = None) -> tuple[tuple[str, ...], str | None] | None:
    """(the values a user may give for ``rule.field``, the one preselected); None when they come from the
    scheduler and ``allocations`` is unknown. ``account``: the account chosen (QoS depend on it on Slurm)."""
    if not rule.from_scheduler:
        return rule.choices, rule.default
    if allocations is None:
        return None
    if rule.field == "account":
        return allocations.accounts, allocations.default_account
    if rule.field == "qos":
        if account is None or account == allocations.default_account:
            return allocations.qos_by_account.get(account or "", allocations.qos), allocations.default_qos
        return allocations.qos_by_account.get(account, ()), None
    return tuple(dict.fromkeys(reservation.name for reservation in allocations.reservations)), None


def _resolve_allocation(profile: Profile, rule: AllocationRule, raw: Any, allocations: Allocations | None,
                        account: str | None, problems: dict[str, str], scheduler: str) -> str | None:
    field = rule.field
    word = allocation_word(field, scheduler)
    given = None if raw is None or (isinstance(raw, str) and not raw.strip()) else raw
    if given is not None and not isinstance(given, str):
        problems[field] = f"{given!r} is not a name"
        return None
    if given is not None and not rule.adjustable:
        problems[field] = f"profile {profile.slug!r} does not let users change the {word}"
        return None
    allowed = allowed_values(rule, allocations, account)
    if allowed is None:
        problems[field] = _unavailable(field, scheduler)
        return None
    choices, default = allowed
    value = given if given is not None else default
    if value is None:
        if not rule.optional and choices:
            problems[field] = f"choose one of {', '.join(choices)}"
        elif not rule.optional:
            problems[field] = f"the scheduler lists no {word} you may use"
        return None
    if value not in choices:
        if rule.from_scheduler:
            mine = ", ".join(choices) or "none"
            problems[field] = f"the scheduler does not let you use {word} {value!r} (yours: {mine})"
        else:
            problems[field] = f"{value} is not one of {', '.join(choices)}"
        return None
    return value


def allocation_word(field: str, scheduler: str, plural: bool = False) -> str:
    """What users call ``field`` on ``scheduler`` (Grid Engine's accounts are projects)."""
    words = {"account": "project" if scheduler == "sge" else "account", "qos": "QoS", "reservation": "reservation"}
    word = words[field]
    return word if not plural or word == "QoS" else word + "s"


def _unavailable(field: str, scheduler: str) -> str:
    return (f"the scheduler's list of your {allocation_word(field, scheduler, plural=True)} is not available right "
            "now; try again in a minute")


def made_by_trusted(reservation: Reservation, allocations: Allocations, cluster: Cluster) -> bool:
    """Whether a site's profile may pin ``reservation``: made by the scheduler's admins (Slurm: all are;
    Grid Engine: a manager or operator) or by an account of ``sge.reservation_owners``."""
    return reservation.owner is None or reservation.owner in allocations.reservation_admins \
        or reservation.owner in cluster.sge.reservation_owners


def _reservation(rule: AllocationRule, name: str, cluster: Cluster, allocations: Allocations | None,
                 problems: dict[str, str]) -> Reservation | None:
    """The scheduler's record of reservation ``name`` for this user (None on Slurm when unknown: the name is
    enough there; Grid Engine needs the AR's number).

    On Grid Engine any user in the arusers list can make an AR, under any name, open to anybody: one
    named like the course's would capture the course's jobs. So a name the admin wrote (a pinned
    reservation or a list) stands for the one AR of that name made by a manager, an operator or an
    account of ``sge.reservation_owners``; others of that name are ignored. A name the user picked from
    the scheduler's list is theirs to trust, but must name one AR. Two that fit: refused, never a guess."""
    scheduler = cluster.scheduler
    if allocations is None:
        if scheduler == "sge":
            problems["reservation"] = _unavailable("reservation", scheduler)
        return None
    found = [reservation for reservation in allocations.reservations if reservation.name == name]
    if not found:
        problems["reservation"] = f"reservation {name!r} is not open to you (or no longer exists)"
        return None
    trusted = [reservation for reservation in found if made_by_trusted(reservation, allocations, cluster)]
    candidates = found if rule.from_scheduler and len(found) == 1 else trusted
    if len(candidates) == 1:
        return candidates[0]
    ids = ", ".join(f"{reservation.reservation_id} (made by {reservation.owner})" for reservation in found)
    if not candidates and not rule.from_scheduler:
        problems["reservation"] = (f"hpchub does not use reservation {name!r}: it was made by an account that is "
                                   f"neither a Grid Engine manager or operator nor one of the site's reservation "
                                   f"owners ({ids}); nothing was submitted, please tell the admins")
    else:
        problems["reservation"] = (f"{len(found)} reservations are named {name!r} ({ids}): hpchub cannot tell which "
                                   "one is meant; nothing was submitted, please tell the admins")
    return None


def image_choices(profile: Profile, cluster: Cluster) -> tuple[ContainerImage, ...]:
    """The container images a user of ``profile`` may pick from (by label); empty: nothing to pick."""
    container = cluster.environment.extended_by(profile.environment).container
    return tuple(container.images) if container is not None and len(container.images) > 1 else ()


def _resolve_image(profile: Profile, cluster: Cluster, raw: Any, problems: dict[str, str]) -> ContainerImage | None:
    """The image the user picked, by its label: one of the admin's list, nothing else (None: the
    profile's default). The label never reaches the script; the admin's image does."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    container = cluster.environment.extended_by(profile.environment).container
    default = container.default_image() if container is not None else None
    if not isinstance(raw, str):
        problems["image"] = f"{raw!r} is not an image's label"
        return None
    choices = image_choices(profile, cluster)
    if not choices:
        if default is not None and raw == default.label:
            return None  # the one image there is
        problems["image"] = f"profile {profile.slug!r} does not let users choose the container image"
        return None
    for offered in choices:
        if offered.label == raw:
            return offered
    problems["image"] = f"{raw!r} is not one of {', '.join(offered.label for offered in choices)}"
    return None


# One directory name of a user env's path: no blank, quote, `$`, glob or anything else the shell reads.
_USER_ENV_PART_RE = re.compile(r"^[A-Za-z0-9_.+@-]+$")
USER_ENV_MAX_LENGTH = 200


def user_env_path(raw: Any) -> str:
    """A user's own environment as they typed it (``envs/lab``, ``~/envs/lab``, ``.venv``) to the path
    relative to their home that the job uses; ValueError saying what is wrong. Only a narrow set of
    characters, no ``.`` or ``..`` part, nothing absolute (a path outside the home cannot be named),
    no part that starts with ``-``."""
    if not isinstance(raw, str):
        raise ValueError(f"{raw!r} is not a path")
    text = raw.strip()
    if any(ord(char) < 32 or ord(char) == 127 for char in text):
        raise ValueError("must be one line without control characters")
    if len(text) > USER_ENV_MAX_LENGTH:
        raise ValueError(f"at most {USER_ENV_MAX_LENGTH} characters")
    if text.startswith("~/"):
        text = text[2:]
    elif text.startswith("~"):
        raise ValueError("give a path under your own home: envs/lab or ~/envs/lab")
    elif text.startswith("/"):
        raise ValueError("give the path relative to your home (envs/lab or ~/envs/lab), not an absolute path")
    text = text.rstrip("/")
    if not text:
        raise ValueError("name a directory under your home (envs/lab or ~/envs/lab), not the home itself")
    for part in text.split("/"):
        if part in ("", ".", ".."):
            raise ValueError("no '.', '..' or empty parts: a directory under your home, e.g. envs/lab")
        if part.startswith("-") or not _USER_ENV_PART_RE.match(part):
            raise ValueError(f"{part!r}: use letters, digits and _ . + @ - only (not first), parts separated by /")
    return text


def _resolve_user_env(profile: Profile, cluster: Cluster, raw: Any, problems: dict[str, str]) -> str | None:
    """The user's own environment (a path relative to their home), if the profile allows one; None: the
    profile's environment alone."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if not cluster.environment.extended_by(profile.environment).allows_user_envs:
        problems["user_env"] = f"profile {profile.slug!r} does not let users choose their own environment"
        return None
    try:
        return user_env_path(raw)
    except ValueError as error:
        problems["user_env"] = str(error)
        return None


def resolve_request(site: SiteConfig, profile: Profile, values: Mapping[str, Any] | None = None,
                    allocations: Allocations | None = None) -> JobRequest:
    """The job a user gets from ``profile`` with their ``values``; raise OptionsError if any is refused.

    ``allocations``: the scheduler's for this user (see ``needs_allocations``; the caller fetches them).
    Without them a field from the scheduler, or a Grid Engine reservation, is refused rather than guessed."""
    values = dict(values or {})
    cluster = site.clusters[profile.cluster]
    scheduler = cluster.scheduler
    adjustable = profile.user_adjustable.fields()
    chosen: dict[str, Any] = {}
    problems: dict[str, str] = {}

    for field, raw in values.items():
        if field in PASSTHROUGH_KEYS:
            continue
        if field not in ADJUSTABLE_FIELDS:
            problems[field] = f"unknown option (options: {', '.join(ADJUSTABLE_FIELDS)})"
            continue
        if field in (*ALLOCATION_FIELDS, "image", "user_env"):
            continue  # below: their allowed values may come from the scheduler, are labels or paths
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
    rules = profile.allocation_rules()  # read once, not per field
    account = _resolve_allocation(profile, rules["account"], values.get("account"), allocations, None,
                                  problems, scheduler)
    qos = _resolve_allocation(profile, rules["qos"], values.get("qos"), allocations, account, problems, scheduler)
    reservation_name = _resolve_allocation(profile, rules["reservation"], values.get("reservation"),
                                           allocations, account, problems, scheduler)
    image = _resolve_image(profile, cluster, values.get("image"), problems)
    user_env = _resolve_user_env(profile, cluster, values.get("user_env"), problems)
    reservation = None
    if reservation_name is not None and "reservation" not in problems:
        reservation = _reservation(rules["reservation"], reservation_name, cluster, allocations, problems)
    if problems:
        raise OptionsError(problems)
    return JobRequest(
        profile=profile,
        cluster_name=profile.cluster,
        cluster=cluster,
        queue=queue,
        account=account,
        qos=qos,
        reservation=reservation.reservation_id if reservation is not None else reservation_name,
        reservation_name=reservation_name,
        reservation_opens=reservation.start if reservation is not None and not reservation.active else None,
        image=image,
        user_env=user_env,
        **resources,
    )


def _inheritable(field: str, profile: Profile, cluster: Cluster) -> bool:
    """Whether users of ``profile`` choose ``field`` (an INHERITED_FIELDS one) themselves."""
    if field in ALLOCATION_FIELDS:
        return profile.allocation(field).adjustable
    if field == "image":
        return bool(image_choices(profile, cluster))
    return cluster.environment.extended_by(profile.environment).allows_user_envs


def resolve_inheriting(site: SiteConfig, profile: Profile, values: Mapping[str, Any] | None,
                       inherited: Mapping[str, str], allocations: Allocations | None = None,
                       refused: Callable[[str, str, str], None] | None = None) -> JobRequest:
    """resolve_request for an engine job: ``values`` are the user's choices; ``inherited`` the account,
    QoS, reservation, container image or user env (INHERITED_FIELDS) of the notebook's own server job, taken for
    the fields ``values`` leave out where the profile lets users choose them. An inherited value the
    profile or the scheduler refuses gives way to the profile's default (``refused(field, value, why)``
    hears of it): the engines still start, charged as the profile says. The user's own values are never dropped."""
    values = dict(values or {})
    given = {field for field, value in values.items() if value is not None and str(value).strip()}
    cluster = site.clusters[profile.cluster]
    taken = {field: value.strip() for field, value in inherited.items()
             if field in INHERITED_FIELDS and field not in given and isinstance(value, str) and value.strip()
             and _inheritable(field, profile, cluster)}
    while True:
        try:
            return resolve_request(site, profile, {**values, **taken}, allocations)
        except OptionsError as error:
            dropped = taken.keys() & error.problems.keys()
            if not dropped:
                raise
            for field in sorted(dropped):
                value = taken.pop(field)
                if refused is not None:
                    refused(field, value, error.problems[field])
