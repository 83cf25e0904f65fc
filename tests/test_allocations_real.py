"""Allocations on the real local clusters (tests/clusters/slurm.sh with slurmdbd, sge.sh with
projects and an advance reservation): what the backends read is what the schedulers enforce."""

from __future__ import annotations

import subprocess
from datetime import datetime

import pytest
from helpers.jobs import scheduler_output

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


@pytest.mark.sge
@pytest.mark.usefixtures("sge_cluster")
class TestGridEngine:
    def allocations(self, user: str):
        outputs: list[str] = []
        while argvs := sge.allocations_argvs(user, outputs):
            outputs += [scheduler_output(argv) for argv in argvs]
        return sge.parse_allocations(user, [], outputs)

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
