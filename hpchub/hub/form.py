"""The spawn form: the profiles a user may use, grouped by cluster, with their adjustable fields
in the units people think in (memory in GB, walltime in hours and minutes), the live queue state,
the user's last choice preselected and refused choices marked next to their fields.

HTML is rendered with autoescaping (a separate Jinja environment from the job scripts). Input
names carry the profile slug (``small--cores``) so that one form can hold every profile;
``read_form`` turns the chosen profile's inputs into the flat, canonical ``user_options`` that the
REST API and links take too (``{"profile": "small", "cores": "2", "memory": "4G", "walltime":
"2:30:00"}``); ``options_from_query`` reads a link's ``opt-`` arguments into the same shape.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from ..core.config import ALLOCATION_FIELDS, Profile, SiteConfig
from ..core.kernels import kernels_text, profile_kernels
from ..core.options import JobRequest, OptionsError, allocation_word, allowed_values, image_choices, made_by_trusted
from ..core.render import SiteTemplateLoader
from ..core.units import Memory, Walltime
from ..schedulers import QueueInfo
from ..schedulers.base import Allocations, Reservation

FORM_TEMPLATE = "spawn-form.html.j2"
FIELD_SEPARATOR = "--"
GIB = 1024**3
MIB = 1024**2
# Where a problem that belongs to no input of the chosen profile is shown (unknown or fixed fields).
GENERAL = "_general"
LABELS = {"cores": "Cores", "memory": "Memory (GB)", "walltime": "Walltime", "gpus": "GPUs", "nodes": "Nodes",
          "queue": "Queue", "account": "Account", "qos": "QoS", "reservation": "Reservation", "image": "Image",
          "user_env": "Your environment"}
_NUMBER_RE = re.compile(r"^\s*[0-9]{1,6}(\.[0-9]{1,6})?\s*$")
_WHOLE_RE = re.compile(r"^\s*[0-9]{1,6}\s*$")


@functools.lru_cache(maxsize=16)
def form_environment(site_templates: Path | None) -> jinja2.Environment:
    """One per templates directory (compiled once; edits still apply, see render.template_environment)."""
    return jinja2.Environment(
        loader=SiteTemplateLoader(site_templates), autoescape=True, undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
    )


# -- units: canonical values (options.py) <-> what the form shows ---------------------------------
def decimal_text(number: float) -> str:
    """``4`` for 4.0, ``0.5``, at most 4 decimals (memory in GB: 1 MiB is about 0.001 GB)."""
    return f"{number:.4f}".rstrip("0").rstrip(".")


def gigabytes(memory: Memory) -> str:
    return decimal_text(memory.bytes / GIB)


def memory_from_gigabytes(text: str) -> str:
    """A number of GB as typed in the form to a canonical memory size: ``4G``, ``1.5G``, ``102M``
    (whole MiB, which is what schedulers take). ValueError with a message in the form's terms."""
    if not _NUMBER_RE.match(text):
        raise ValueError(f"{text.strip()!r} is not a number of GB")
    mebibytes = round(float(text) * 1024)
    if mebibytes <= 0:
        raise ValueError("must be more than 0 GB")
    if (mebibytes * 1000) % 1024 == 0:  # at most 3 decimals in GB: say it in GB
        return f"{decimal_text(mebibytes / 1024)}G"
    return f"{mebibytes}M"


def walltime_from_parts(hours: str, minutes: str) -> str | None:
    """Hours and minutes as typed in the form to ``H:MM:00``; None when both are empty (the
    profile's walltime stands). ValueError with a message in the form's terms."""
    if not hours.strip() and not minutes.strip():
        return None
    if hours.strip() and not _WHOLE_RE.match(hours):
        raise ValueError(f"hours: {hours.strip()!r} is not a whole number")
    if minutes.strip() and not _WHOLE_RE.match(minutes):
        raise ValueError(f"minutes: {minutes.strip()!r} is not a whole number")
    whole_hours, whole_minutes = int(hours or 0), int(minutes or 0)
    if whole_minutes > 59:
        raise ValueError("minutes must be 0 to 59 (add whole hours to the hours)")
    if whole_hours == 0 and whole_minutes == 0:
        raise ValueError("must be longer than 0 minutes")
    return f"{whole_hours}:{whole_minutes:02d}:00"


def duration_text(walltime: Walltime) -> str:
    """``4 h``, ``1 h 30 min``, ``45 min`` (seconds are rounded up to the minute)."""
    hours, minutes = divmod(walltime.minutes, 60)
    parts = ([f"{hours} h"] if hours else []) + ([f"{minutes} min"] if minutes or not hours else [])
    return " ".join(parts)


def form_values(options: Mapping[str, Any]) -> dict[str, str]:
    """Canonical user_options (remembered, or from a link) as the form's input values, keyed by
    input suffix (``cores``, ``memory``, ``walltime-hours``, ``walltime-minutes``...). A value
    that does not parse is shown as it was (the message next to it says why)."""
    values: dict[str, str] = {}
    for name, raw in options.items():
        if name == "profile" or raw is None:
            continue
        text = str(raw)
        if name == "memory":
            try:
                values["memory"] = gigabytes(Memory.parse(raw))
            except ValueError:
                values["memory"] = text
            values["memory-choice"] = text
        elif name == "walltime":
            try:
                minutes = Walltime.parse(raw).minutes
                values["walltime-hours"], values["walltime-minutes"] = str(minutes // 60), str(minutes % 60)
            except ValueError:
                values["walltime-hours"], values["walltime-minutes"] = text, ""
            values["walltime-choice"] = text
        else:
            values[name] = text
    return values


# -- reading the form and links -------------------------------------------------------------------
@dataclass(frozen=True)
class FormInput:
    """What the user submitted: the chosen profile, its options in canonical form, the problems
    already found while converting units, and the input as typed (to show it again)."""

    profile: str
    options: dict[str, str]
    problems: dict[str, str]
    entered: dict[str, str]


def read_form(formdata: Mapping[str, list[str]]) -> FormInput:
    """Form data to flat canonical user_options: the chosen profile and its own inputs only. A
    plain number of GB becomes a size; any other memory text (``2G``: scripts that post the form)
    and ``SLUG--walltime`` are taken as the canonical values they are (resolve_request checks them)."""
    profile = (formdata.get("profile") or [""])[0]
    prefix = f"{profile}{FIELD_SEPARATOR}"
    entered = {key[len(prefix):]: values[0] for key, values in formdata.items()
               if profile and key.startswith(prefix) and values}
    options = {"profile": profile} if profile else {}
    problems: dict[str, str] = {}
    for name, value in entered.items():
        if name == "memory" and _NUMBER_RE.match(value):
            try:
                options["memory"] = memory_from_gigabytes(value)
            except ValueError as error:
                problems["memory"] = str(error)
        elif name in ("walltime-hours", "walltime-minutes"):
            continue
        elif name in ("memory-choice", "walltime-choice"):
            options[name.split("-")[0]] = value
        else:
            options[name] = value
    if "walltime-hours" in entered or "walltime-minutes" in entered:
        try:
            walltime = walltime_from_parts(entered.get("walltime-hours", ""), entered.get("walltime-minutes", ""))
            if walltime is not None:
                options["walltime"] = walltime
        except ValueError as error:
            problems["walltime"] = str(error)
    return FormInput(profile, options, problems, entered)


def options_from_form(formdata: Mapping[str, list[str]]) -> dict[str, str]:
    """Form data to flat canonical user_options; OptionsError if a value is not even a number."""
    submitted = read_form(formdata)
    if submitted.problems:
        raise OptionsError(submitted.problems)
    return submitted.options


def options_from_query(query: Mapping[str, list[str]]) -> dict[str, str]:
    """A link's arguments (JupyterHub has already taken the ``opt-`` off: ``{"cores": ["2"]}``)
    to flat user_options, values as given (canonical: ``memory=4G``, ``walltime=2:00:00``).
    OptionsError for an argument given more than once."""
    problems = {name: "give it once" for name, values in query.items() if len(values) != 1}
    if problems:
        raise OptionsError(problems)
    return {name: values[0] for name, values in query.items()}


# -- rendering ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LinkSummary:
    """What a followed spawn link asks for, shown above the form until the user presses Start."""

    profile: str  # the profile's name
    cluster: str
    charge: str  # charge_text


@dataclass(frozen=True)
class Preselection:
    """What the form shows chosen: a profile and its input values (form units, see
    ``form_values``), the problems to show next to them (field -> message), and for a link's
    valid choices what they will charge."""

    profile: str | None = None
    values: Mapping[str, str] = field(default_factory=dict)
    problems: Mapping[str, str] = field(default_factory=dict)
    link: LinkSummary | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None, problems: Mapping[str, str] | None = None,
                     link: LinkSummary | None = None) -> Preselection:
        options = options or {}
        profile = options.get("profile")
        return cls(profile if isinstance(profile, str) else None, form_values(options), dict(problems or {}), link)

    @classmethod
    def from_form(cls, submitted: FormInput, problems: Mapping[str, str]) -> Preselection:
        return cls(submitted.profile or None, dict(submitted.entered), dict(problems))


def charge_text(request: JobRequest) -> str:
    """``charged to account chem: 4 cores, 2 h (8 core-hours at most)``: what a job of ``request``
    costs whom, in the words of its scheduler (Grid Engine: project)."""
    word = allocation_word("account", request.cluster.scheduler)
    whom = f"{word} {request.account}" if request.account else f"your default {word}"
    cores = request.cores * request.nodes
    parts = [f"{cores} core{'s' if cores != 1 else ''}"]
    if request.gpus:
        gpus = request.gpus * request.nodes
        parts.append(f"{gpus} GPU{'s' if gpus != 1 else ''}")
    parts.append(duration_text(request.walltime))
    core_hours = decimal_text(round(cores * request.walltime.seconds / 3600, 2))
    text = f"charged to {whom}: {', '.join(parts)} ({core_hours} core-hours at most)"
    if request.reservation_name:
        text += f", in reservation {request.reservation_name}"
    return text


def _bound_or_limit(bound: Any, key: str, limit: Any) -> Any:
    value = getattr(bound, key, None)
    return value if value is not None else limit


def _field_view(site: SiteConfig, profile: Profile, name: str, bound: Any, values: Mapping[str, str],
                problem: str | None) -> dict[str, Any]:
    limits = site.clusters[profile.cluster].queues[profile.queue]
    base = f"{profile.slug}{FIELD_SEPARATOR}{name}"
    default = getattr(profile, name) if name in ("queue", "account") else getattr(profile.resources, name)
    view: dict[str, Any] = {"name": name, "label": LABELS[name], "id": base, "hint_id": f"{base}-hint",
                            "error_id": f"{base}-error", "error": problem}
    choices = getattr(bound, "choices", None)
    if choices is not None:
        if name == "memory":
            options = [(str(c), f"{gigabytes(c)} GB") for c in choices]
        elif name == "walltime":
            options = [(str(c), duration_text(c)) for c in choices]
        else:
            options = [(str(c), str(c)) for c in choices]
        chosen = values.get(f"{name}-choice", values.get(name))
        selected = _matching_choice(name, chosen, choices) if chosen is not None else None
        if selected is None:
            selected = str(default)
        input_name = f"{base}-choice" if name in ("memory", "walltime") else base
        view.update(kind="select", inputs=[{"id": base, "name": input_name}], options=options, selected=selected,
                    hint=f"{len(choices)} choices")
        if name == "memory":
            view["label"] = "Memory"
        return view
    if name in ("cores", "gpus", "nodes"):
        limit = getattr(limits, {"cores": "max_cores", "gpus": "max_gpus", "nodes": "max_nodes"}[name])
        low = _bound_or_limit(bound, "min", 0 if name == "gpus" else 1)
        high = _bound_or_limit(bound, "max", limit)
        value = values.get(name, str(default))
        view.update(kind="number", inputs=[{"id": base, "name": base, "value": value, "min": low, "max": high,
                                            "step": "1"}],
                    hint=f"{low} to {high}" if high is not None else f"at least {low}")
        return view
    if name == "memory":
        low, high = getattr(bound, "min", None), _bound_or_limit(bound, "max", limits.max_memory)
        value = values.get("memory", gigabytes(default) if default is not None else "")
        # Half-GB steps (arrow keys) when every number involved is one; else any number (a step the
        # default does not fit makes the browser refuse to submit it).
        numbers = [float(v) for v in (value, *(gigabytes(m) for m in (low, high) if m is not None))
                   if _NUMBER_RE.match(v or "")]
        step = "0.5" if all(math.isclose(n * 2, round(n * 2)) for n in numbers) else "any"
        hint = " ".join(part for part in (f"from {gigabytes(low)} GB" if low else "",
                                          f"up to {gigabytes(high)} GB" if high else "") if part)
        view.update(kind="number", inputs=[{"id": base, "name": base, "value": value,
                                            "min": gigabytes(low) if low else None,
                                            "max": gigabytes(high) if high else None, "step": step}],
                    hint=hint or "in GB")
        return view
    # walltime: hours and minutes
    low, high = getattr(bound, "min", None), _bound_or_limit(bound, "max", limits.max_walltime)
    if "walltime-hours" in values or "walltime-minutes" in values:
        hours, minutes = values.get("walltime-hours", ""), values.get("walltime-minutes", "")
    else:
        hours, minutes = str(default.minutes // 60), str(default.minutes % 60)
    hint = " ".join(part for part in (f"from {duration_text(low)}" if low else "",
                                      f"up to {duration_text(high)}" if high else "") if part)
    view.update(kind="duration", inputs=[
        {"id": f"{base}-hours", "name": f"{base}-hours", "value": hours, "min": 0,
         "max": high.seconds // 3600 if high else None, "step": "1", "unit": "hours"},
        {"id": f"{base}-minutes", "name": f"{base}-minutes", "value": minutes, "min": 0, "max": 59, "step": "1",
         "unit": "minutes"},
    ], hint=hint or "hours and minutes")
    return view


def _matching_choice(name: str, chosen: str, choices: list[Any]) -> str | None:
    """The choice ``chosen`` stands for (``8192M`` is the choice ``8G``), as the choice is written."""
    for choice in choices:
        try:
            if name == "memory" and Memory.parse(chosen) == choice or name == "walltime" and \
                    Walltime.parse(chosen) == choice:
                return str(choice)
        except ValueError:
            return None
        if str(choice) == chosen:
            return str(choice)
    return None


def opening_text(reservation: Reservation) -> str | None:
    """``opens 2026-12-26 10:00`` for a reservation not open yet (the scheduler's local time)."""
    if reservation.active or reservation.start is None:
        return None
    return f"opens {reservation.start:%Y-%m-%d %H:%M}"


def _allocation_view(profile: Profile, name: str, allocations: Allocations | None, age: float | None,
                     values: Mapping[str, str], problem: str | None) -> dict[str, Any] | None:
    """A select of the values the user may give (the default preselected), or a note that the
    scheduler's list is unknown; None when the user has no say in ``name``."""
    rule = profile.allocation(name)
    if not rule.adjustable:
        return None
    base = f"{profile.slug}{FIELD_SEPARATOR}{name}"
    view: dict[str, Any] = {"name": name, "label": LABELS[name], "id": base, "hint_id": f"{base}-hint",
                            "error_id": f"{base}-error", "error": problem}
    allowed = allowed_values(rule, allocations)
    if allowed is None:
        view.update(kind="note", inputs=[], hint="unknown: the scheduler did not answer; try again in a minute")
        return view
    choices, default = allowed
    texts = {value: value for value in choices}
    if name == "qos" and rule.from_scheduler and allocations is not None:
        # Every QoS of every account (the chosen pair is checked on submission): without JavaScript the
        # select cannot follow the account, so each option says which accounts allow it.
        choices = allocations.qos
        texts = {value: value for value in choices}
        for qos in choices:
            accounts = [account for account, allowed in allocations.qos_by_account.items() if qos in allowed]
            if accounts and len(accounts) < len(allocations.qos_by_account):
                texts[qos] = f"{qos} (with {', '.join(accounts)} only)"
    if name == "reservation" and allocations is not None:
        for reservation in allocations.reservations:
            opens = opening_text(reservation)
            if reservation.name in texts and opens:
                texts[reservation.name] = f"{reservation.name} ({opens})"
    options = ([("", "none (the scheduler's default)")] if rule.optional else []) + [(v, texts[v]) for v in choices]
    chosen = values.get(name)
    selected = chosen if chosen is not None and (chosen in choices or chosen == "") else (default or "")
    hints = [f"{len(choices)} choice{'s' if len(choices) != 1 else ''}"]
    if name == "qos" and rule.from_scheduler and allocations is not None \
            and len(set(allocations.qos_by_account.values())) > 1:
        hints.append("by account: " + "; ".join(f"{account}: {', '.join(qos)}"
                                                for account, qos in allocations.qos_by_account.items()))
    if rule.from_scheduler:
        hints.append(f"from the scheduler, {age_text(age) or 'just asked'}")
    view.update(kind="select", inputs=[{"id": base, "name": base}], options=options, selected=selected,
                hint="; ".join(hints))
    return view


def _image_view(site: SiteConfig, profile: Profile, values: Mapping[str, str],
                problem: str | None) -> dict[str, Any] | None:
    """A select of the container images the profile offers, by label (the default preselected);
    None when there is nothing to pick."""
    cluster = site.clusters[profile.cluster]
    choices = image_choices(profile, cluster)
    if not choices:
        return None
    base = f"{profile.slug}{FIELD_SEPARATOR}image"
    labels = [offered.label for offered in choices]
    default = container_image_label(site, profile)
    chosen = values.get("image")
    return {"name": "image", "label": LABELS["image"], "id": base, "hint_id": f"{base}-hint",
            "error_id": f"{base}-error", "error": problem, "kind": "select", "inputs": [{"id": base, "name": base}],
            "options": [(label, label) for label in labels],
            "selected": chosen if chosen in labels else default, "hint": f"{len(labels)} container images"}


def allows_user_envs(site: SiteConfig, profile: Profile) -> bool:
    return site.clusters[profile.cluster].environment.extended_by(profile.environment).allows_user_envs


def _user_env_view(site: SiteConfig, profile: Profile, values: Mapping[str, str],
                   problem: str | None) -> dict[str, Any] | None:
    """A text field for the user's own venv or conda env (a path under their home); None when the
    profile does not allow one."""
    if not allows_user_envs(site, profile):
        return None
    base = f"{profile.slug}{FIELD_SEPARATOR}user_env"
    return {"name": "user_env", "label": LABELS["user_env"], "id": base, "hint_id": f"{base}-hint",
            "error_id": f"{base}-error", "error": problem, "kind": "text",
            "inputs": [{"id": base, "name": base, "value": values.get("user_env", ""),
                        "placeholder": "envs/lab or ~/miniforge3/envs/lab"}],
            "hint": "a venv or conda env under your home, with jupyterhub and jupyterlab in it; "
                    "empty: the site's environment"}


def container_image_label(site: SiteConfig, profile: Profile) -> str | None:
    """The label of the container image a job of ``profile`` runs in by default (None: no container)."""
    container = site.clusters[profile.cluster].environment.extended_by(profile.environment).container
    image = container.default_image() if container is not None else None
    return image.label if image is not None else None


def pinned_reservation_text(site: SiteConfig, profile: Profile, allocations: Allocations | None) -> str | None:
    """The card's line for a reservation the profile pins: ``reservation course-later opens 2026-12-26 10:00``
    (the opening of the one hpchub would use, not of a user's namesake)."""
    name = profile.allocation("reservation").fixed
    if name is None:
        return None
    found = [r for r in (allocations.reservations if allocations is not None else ())
             if r.name == name and allocations is not None and made_by_trusted(r, allocations,
                                                                               site.clusters[profile.cluster])]
    opens = opening_text(found[0]) if found else None
    return f"reservation {name}" + (f" {opens}" if opens else "")


def resources_text(profile: Profile) -> str:
    """``2 cores, 8 GB, 4 h, 2 nodes``: what the profile gives when nothing is changed."""
    r = profile.resources
    parts = [f"{r.cores} core{'s' if r.cores != 1 else ''}"]
    if r.memory is not None:
        parts.append(f"{gigabytes(r.memory)} GB")
    parts.append(duration_text(r.walltime))
    if r.gpus:
        parts.append(f"{r.gpus} GPU{'s' if r.gpus != 1 else ''}")
    if r.nodes > 1:
        parts.append(f"{r.nodes} nodes")
    return ", ".join(parts)


def age_text(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    if seconds < 90:
        return f"updated {max(0, round(seconds))} s ago"
    return f"updated {round(seconds / 60)} min ago"


def render_spawn_form(
    site: SiteConfig,
    profiles: list[Profile],
    site_templates: Path | None = None,
    live_queues: Mapping[tuple[str, str], QueueInfo] | None = None,
    queue_ages: Mapping[str, float] | None = None,
    preselection: Preselection | None = None,
    allocations: Mapping[str, Allocations | None] | None = None,
    allocation_ages: Mapping[str, float] | None = None,
    estimate_url: str = "",
    estimates: Mapping[str, str] | None = None,
) -> str:
    """The form's HTML. ``live_queues`` ((cluster, queue) -> QueueInfo) adds current numbers and
    ``queue_ages`` (cluster -> seconds since they were fetched) their age; ``preselection``: the
    profile and values to show chosen (the last choice, or a refused one with its problems).
    ``allocations``: cluster -> this user's allocations there (None or missing: unknown), for the
    fields from the scheduler; ``allocation_ages``: cluster -> seconds since they were asked.
    ``estimate_url``: where each card asks when its choice would start (hpchub.hub.estimate); "": no
    start estimates on the form. ``estimates``: profile slug -> the answer already known for the
    values the card opens with (the form shows it without JavaScript too)."""
    allocations = allocations or {}
    allocation_ages = allocation_ages or {}
    live_queues = live_queues or {}
    queue_ages = queue_ages or {}
    preselection = preselection or Preselection()
    slugs = [p.slug for p in profiles]
    chosen = preselection.profile if preselection.profile in slugs else (slugs[0] if slugs else None)
    general = dict(preselection.problems)
    groups: dict[str, list[dict]] = {}
    for p in profiles:
        is_chosen = p.slug == chosen
        values = preselection.values if is_chosen else {}
        fields = []
        for name, bound in p.user_adjustable.fields().items():
            if name in ALLOCATION_FIELDS:
                continue  # below, with the scheduler's values
            problem = general.pop(name, None) if is_chosen else None
            fields.append(_field_view(site, p, name, bound, values, problem))
        for name in ALLOCATION_FIELDS:
            problem = general.get(name) if is_chosen else None
            view = _allocation_view(p, name, allocations.get(p.cluster), allocation_ages.get(p.cluster), values,
                                    problem)
            if view is not None:
                if is_chosen:
                    general.pop(name, None)
                fields.append(view)
        image_view = _image_view(site, p, values, general.get("image") if is_chosen else None)
        if image_view is not None:
            if is_chosen:
                general.pop("image", None)
            fields.append(image_view)
        user_env_view = _user_env_view(site, p, values, general.get("user_env") if is_chosen else None)
        if user_env_view is not None:
            if is_chosen:
                general.pop("user_env", None)
            fields.append(user_env_view)
        groups.setdefault(p.cluster, []).append({
            "profile": p,
            "chosen": is_chosen,
            "resources": resources_text(p),
            "queue_limits": site.clusters[p.cluster].queues[p.queue],
            "fields": fields,
            "live": live_queues.get((p.cluster, p.queue)),
            "live_age": age_text(queue_ages.get(p.cluster)),
            "reservation": pinned_reservation_text(site, p, allocations.get(p.cluster)),
            "image": container_image_label(site, p),
            "user_envs": allows_user_envs(site, p),
            "kernels": kernels_text(profile_kernels(site, p)),
            "estimate": (estimates or {}).get(p.slug, ""),
        })
    template = form_environment(site_templates).get_template(FORM_TEMPLATE)
    link = preselection.link if chosen is not None and chosen == preselection.profile else None
    return template.render(site=site, clusters=groups, general_problems=general, single_cluster=len(groups) == 1,
                           link=link, estimate_url=estimate_url)
