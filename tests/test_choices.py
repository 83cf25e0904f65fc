"""hpchub.hub.choices alone: a link's or the form's choice, checked with a given profile lookup and resolver."""

from __future__ import annotations

import pytest
from helpers.support import SITE_CONFIGS
from tornado import web

from hpchub.core.config import load_site_config
from hpchub.core.options import resolve_request
from hpchub.hub import choices

SITE = load_site_config(SITE_CONFIGS / "local-slurm.yaml")


async def profile_for(options):
    try:
        return SITE.profile(options.get("profile", "small"))
    except KeyError:
        raise web.HTTPError(400, "not available to you") from None


async def resolve(profile, options):
    return resolve_request(SITE, profile, options)


async def test_a_link_never_starts_anything_and_its_choice_is_shown_once():
    with pytest.raises(choices.LinkShown):
        await choices.link_choice("linda", {"profile": ["small"], "cores": ["2"]}, profile_for, resolve)
    shown = choices.preselection("linda", {})
    assert shown.link is not None and shown.link.profile == SITE.profile("small").name
    assert choices.preselection("linda", {}).link is None  # shown once


async def test_a_refused_choice_names_each_problem():
    with pytest.raises(choices.ChoicesRefused) as refused:
        await choices.checked("linda", {"profile": "nope", "cores": "2"}, {}, profile_for, resolve,
                              lambda problems: choices.Preselection.from_options({}, problems))
    assert set(refused.value.problems) == {"profile"}
    choices.preselection("linda", {})
