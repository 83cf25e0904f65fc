"""The spawn form (HTML) and the form-data to user_options mapping."""

import asyncio
import re

from helpers.support import SITE_CONFIGS

from hpchub.config import load_site_config, parse_site_config
from hpchub.form import options_from_form, render_spawn_form
from hpchub.poller import CachedQuery
from hpchub.schedulers import QueueInfo


def test_form_lists_profiles_with_fields_and_bounds():
    site = load_site_config(SITE_CONFIGS / "example-slurm-production.yaml")
    html = render_spawn_form(site, site.profiles)
    assert re.findall(r'name="profile" id="profile-([a-z-]+)"', html) == ["cpu-small", "cpu-multi", "gpu", "bigmem"]
    assert 'name="cpu-small--cores" id="cpu-small--cores" value="2" min="1" max="16"' in html
    assert '<option value="8G" selected>8G</option>' in html
    assert 'name="gpu--walltime"' in html and "up to 1-00:00:00" in html
    assert 'name="bigmem--cores"' not in html  # not adjustable


def test_form_text_is_escaped():
    text = (SITE_CONFIGS / "local-slurm.yaml").read_text().replace(
        'description: "A notebook on the head node."', 'description: "<script>alert(1)</script>"')
    site = parse_site_config(text)
    html = render_spawn_form(site, site.profiles)
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_live_queue_numbers_are_shown():
    site = load_site_config(SITE_CONFIGS / "local-slurm.yaml")
    live = {("slurm", "debug"): QueueInfo("debug", True, 8, 6, 1, 0, jobs_pending=3, jobs_running=1)}
    html = render_spawn_form(site, site.profiles, live_queues=live)
    assert re.search(r"now: 6 of 8 cores free,\s+1 running, 3 waiting", html)
    assert html.count('class="hpchub-live"') == 1  # no numbers for the queue nobody asked about


def test_site_can_replace_the_form(tmp_path):
    (tmp_path / "spawn-form.html.j2").write_text(
        '{% extends "hpchub/spawn-form.html.j2" %}{% block style %}<p class="site-banner">Course hub</p>{% endblock %}')
    site = load_site_config(SITE_CONFIGS / "local-slurm.yaml")
    html = render_spawn_form(site, site.profiles, tmp_path)
    assert html.startswith('<p class="site-banner">Course hub</p>') and 'value="small"' in html


def test_form_data_becomes_flat_options_of_the_chosen_profile_only():
    formdata = {"profile": ["small"], "small--cores": ["2"], "small--memory": ["2G"], "multi--nodes": ["3"], "_xsrf": ["x"]}
    assert options_from_form(formdata) == {"profile": "small", "cores": "2", "memory": "2G"}
    assert options_from_form({"small--cores": ["2"]}) == {}


class Clock:
    now = 100.0

    def __call__(self):
        return self.now


async def test_cached_query_fetches_once_per_ttl_for_all_callers():
    clock, calls = Clock(), []

    async def fetch():
        calls.append(1)
        await asyncio.sleep(0.01)
        if len(calls) == 3:
            raise RuntimeError("sinfo: error: Unable to contact slurm controller")
        return len(calls)

    cached = CachedQuery(fetch, ttl=60, clock=clock)
    assert await asyncio.gather(*(cached.get() for _ in range(20))) == [1] * 20
    clock.now += 30
    assert await cached.get() == 1 and len(calls) == 1
    clock.now += 31
    assert await cached.get() == 2
    clock.now += 61
    assert await cached.get() == 2 and "Unable to contact" in cached.error  # stale, not lost
    clock.now += 61
    assert await cached.get() == 4 and cached.error is None
