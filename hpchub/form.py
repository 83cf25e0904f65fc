"""The spawn form: the profiles a user may use, with their adjustable fields within bounds.

HTML is rendered with autoescaping (a separate Jinja environment from the job scripts). Field
names carry the profile slug (``small--cores``) so that one form can hold every profile;
``options_from_form`` turns the chosen profile's fields into the flat ``user_options`` that the
REST API takes too (``{"profile": "small", "cores": "2"}``).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jinja2

from .config import Profile, SiteConfig
from .render import SiteTemplateLoader
from .schedulers import QueueInfo

FORM_TEMPLATE = "spawn-form.html.j2"
FIELD_SEPARATOR = "--"
# What the browser accepts in the text fields (the server checks again, strictly).
MEMORY_PATTERN = r"[0-9]+(\.[0-9]+)?[KMGTkmgt]"
WALLTIME_PATTERN = r"([0-9]+-)?[0-9]+:[0-5][0-9]:[0-5][0-9]"


@functools.lru_cache(maxsize=16)
def form_environment(site_templates: Path | None) -> jinja2.Environment:
    """One per templates directory (compiled once; edits still apply, see render.template_environment)."""
    return jinja2.Environment(
        loader=SiteTemplateLoader(site_templates), autoescape=True, undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
    )


def _field_views(site: SiteConfig, profile: Profile) -> list[dict]:
    cluster = site.clusters[profile.cluster]
    limits = cluster.queues[profile.queue]
    views = []
    for field, bound in profile.user_adjustable.fields().items():
        default = getattr(profile, field) if field in ("queue", "account") else getattr(profile.resources, field)
        view: dict[str, Any] = {"name": field, "input": f"{profile.slug}{FIELD_SEPARATOR}{field}",
                                "default": "" if default is None else str(default)}
        if getattr(bound, "choices", None) is not None:
            view.update(kind="select", choices=[str(c) for c in bound.choices])
        elif field in ("cores", "gpus", "nodes"):
            limit = getattr(limits, {"cores": "max_cores", "gpus": "max_gpus", "nodes": "max_nodes"}[field])
            view.update(kind="number", min=bound.min if bound.min is not None else (0 if field == "gpus" else 1),
                        max=bound.max if bound.max is not None else limit)
        else:
            limit = limits.max_memory if field == "memory" else limits.max_walltime
            top = bound.max if bound.max is not None else limit
            view.update(kind="text", min=str(bound.min) if bound.min else None, max=str(top) if top else None,
                        pattern=MEMORY_PATTERN if field == "memory" else WALLTIME_PATTERN)
        views.append(view)
    return views


def render_spawn_form(
    site: SiteConfig,
    profiles: list[Profile],
    site_templates: Path | None = None,
    live_queues: dict[tuple[str, str], QueueInfo] | None = None,
) -> str:
    """The form's HTML; ``live_queues`` ((cluster, queue) -> QueueInfo) adds current numbers."""
    live_queues = live_queues or {}
    template = form_environment(site_templates).get_template(FORM_TEMPLATE)
    return template.render(
        site=site,
        profiles=[
            {
                "profile": p,
                "queue_limits": site.clusters[p.cluster].queues[p.queue],
                "fields": _field_views(site, p),
                "live": live_queues.get((p.cluster, p.queue)),
            }
            for p in profiles
        ],
    )


def options_from_form(formdata: dict[str, list[str]]) -> dict[str, str]:
    """Form data to flat user_options: the chosen profile and its own fields only."""
    profile = (formdata.get("profile") or [""])[0]
    options = {"profile": profile} if profile else {}
    prefix = f"{profile}{FIELD_SEPARATOR}"
    for key, values in formdata.items():
        if profile and key.startswith(prefix) and values:
            options[key[len(prefix):]] = values[0]
    return options
