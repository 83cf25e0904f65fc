"""Accounts, QoS and reservations of a profile resolved against the scheduler's Allocations for a user
(pure: the Allocations are made here), and the job directives they become."""

from __future__ import annotations

import textwrap
from datetime import datetime

import pytest
from helpers.render_cases import USER

from hpchub.core.config import parse_site_config
from hpchub.core.jobs import server_job
from hpchub.core.options import OptionsError, needs_allocations, resolve_request
from hpchub.schedulers.base import Allocations, Reservation

OPENS = datetime(2026, 12, 26, 10, 0)
COURSE = Reservation("course", "course", datetime(2026, 11, 1, 8, 0), datetime(2027, 1, 1), True, ("alice", "carol"))
LATER = Reservation("course-later", "course-later", OPENS, datetime(2026, 12, 27), False, ("alice", "carol"))
ALICE = Allocations(accounts=("chem", "phys"), default_account="chem", qos=("high", "normal"),
                    qos_by_account={"chem": ("high", "normal"), "phys": ("normal",)}, default_qos="normal",
                    reservations=(COURSE, LATER))
BOB = Allocations(accounts=("phys",), default_account="phys", qos=("normal",), qos_by_account={"phys": ("normal",)})


def site(settings: str, scheduler: str = "slurm", cluster: str = ""):
    return parse_site_config(textwrap.dedent(f"""\
        site: Test
        clusters:
          main:
            scheduler: {scheduler}
            submit: {{via: sudo}}
            queues: {{debug: {{max_walltime: "04:00:00"}}}}
            {cluster}
        profiles:
          - slug: p
            name: P
            cluster: main
            queue: debug
            resources: {{walltime: "01:00:00"}}
        """) + textwrap.indent(settings, "    "))


def directives(site_config, request) -> list[str]:
    script = server_job(site_config, request, USER).script
    return [line for line in script.splitlines() if line.startswith(("#SBATCH --account", "#SBATCH --qos",
                                                                      "#SBATCH --reservation", "#$ -P", "#$ -ar",
                                                                      "#$ -A"))]


SCHEDULER = "account: {from_scheduler: true}\nqos: {from_scheduler: true}\nreservation: {from_scheduler: true}\n"


def test_from_scheduler_preselects_the_default_account_and_qos():
    config = site(SCHEDULER)
    assert needs_allocations(config, config.profile("p"))
    request = resolve_request(config, config.profile("p"), {}, ALICE)
    assert (request.account, request.qos, request.reservation) == ("chem", "normal", None)
    assert directives(config, request) == ["#SBATCH --account=chem", "#SBATCH --qos=normal"]


def test_from_scheduler_takes_what_the_scheduler_allows_this_user():
    config = site(SCHEDULER)
    request = resolve_request(config, config.profile("p"), {"account": "chem", "qos": "high", "reservation": "course"},
                              ALICE)
    assert directives(config, request) == ["#SBATCH --account=chem", "#SBATCH --qos=high",
                                           "#SBATCH --reservation=course"]
    # Another account's QoS is its own: phys has no high.
    with pytest.raises(OptionsError) as refused:
        resolve_request(config, config.profile("p"), {"account": "phys", "qos": "high"}, ALICE)
    assert set(refused.value.problems) == {"qos"} and "(yours: normal)" in refused.value.problems["qos"]


def test_values_outside_the_scheduler_allocations_are_refused_by_field():
    config = site(SCHEDULER)
    with pytest.raises(OptionsError) as refused:
        resolve_request(config, config.profile("p"), {"account": "chem", "reservation": "course"}, BOB)
    assert refused.value.problems == {
        "account": "the scheduler does not let you use account 'chem' (yours: phys)",
        "reservation": "the scheduler does not let you use reservation 'course' (yours: none)",
    }


def test_unknown_allocations_refuse_rather_than_guess():
    config = site(SCHEDULER)
    with pytest.raises(OptionsError) as refused:
        resolve_request(config, config.profile("p"), {})
    assert set(refused.value.problems) == {"account", "qos", "reservation"}
    assert "not available right now" in refused.value.problems["account"]


def test_a_list_preselects_its_first_and_refuses_others():
    config = site("account: [phys, chem]\nqos: [normal, high]\n")
    assert not needs_allocations(config, config.profile("p"))
    request = resolve_request(config, config.profile("p"))
    assert (request.account, request.qos) == ("phys", "normal")
    with pytest.raises(OptionsError) as refused:
        resolve_request(config, config.profile("p"), {"qos": "urgent"})
    assert refused.value.problems == {"qos": "urgent is not one of normal, high"}


def test_a_fixed_name_cannot_be_changed():
    config = site("account: chem\nqos: high\n")
    with pytest.raises(OptionsError) as refused:
        resolve_request(config, config.profile("p"), {"account": "phys"})
    assert refused.value.problems == {"account": "profile 'p' does not let users change the account"}


def test_a_pinned_reservation_not_open_yet_says_when_it_opens():
    config = site("reservation: course-later\n")
    assert needs_allocations(config, config.profile("p"))
    request = resolve_request(config, config.profile("p"), {}, ALICE)
    assert (request.reservation, request.reservation_opens) == ("course-later", OPENS)
    assert directives(config, request) == ["#SBATCH --reservation=course-later"]
    # Slurm takes the name as is when the reservations are unknown; for a user it does not admit: refused.
    assert resolve_request(config, config.profile("p")).reservation == "course-later"
    with pytest.raises(OptionsError) as refused:
        resolve_request(config, config.profile("p"), {}, BOB)
    assert refused.value.problems == {"reservation": "reservation 'course-later' is not open to you (or no longer "
                                                     "exists)"}


def test_grid_engine_project_and_advance_reservation_by_number():
    config = site("account: {from_scheduler: true}\nreservation: course\n", "sge")
    advance = Reservation("course", "17", OPENS, datetime(2026, 12, 27), False, ("alice", "carol"), queue="debug")
    allocations = Allocations(accounts=("chem", "phys"), default_account="chem", reservations=(advance,))
    request = resolve_request(config, config.profile("p"), {"account": "phys"}, allocations)
    assert directives(config, request) == ["#$ -P phys", "#$ -ar 17"]
    assert request.reservation_name == "course" and request.reservation_opens == OPENS
    # Grid Engine users know accounts as projects: the refusal says so
    with pytest.raises(OptionsError) as refused:
        resolve_request(config, config.profile("p"), {"account": "bio"}, allocations)
    assert refused.value.problems == {"account": "the scheduler does not let you use project 'bio' (yours: chem, phys)"}
    with pytest.raises(OptionsError) as refused:
        resolve_request(config, config.profile("p"), {}, None)
    assert refused.value.problems["account"] == ("the scheduler's list of your projects is not available right now; "
                                                 "try again in a minute")
    # Without the scheduler's answer the AR's number is unknown: refused, not guessed.
    fixed = site("account: chem\nreservation: course\n", "sge")
    with pytest.raises(OptionsError) as refused:
        resolve_request(fixed, fixed.profile("p"))
    assert set(refused.value.problems) == {"reservation"}
    with pytest.raises(OptionsError) as refused:
        resolve_request(fixed, fixed.profile("p"), {"qos": "high"})
    assert "qos" in refused.value.problems


def ar(number: str, owner: str, name: str = "course") -> Reservation:
    """A Grid Engine AR open to alice, made by ``owner``."""
    return Reservation(name, number, OPENS, datetime(2026, 12, 27), False, ("alice",), owner=owner)


def sge_allocations(*reservations: Reservation) -> Allocations:
    return Allocations(accounts=("chem",), default_account="chem", reservations=reservations,
                       reservation_admins=("root", "sgeadmin"))


def test_a_pinned_grid_engine_reservation_is_the_one_an_admin_made_never_a_users_namesake():
    config = site("reservation: course\n", "sge")
    pinned = config.profile("p")
    # bob (in arusers) made an AR named like the course's, open to alice: her job goes to root's.
    for order in ((ar("7", "root"), ar("9", "bob")), (ar("9", "bob"), ar("7", "root"))):
        assert resolve_request(config, pinned, {}, sge_allocations(*order)).reservation == "7"
    # Only bob's: refused, nothing submitted (before: his AR's number went on alice's job).
    with pytest.raises(OptionsError) as refused:
        resolve_request(config, pinned, {}, sge_allocations(ar("9", "bob")))
    assert refused.value.problems == {"reservation": (
        "hpchub does not use reservation 'course': it was made by an account that is neither a Grid Engine manager "
        "or operator nor one of the site's reservation owners (9 (made by bob)); nothing was submitted, please tell "
        "the admins")}
    # Two an admin made: ambiguous, refused rather than guessed.
    with pytest.raises(OptionsError) as refused:
        resolve_request(config, pinned, {}, sge_allocations(ar("7", "root"), ar("8", "sgeadmin")))
    assert refused.value.problems == {"reservation": (
        "2 reservations are named 'course' (7 (made by root), 8 (made by sgeadmin)): hpchub cannot tell which one is "
        "meant; nothing was submitted, please tell the admins")}
    # The site may trust the course's own account too.
    trusting = site("reservation: course\n", "sge", cluster="sge: {reservation_owners: [teacher]}")
    assert resolve_request(trusting, trusting.profile("p"), {}, sge_allocations(ar("5", "teacher"))).reservation == "5"


def test_a_grid_engine_reservation_the_user_picks_must_name_one():
    config = site("reservation: {from_scheduler: true}\n", "sge")
    mine = config.profile("p")
    # One AR of that name open to the user: theirs to pick, whoever made it.
    assert resolve_request(config, mine, {"reservation": "study"},
                           sge_allocations(ar("4", "bob", "study"))).reservation == "4"
    # Two of one name: an admin's is the one; two of users: refused.
    assert resolve_request(config, mine, {"reservation": "course"},
                           sge_allocations(ar("7", "root"), ar("9", "bob"))).reservation == "7"
    with pytest.raises(OptionsError) as refused:
        resolve_request(config, mine, {"reservation": "study"}, sge_allocations(ar("4", "bob", "study"),
                                                                                ar("6", "carol", "study")))
    assert refused.value.problems["reservation"].startswith("2 reservations are named 'study'")


def test_older_account_choices_still_resolve():
    config = site("account: chem\nuser_adjustable: {account: {choices: [chem, phys]}}\n")
    assert resolve_request(config, config.profile("p")).account == "chem"
    assert resolve_request(config, config.profile("p"), {"account": "phys"}).account == "phys"
    open_choice = site("user_adjustable: {account: {choices: [chem]}}\n")
    assert resolve_request(open_choice, open_choice.profile("p")).account is None
