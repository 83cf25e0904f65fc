"""Allocations on the real local clusters (tests/clusters/slurm.sh with slurmdbd, sge.sh with
projects and an advance reservation): what the backends read is what the schedulers enforce."""

from __future__ import annotations

import re
import subprocess
from datetime import datetime, timedelta

import pytest
from helpers.jobs import scheduler_output

from hpchub.core.config import parse_site_config
from hpchub.core.options import OptionsError, resolve_request
from hpchub.schedulers import sge, slurm


def sbatch(user: str, *options: str) -> subprocess.CompletedProcess[str]:
    """A held one-minute job (nothing runs); the caller cancels what was accepted."""
    return subprocess.run(["sudo", "-n", "-u", user, "sbatch", "--parsable", "--hold", "--partition=debug",
                           "--time=1", "--chdir=/tmp", "--output=/dev/null", *options, "--wrap=true"],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
class TestSlurm:
    def allocations(self, user: str):
        outputs: list[str] = []
        while argvs := slurm.allocations_argvs(user, outputs):
            outputs += [scheduler_output(argv) for argv in argvs]
        return slurm.parse_allocations(user, [], outputs)

    def test_accounts_qos_and_reservations_as_slurmdbd_has_them(self):
        alice, bob = self.allocations("alice"), self.allocations("bob")
        assert (alice.accounts, alice.default_account) == (("chem", "phys"), "chem")
        assert alice.qos_by_account == {"chem": ("high", "normal"), "phys": ("normal",)}
        assert (bob.accounts, bob.default_account, bob.qos, bob.reservations) == (("phys",), "phys", ("normal",), ())
        reservations = {reservation.name: reservation for reservation in alice.reservations}
        assert set(reservations) == {"course", "course-later"}
        assert reservations["course"].users == ("alice", "carol") and reservations["course"].active
        later = reservations["course-later"]
        assert not later.active and later.start is not None and later.start > datetime.now()
        assert later.queue == "multi" and later.nodes == ("node1", "node2", "node3")
        everything = slurm.parse_cluster_allocations([scheduler_output(argv)
                                                      for argv in slurm.cluster_allocations_argvs([])])
        assert {"course", "course-later"} <= {reservation.name for reservation in everything.reservations}
        assert {"chem", "phys", "course"} <= set(everything.accounts) and everything.qos == ("high", "normal")

    def test_slurm_refuses_what_the_allocations_leave_out(self):
        refused = sbatch("bob", "--account=chem")
        assert refused.returncode == 1 and "Invalid account" in refused.stderr, refused
        refused = sbatch("bob", "--reservation=course")
        assert refused.returncode == 1 and "Access denied to requested reservation" in refused.stderr, refused
        refused = sbatch("alice", "--account=phys", "--qos=high")
        assert refused.returncode == 1 and "Invalid qos" in refused.stderr, refused
        accepted = sbatch("alice", "--account=chem", "--qos=high", "--reservation=course")
        try:
            assert accepted.returncode == 0, accepted.stderr
            fields = scheduler_output(["squeue", "--noheader", "--jobs", accepted.stdout.strip(), "--format=%u|%a|%q|%v"])
            assert fields.strip() == "alice|chem|high|course"
        finally:
            if accepted.returncode == 0:
                scheduler_output(["scancel", accepted.stdout.strip()])


def sge_answer(argv: list[str]) -> str:
    """What a Grid Engine command prints; a list of nothing (``qconf -so``: "no operator defined") is empty."""
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if sge.empty_answer(argv, result.returncode, result.stdout + result.stderr):
        return ""
    assert result.returncode == 0, result.stderr
    return result.stdout


def qrsub(name: str, days: int, *, user: str | None = None, users: str = "carol") -> str:
    """An advance reservation of one long.q slot ``days`` ahead (as ``user``, else root); its number."""
    start = (datetime.now() + timedelta(days=days)).strftime("%Y%m%d%H00")
    out = scheduler_output(["qrsub", "-N", name, "-a", start, "-d", "1:00:00", "-q", "long.q", "-u", users], user)
    found = re.search(r"advance reservation (\d+) has been granted", out)
    assert found, out
    return found.group(1)


PINNED_SITE = """
site: a course that pins its advance reservation
clusters:
  sge:
    scheduler: sge
    submit: {via: sudo}
    queues: {long.q: {max_walltime: "04:00:00"}}
profiles:
  - {slug: course, name: Course, cluster: sge, queue: long.q, resources: {walltime: "00:30:00"},
     reservation: hpchub-pinned-e}
"""


@pytest.mark.sge
@pytest.mark.usefixtures("sge_cluster")
class TestGridEngine:
    def allocations(self, user: str):
        outputs: list[str] = []
        while argvs := sge.allocations_argvs(user, outputs):
            outputs += [sge_answer(argv) for argv in argvs]
        return sge.parse_allocations(user, [], outputs)

    def test_a_users_namesake_of_a_pinned_reservation_never_gets_the_courses_jobs(self):
        """bob, allowed to make advance reservations (arusers), makes one named like the course's and
        open to carol: carol's course job goes to the admin's reservation, and with only bob's it is
        refused (before: the first of that name, whoever made it)."""
        site = parse_site_config(PINNED_SITE)
        made: list[str] = []
        scheduler_output(["qconf", "-au", "bob", "arusers"])
        try:
            made.append(qrsub("hpchub-pinned-e", 20, user="bob"))  # first: the lower number
            made.append(qrsub("hpchub-pinned-e", 21))  # root's: a Grid Engine manager
            carol = self.allocations("carol")
            assert {(r.reservation_id, r.owner) for r in carol.reservations if r.name == "hpchub-pinned-e"} == \
                {(made[0], "bob"), (made[1], "root")}
            assert resolve_request(site, site.profile("course"), {}, carol).reservation == made[1]
            scheduler_output(["qrdel", made.pop()])
            with pytest.raises(OptionsError) as refused:
                resolve_request(site, site.profile("course"), {}, self.allocations("carol"))
            assert f"{made[0]} (made by bob)" in refused.value.problems["reservation"]
        finally:
            for number in made:
                subprocess.run(["qrdel", number], capture_output=True, timeout=60)
            subprocess.run(["qconf", "-du", "bob", "arusers"], capture_output=True, timeout=60)

    def test_projects_and_the_advance_reservation(self):
        alice, bob = self.allocations("alice"), self.allocations("bob")
        assert (alice.accounts, alice.default_account) == (("chem", "phys"), "chem")
        assert (bob.accounts, bob.default_account, bob.reservations) == (("phys",), "phys", ())
        (course,) = [reservation for reservation in alice.reservations if reservation.name == "course"]
        assert course.users == ("alice", "carol") and course.queue == "long.q" and not course.active
        assert course.start is not None and course.start > datetime.now() and course.reservation_id.isdigit()

    def test_grid_engine_refuses_a_project_outside_the_access_lists(self):
        refused = subprocess.run(["sudo", "-n", "-u", "bob", "qsub", "-terse", "-b", "y", "-h", "-P", "chem",
                                  "-o", "/dev/null", "-j", "y", "true"], capture_output=True, text=True, timeout=60,
                                 cwd="/tmp")
        assert refused.returncode != 0 and 'no access to project "chem" for user "bob"' in refused.stderr, refused
