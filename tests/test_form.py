"""The spawn form (HTML), the form-data and link to user_options mappings, and the spawner's
checking of both (refused choices shown again on the form, the last choice preselected)."""

import asyncio
import re
from html.parser import HTMLParser
from types import SimpleNamespace

import pytest
from helpers.support import SITE_CONFIGS, user_readable
from tornado import web

from hpchub.core.config import load_site_config, parse_site_config
from hpchub.core.options import OptionsError, resolve_request
from hpchub.core.poller import CachedQuery
from hpchub.hub import choices as choices_module
from hpchub.hub.choices import ChoicesRefused, LinkShown
from hpchub.hub.form import (
    Preselection,
    charge_text,
    memory_from_gigabytes,
    options_from_form,
    options_from_query,
    read_form,
    render_spawn_form,
    walltime_from_parts,
)
from hpchub.hub.spawner import HPCSpawner
from hpchub.schedulers import QueueInfo

TWO_CLUSTERS = """
site: Two clusters
clusters:
  slurm:
    scheduler: slurm
    submit: {via: sudo}
    queues:
      debug: {max_walltime: "04:00:00", max_cores: 8, max_memory: 16G, max_gpus: 2, max_nodes: 2}
  sge:
    scheduler: sge
    submit: {via: sudo}
    queues:
      short.q: {max_walltime: "04:00:00", max_cores: 8, max_memory: 16G}
profiles:
  - slug: small
    name: Small
    cluster: slurm
    queue: debug
    resources: {cores: 1, memory: 2G, walltime: "01:00:00"}
    user_adjustable:
      cores: {min: 1, max: 4}
      memory: {min: 1G, max: 8G}
      walltime: {min: "00:30:00", max: "04:00:00"}
      gpus: {max: 2}
  - slug: teach
    name: Teaching
    cluster: sge
    queue: short.q
    resources: {cores: 2, memory: 1G, walltime: "02:00:00"}
    user_adjustable:
      memory: {choices: [1G, 2G]}
      walltime: {choices: ["01:00:00", "02:00:00"]}
  - slug: fixed
    name: Fixed
    cluster: slurm
    queue: debug
    resources: {cores: 1, memory: 1000M, walltime: "00:30:00"}
    user_adjustable:
      memory: {max: 2G}
"""


class Elements(HTMLParser):
    """Every start tag with its attributes, in order, and the text inside each id'd element."""

    def __init__(self, html: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def by_id(self, element_id: str) -> dict:
        (found,) = [attrs for _, attrs in self.tags if attrs.get("id") == element_id]
        return found


@pytest.fixture(scope="module")
def site():
    return parse_site_config(TWO_CLUSTERS)


def test_cards_are_grouped_by_cluster(site):
    html = render_spawn_form(site, site.profiles)
    groups = re.findall(r'<fieldset class="hpchub-cluster" data-cluster="(\w+)">\s*<legend>Cluster \w+</legend>(.*?)'
                        r'</fieldset>\s*(?=<fieldset class="hpchub-cluster"|</div>\s*$)', html, re.S)
    assert [(cluster, re.findall(r'name="profile" id="profile-([a-z]+)"', body)) for cluster, body in groups] == \
        [("slurm", ["small", "fixed"]), ("sge", ["teach"])]


def test_every_input_has_a_label(site):
    parsed = Elements(render_spawn_form(site, site.profiles))
    controls = [attrs["id"] for tag, attrs in parsed.tags if tag in ("input", "select")]
    labelled = {attrs["for"] for tag, attrs in parsed.tags if tag == "label"}
    assert len(controls) == 3 + 5 + 2 + 1  # radios; small: cores, memory, hours, minutes, gpus; teach: 2; fixed: 1
    assert set(controls) <= labelled
    # Hints are announced with their input.
    assert parsed.by_id("small--memory")["aria-describedby"] == "small--memory-hint"


def test_fields_in_units_with_bounds_as_hints(site):
    html = render_spawn_form(site, site.profiles)
    parsed = Elements(html)
    assert parsed.by_id("small--memory") == {"type": "number", "name": "small--memory", "id": "small--memory",
                                             "value": "2", "min": "1", "max": "8", "step": "0.5",
                                             "aria-describedby": "small--memory-hint"}
    assert '<span class="hpchub-hint" id="small--memory-hint">from 1 GB up to 8 GB</span>' in html
    assert parsed.by_id("small--walltime-hours")["value"] == "1" and parsed.by_id("small--walltime-hours")["max"] == "4"
    assert parsed.by_id("small--walltime-minutes")["value"] == "0" and parsed.by_id("small--walltime-minutes")["max"] == "59"
    assert '<span class="hpchub-hint" id="small--walltime-hint">from 30 min up to 4 h</span>' in html
    assert parsed.by_id("small--gpus")["min"] == "0" and parsed.by_id("small--gpus")["max"] == "2"
    # Choices are a select, shown in GB / hours, sent canonical.
    assert '<option value="1G" selected>1 GB</option><option value="2G" >2 GB</option>' in html
    assert '<option value="01:00:00" >1 h</option><option value="02:00:00" selected>2 h</option>' in html
    assert 'name="teach--memory-choice"' in html
    # 1000M is not a whole half GB: any number, or the browser would refuse to send the default.
    assert parsed.by_id("fixed--memory")["value"] == "0.9766" and parsed.by_id("fixed--memory")["step"] == "any"
    assert "2 cores, 1 GB, 2 h &middot; queue short.q" in html


def test_production_form_lists_profiles_with_their_fields():
    site = load_site_config(SITE_CONFIGS / "example-slurm-production.yaml")
    html = render_spawn_form(site, site.profiles)
    assert re.findall(r'name="profile" id="profile-([a-z-]+)"', html) == ["cpu-small", "cpu-multi", "gpu", "bigmem"]
    assert 'name="cpu-small--cores" id="cpu-small--cores" value="2" min="1" max="16"' in html
    assert '<option value="8G" selected>8 GB</option>' in html
    assert 'id="gpu--walltime-hours" value="8" min="0" max="24"' in html and "up to 24 h" in html
    assert 'name="bigmem--cores"' not in html  # not adjustable


def test_form_text_is_escaped():
    text = (SITE_CONFIGS / "local-slurm.yaml").read_text().replace(
        'description: "A notebook on the head node."', 'description: "<script>alert(1)</script>"')
    site = parse_site_config(text)
    html = render_spawn_form(site, site.profiles)
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_live_queue_numbers_are_shown_with_their_age():
    site = load_site_config(SITE_CONFIGS / "local-slurm.yaml")
    live = {("slurm", "debug"): QueueInfo("debug", True, 8, 6, 1, 0, jobs_pending=3, jobs_running=1)}
    html = render_spawn_form(site, site.profiles, live_queues=live, queue_ages={"slurm": 12.4})
    assert re.search(r"now: 6 of 8 cores free,\s+1 running, 3 waiting\s+<span class=\"hpchub-age\">"
                     r"\(updated 12 s ago\)</span>", html)
    assert html.count('class="hpchub-live"') == 1  # no numbers for the queue nobody asked about
    assert "(updated 3 min ago)" in render_spawn_form(site, site.profiles, live_queues=live, queue_ages={"slurm": 170})


def test_site_can_replace_the_form(tmp_path):
    (tmp_path / "spawn-form.html.j2").write_text(
        '{% extends "hpchub/spawn-form.html.j2" %}{% block style %}<p class="site-banner">Course hub</p>{% endblock %}')
    site = load_site_config(SITE_CONFIGS / "local-slurm.yaml")
    html = render_spawn_form(site, site.profiles, tmp_path)
    assert html.startswith('<p class="site-banner">Course hub</p>') and 'value="small"' in html


def test_refused_input_is_shown_again_with_each_message_next_to_its_field(site):
    submitted = read_form({"profile": ["teach"], "teach--memory-choice": ["2G"], "teach--walltime-choice": ["01:00:00"],
                           "small--cores": ["3"]})
    shown = Preselection.from_form(submitted, {"memory": "2G is too much today", "shoe_size": "unknown option"})
    html = render_spawn_form(site, site.profiles, preselection=shown)
    parsed = Elements(html)
    assert "checked" in parsed.by_id("profile-teach") and "checked" not in parsed.by_id("profile-small")
    memory = parsed.by_id("teach--memory")
    assert memory["aria-invalid"] == "true" and memory["aria-describedby"] == "teach--memory-hint teach--memory-error"
    assert re.search(r'id="teach--memory".*?<option value="2G" selected>.*?</select>\s*<span [^>]*>2 choices</span>\s*'
                     r'<p class="hpchub-error" id="teach--memory-error">2G is too much today</p>', html, re.S)
    assert '<option value="01:00:00" selected>1 h</option>' in html  # the input is kept
    assert "aria-invalid" not in parsed.by_id("teach--walltime")
    # A field the form has no input for: in the general error area, announced.
    assert re.search(r'id="hpchub-general-error" role="alert">.*<code>shoe_size</code>: unknown option', html, re.S)
    assert 'value="1" min="1" max="4"' in html  # another profile's input is not taken over


def test_walltime_error_marks_both_inputs(site):
    submitted = read_form({"profile": ["small"], "small--walltime-hours": ["4"], "small--walltime-minutes": ["30"]})
    assert submitted.options["walltime"] == "4:30:00"
    html = render_spawn_form(site, site.profiles, preselection=Preselection.from_form(submitted, {"walltime": "too long"}))
    parsed = Elements(html)
    for part, value in (("hours", "4"), ("minutes", "30")):
        attrs = parsed.by_id(f"small--walltime-{part}")
        assert attrs["value"] == value and attrs["aria-invalid"] == "true"
        assert attrs["aria-describedby"] == "small--walltime-hint small--walltime-error"
    assert "hpchub-general-error" not in html


def test_last_choice_is_preselected_in_form_units(site):
    remembered = {"profile": "small", "cores": 3, "memory": "1536M", "walltime": "2:30:00"}
    parsed = Elements(render_spawn_form(site, site.profiles, preselection=Preselection.from_options(remembered)))
    assert "checked" in parsed.by_id("profile-small")
    assert parsed.by_id("small--cores")["value"] == "3" and parsed.by_id("small--memory")["value"] == "1.5"
    assert (parsed.by_id("small--walltime-hours")["value"], parsed.by_id("small--walltime-minutes")["value"]) == ("2", "30")
    html = render_spawn_form(site, site.profiles, preselection=Preselection.from_options({"profile": "teach",
                                                                                          "memory": "1024M"}))
    assert "checked" in Elements(html).by_id("profile-teach") and '<option value="1G" selected>' in html
    # A profile the user may no longer use: the first one, nothing kept.
    parsed = Elements(render_spawn_form(site, site.profiles[1:], preselection=Preselection.from_options(remembered)))
    assert "checked" in parsed.by_id("profile-teach")


@pytest.mark.parametrize("typed, canonical", [("4", "4G"), ("1.5", "1.5G"), (" 0.25 ", "0.25G"), ("0.1", "102M"),
                                              ("16", "16G")])
def test_memory_in_gb_becomes_a_canonical_size(typed, canonical):
    assert memory_from_gigabytes(typed) == canonical


@pytest.mark.parametrize("typed, message", [("4G", "'4G' is not a number of GB"), ("0", "must be more than 0 GB"),
                                            ("-1", "is not a number of GB"), ("1e9", "is not a number of GB")])
def test_memory_that_is_not_a_number_of_gb_is_refused(typed, message):
    with pytest.raises(ValueError, match=message):
        memory_from_gigabytes(typed)


def test_walltime_from_hours_and_minutes():
    assert walltime_from_parts("2", "30") == "2:30:00"
    assert walltime_from_parts("", "45") == "0:45:00" and walltime_from_parts("3", "") == "3:00:00"
    assert walltime_from_parts(" ", "") is None
    for hours, minutes, message in (("1", "60", "minutes must be 0 to 59"), ("0", "0", "longer than 0"),
                                    ("1.5", "", "hours: '1.5' is not a whole number")):
        with pytest.raises(ValueError, match=message):
            walltime_from_parts(hours, minutes)


def test_form_data_becomes_canonical_options_of_the_chosen_profile_only():
    formdata = {"profile": ["small"], "small--cores": ["2"], "small--memory": ["1.5"], "small--walltime-hours": ["2"],
                "small--walltime-minutes": ["5"], "teach--memory-choice": ["2G"], "_xsrf": ["x"]}
    assert options_from_form(formdata) == {"profile": "small", "cores": "2", "memory": "1.5G", "walltime": "2:05:00"}
    assert options_from_form({"profile": ["teach"], "teach--memory-choice": ["2G"],
                              "teach--walltime-choice": ["01:00:00"]}) == \
        {"profile": "teach", "memory": "2G", "walltime": "01:00:00"}
    assert options_from_form({"small--cores": ["2"]}) == {}
    bad = read_form({"profile": ["small"], "small--memory": ["0"], "small--walltime-minutes": ["90"]})
    assert bad.problems == {"memory": "must be more than 0 GB",
                            "walltime": "minutes must be 0 to 59 (add whole hours to the hours)"}
    assert bad.entered == {"memory": "0", "walltime-minutes": "90"}
    with pytest.raises(OptionsError):
        options_from_form({"profile": ["small"], "small--memory": ["0"]})
    # A script that posts canonical values (memory with its unit, walltime as H:MM:SS) still works.
    assert options_from_form({"profile": ["small"], "small--memory": ["2G"], "small--walltime": ["00:30:00"]}) == \
        {"profile": "small", "memory": "2G", "walltime": "00:30:00"}


def test_link_arguments_become_flat_options():
    assert options_from_query({"profile": ["small"], "cores": ["2"], "memory": ["4G"], "walltime": ["2:00:00"]}) == \
        {"profile": "small", "cores": "2", "memory": "4G", "walltime": "2:00:00"}
    with pytest.raises(OptionsError) as refused:
        options_from_query({"profile": ["small"], "cores": ["2", "4"]})
    assert refused.value.problems == {"cores": "give it once"}


# -- the spawner: refused choices back on the form, links checked, the last choice -----------------
class Clock:
    now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def spawner(monkeypatch, site):
    """An HPCSpawner of alice on TWO_CLUSTERS whose queue numbers come from a fake fetch."""
    path = user_readable("form-two-clusters.yaml", TWO_CLUSTERS)
    clock = Clock()

    async def fetch():
        return [QueueInfo("debug", True, 8, 5, 1, 0, jobs_running=2), QueueInfo("short.q", True, 8, 8, 1, 1)]

    caches = {}

    def runtime(self, spec):
        cache = caches.setdefault(spec.name, CachedQuery(fetch, ttl=60, clock=clock))
        return SimpleNamespace(queue_numbers=lambda ttl: cache)

    monkeypatch.setattr(HPCSpawner, "_runtime", runtime)
    made = []

    def make(server: str = "", remembered: dict | None = None) -> HPCSpawner:
        spawner = HPCSpawner(user=SimpleNamespace(name="alice", groups=[], url="/user/alice/"), site_config=str(path),
                             orm_spawner=SimpleNamespace(name=server, server=None, user_options=remembered or {}))
        made.append(spawner)
        return spawner

    make.clock = clock
    return make


async def test_form_shows_live_numbers_and_their_age(spawner):
    first = await spawner()._render_form()
    assert re.search(r"now: 5 of 8 cores free,\s+2 running, 0 waiting\s+<span class=\"hpchub-age\">"
                     r"\(updated 0 s ago\)", first)
    spawner.clock.now += 42
    assert "(updated 42 s ago)" in await spawner()._render_form()


async def test_refused_form_is_shown_again_by_the_default_spawner_once(spawner):
    named = spawner(server="gpu")
    form = {"profile": ["small"], "small--cores": ["9"], "small--memory": ["2"], "small--walltime-hours": ["1"],
            "small--walltime-minutes": ["0"], "_xsrf": ["x"]}
    with pytest.raises(ChoicesRefused) as refused:
        await named.run_options_from_form(form)
    assert refused.value.status_code == 400 and refused.value.problems == {"cores": "9 is above the maximum 4"}
    assert "Nothing was submitted" in refused.value.jupyterhub_message
    # JupyterHub renders the form again with the user's default spawner, even for a named server.
    html = await spawner(remembered={"profile": "teach"})._render_form()
    parsed = Elements(html)
    assert parsed.by_id("small--cores")["value"] == "9" and parsed.by_id("small--cores")["aria-invalid"] == "true"
    assert '<p class="hpchub-error" id="small--cores-error">9 is above the maximum 4</p>' in html
    assert "checked" in parsed.by_id("profile-small")
    # Shown once: the next visit shows the server's own last choice.
    again = Elements(await spawner(remembered={"profile": "teach"})._render_form())
    assert "checked" in again.by_id("profile-teach") and "aria-invalid" not in again.by_id("small--cores")


async def test_accepted_form_gives_canonical_options(spawner):
    options = await spawner().run_options_from_form({"profile": ["small"], "small--cores": ["2"], "small--memory": ["4"],
                                                     "small--walltime-hours": ["2"], "small--walltime-minutes": ["0"],
                                                     "small--gpus": ["0"]})
    assert options == {"profile": "small", "cores": "2", "memory": "4G", "walltime": "2:00:00", "gpus": "0"}


async def test_a_link_never_starts_a_server_it_shows_the_prefilled_form_with_the_charge(spawner):
    # Before: options_from_query returned the options and JupyterHub started the server at once,
    # charged to whoever followed the link.
    link_spawner = spawner(server="course")
    with pytest.raises(LinkShown) as shown:
        await link_spawner.options_from_query({"profile": ["small"], "cores": ["2"], "memory": ["4G"],
                                               "walltime": ["1:30:00"]})
    assert shown.value.status_code == 200 and not shown.value.jupyterhub_message
    html = await spawner()._render_form()  # what JupyterHub shows next, with the user's default spawner
    parsed = Elements(html)
    assert "checked" in parsed.by_id("profile-small")
    assert (parsed.by_id("small--cores")["value"], parsed.by_id("small--memory")["value"],
            parsed.by_id("small--walltime-hours")["value"], parsed.by_id("small--walltime-minutes")["value"]) == \
        ("2", "4", "1", "30")
    assert 'aria-invalid="true"' not in html and "hpchub-general-error" not in html
    summary = " ".join(re.sub(r"<[^>]+>", " ", html[html.index('id="hpchub-link-summary"'):]).split())
    assert ("Nothing has started yet. The link you followed chose profile Small on cluster slurm, to be charged to "
            "your default account: 2 cores, 1 h 30 min (3 core-hours at most) . Check the choices below and press Start to "
            "start it.") in summary
    # Shown once: a later visit of the form is the plain form.
    assert "hpchub-link-summary" not in await spawner()._render_form()


def test_the_charge_names_the_account_cores_gpus_and_hours(site):
    request = resolve_request(site, site.profile("small"), {"cores": "3", "gpus": "1", "walltime": "2:00:00"})
    assert charge_text(request) == "charged to your default account: 3 cores, 1 GPU, 2 h (6 core-hours at most)"
    course = parse_site_config(TWO_CLUSTERS.replace("    cluster: sge\n", "    cluster: sge\n    account: datalit\n"))
    assert charge_text(resolve_request(course, course.profile("teach"))) == \
        "charged to project datalit: 2 cores, 2 h (4 core-hours at most)"


async def test_link_options_are_checked(spawner):
    for query, problems in (
        ({"profile": ["small"], "cores": ["99"]}, {"cores": "99 is above the maximum 4"}),
        ({"profile": ["small"], "shoe_size": ["44"]}, {"shoe_size": "unknown option (options: cores, memory, "
                                                                    "walltime, gpus, nodes, queue, account, qos, "
                                                                    "reservation, image, user_env)"}),
        ({"profile": ["teach"], "cores": ["2"]}, {"cores": "profile 'teach' does not let users change cores"}),
        ({"profile": ["huge"]}, {"profile": "profile 'huge' is not available to you"}),
        ({"profile": ["small"], "cores": ["1", "2"]}, {"cores": "give it once"}),
    ):
        link_spawner = spawner()
        with pytest.raises(ChoicesRefused) as refused:
            await link_spawner.options_from_query(query)
        assert refused.value.problems == problems
        html = await link_spawner._render_form()  # what the hub shows next (HTTP 400)
        field = next(iter(problems))
        if field in ("cores",) and query["profile"] == ["small"]:
            assert f'id="small--{field}-error">{problems[field]}</p>' in html
        else:
            assert re.search(rf'id="hpchub-general-error".*<code>{field}</code>', html, re.S)


async def test_stale_refusal_is_not_shown(spawner):
    with pytest.raises(ChoicesRefused):
        await spawner().options_from_query({"profile": ["small"], "cores": ["99"]})
    shown, when = choices_module._shown_choices["alice"]
    choices_module._shown_choices["alice"] = (shown, when - choices_module.SHOWN_CHOICE_TTL - 1)
    assert 'aria-invalid="true"' not in await spawner()._render_form()


async def test_cached_query_fetches_once_per_ttl_for_all_callers():
    clock, calls = Clock(), []

    async def fetch():
        calls.append(1)
        await asyncio.sleep(0.01)
        if len(calls) == 3:
            raise RuntimeError("sinfo: error: Unable to contact slurm controller")
        return len(calls)

    cached = CachedQuery(fetch, ttl=60, clock=clock)
    assert cached.age() is None
    assert await asyncio.gather(*(cached.get() for _ in range(20))) == [1] * 20
    clock.now += 30
    assert await cached.get() == 1 and len(calls) == 1 and cached.age() == 30
    clock.now += 31
    assert await cached.get() == 2 and cached.age() == 0
    clock.now += 61
    assert await cached.get() == 2 and "Unable to contact" in cached.error  # stale, not lost
    assert cached.age() == 61  # and its age says so
    clock.now += 61
    assert await cached.get() == 4 and cached.error is None


# -- accounts, QoS and reservations --------------------------------------------------------------
ALLOCATED = """
site: Allocations
clusters:
  slurm:
    scheduler: slurm
    submit: {via: sudo}
    queues: {debug: {max_walltime: "04:00:00"}}
profiles:
  - slug: research
    name: Research
    cluster: slurm
    queue: debug
    resources: {walltime: "01:00:00"}
    account: {from_scheduler: true}
    qos: {from_scheduler: true}
    reservation: {from_scheduler: true}
  - slug: course
    name: Course
    cluster: slurm
    queue: debug
    resources: {walltime: "01:00:00"}
    reservation: course-later
"""


def _alice_allocations():
    from datetime import datetime

    from hpchub.schedulers.base import Allocations, Reservation
    course = Reservation("course", "course", datetime(2026, 11, 1), datetime(2027, 1, 1), True, ("alice",))
    later = Reservation("course-later", "course-later", datetime(2026, 12, 26, 10, 0), datetime(2026, 12, 27), False,
                        ("alice",))
    return Allocations(accounts=("chem", "phys"), default_account="chem", qos=("high", "normal"),
                       qos_by_account={"chem": ("high", "normal"), "phys": ("normal",)}, default_qos="normal",
                       reservations=(course, later))


def test_allocation_selects_list_what_the_scheduler_allows_with_the_default_preselected():
    site = parse_site_config(ALLOCATED)
    html = render_spawn_form(site, site.profiles, allocations={"slurm": _alice_allocations()},
                             allocation_ages={"slurm": 12})
    assert re.search(r'<select name="research--account" id="research--account"[^>]*>\s*<option value="chem" selected>'
                     r'chem</option><option value="phys" >phys</option>', html)
    assert '<option value="high" >high (with chem only)</option><option value="normal" selected>normal</option>' in html
    assert "by account: chem: high, normal; phys: normal; from the scheduler, updated 12 s ago" in html
    # A reservation from the scheduler is optional; one not open yet says when it opens.
    assert ('<option value="" selected>none (the scheduler&#39;s default)</option><option value="course" >course'
            '</option><option value="course-later" >course-later (opens 2026-12-26 10:00)</option>') in html
    # A pinned reservation has no input; its card says when it opens.
    assert '<div class="hpchub-reservation">reservation course-later opens 2026-12-26 10:00</div>' in html
    assert 'name="course--reservation"' not in html
    # A user's namesake (a Grid Engine AR anybody in arusers can make) is not the one the card speaks of.
    from dataclasses import replace
    alice = _alice_allocations()
    namesake = replace(alice.reservations[1], reservation_id="99", start=alice.reservations[1].start.replace(day=1),
                       owner="bob")
    with_namesake = replace(alice, reservations=(namesake, *alice.reservations))
    html = render_spawn_form(site, site.profiles, allocations={"slurm": with_namesake})
    assert '<div class="hpchub-reservation">reservation course-later opens 2026-12-26 10:00</div>' in html


def test_unknown_allocations_are_said_on_the_form_and_refused_at_the_field():
    site = parse_site_config(ALLOCATED)
    shown = Preselection.from_options({"profile": "research"}, {"account": "the scheduler's list of your accounts is "
                                                                           "not available right now; try again"})
    html = render_spawn_form(site, site.profiles, preselection=shown)
    assert 'name="research--account"' not in html
    assert ('<span class="hpchub-hint" id="research--account-hint">unknown: the scheduler did not answer; try again in '
            'a minute</span>') in html
    assert re.search(r'id="research--account-error">the scheduler&#39;s list of your accounts is not available', html)
    assert "hpchub-general-error" not in html
    assert '<div class="hpchub-reservation">reservation course-later</div>' in html


@pytest.fixture
def allocated_spawner(monkeypatch):
    """An HPCSpawner of alice on ALLOCATED whose allocations come from a fake runtime (None: unknown)."""
    from hpchub.core.runtime import AllocationsAnswer

    path = user_readable("form-allocations.yaml", ALLOCATED)
    answer = {"allocations": _alice_allocations()}
    asked = []

    async def allocations(user, groups, ttl):
        asked.append(user)
        return AllocationsAnswer(answer["allocations"], 3.0, None if answer["allocations"] else "timed out")

    async def no_queues():
        return []

    def runtime(self, spec):
        return SimpleNamespace(queue_numbers=lambda ttl: CachedQuery(no_queues, ttl=60), allocations=allocations)

    monkeypatch.setattr(HPCSpawner, "_runtime", runtime)

    def make() -> HPCSpawner:
        return HPCSpawner(user=SimpleNamespace(name="alice", groups=[], url="/user/alice/"), site_config=str(path),
                          orm_spawner=SimpleNamespace(name="", server=None, user_options={}))

    make.answer, make.asked = answer, asked
    return make


async def test_spawner_checks_choices_against_the_users_allocations(allocated_spawner):
    html = await allocated_spawner()._render_form()
    assert '<option value="chem" selected>chem</option>' in html and allocated_spawner.asked == ["alice"]
    options = await allocated_spawner().run_options_from_form({"profile": ["research"], "research--account": ["phys"],
                                                               "research--qos": ["normal"]})
    assert options == {"profile": "research", "account": "phys", "qos": "normal"}
    request = await allocated_spawner()._request_from(options)
    assert (request.account, request.qos, request.reservation) == ("phys", "normal", None)
    with pytest.raises(ChoicesRefused) as refused:
        await allocated_spawner().run_options_from_form({"profile": ["research"], "research--account": ["bio"]})
    assert refused.value.problems == {"account": "the scheduler does not let you use account 'bio' (yours: chem, phys)"}
    html = await allocated_spawner()._render_form()
    assert re.search(r'id="research--account-error">the scheduler does not let you use account', html)


async def test_spawn_of_a_from_scheduler_profile_is_refused_while_allocations_are_unknown(allocated_spawner):
    allocated_spawner.answer["allocations"] = None
    with pytest.raises(web.HTTPError) as refused:
        await allocated_spawner()._request_from({"profile": "research"})
    assert refused.value.status_code == 400
    assert "account: the scheduler's list of your accounts is not available right now" in refused.value.log_message
    assert (await allocated_spawner()._request_from({"profile": "course"})).reservation == "course-later"
