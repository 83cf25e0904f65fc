"""Allocations (accounts/projects, QoS, reservations) from both backends, against answers captured
from the local clusters' real slurmdbd/slurmctld and Grid Engine (tests/clusters/slurm.sh, sge.sh)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

import pytest
from helpers.support import REPO

from hpchub.schedulers import Allocations, ParseError, Reservation, sge, slurm

DATA = REPO / "tests" / "data"


def data(name: str) -> str:
    return (DATA / name).read_text()


def run_rounds(argvs: Callable[[Sequence[str]], list[list[str]]], answer: Callable[[list[str]], str]) -> list[str]:
    """What a caller does: run each round's commands until the backend asks for none."""
    outputs: list[str] = []
    while next_argvs := argvs(outputs):
        outputs += [answer(argv) for argv in next_argvs]
    return outputs


# -------------------------------------------------------------------------------------------- Slurm

def slurm_answer(user: str) -> Callable[[list[str]], str]:
    def answer(argv: list[str]) -> str:
        if argv[0] == "sacctmgr":
            assert argv[5] == user and "withassoc" in argv
            return data(f"sacctmgr-withassoc-{user}.txt")
        return {("scontrol", "show", "config"): data("scontrol-show-config.txt"),
                ("scontrol", "show", "reservation", "--oneliner"): data("scontrol-show-reservation.txt")}[tuple(argv)]
    return answer


def slurm_allocations(user: str, groups: Sequence[str] = ()) -> Allocations:
    outputs = run_rounds(lambda outputs: slurm.allocations_argvs(user, outputs), slurm_answer(user))
    assert len(outputs) == 3  # one round
    return slurm.parse_allocations(user, groups, outputs)


def test_slurm_alice_has_chem_by_default_and_phys_and_high_only_with_chem():
    found = slurm_allocations("alice")
    assert (found.accounts, found.default_account, found.default_qos) == (("chem", "phys"), "chem", "normal")
    assert found.qos == ("high", "normal")
    assert found.qos_by_account == {"chem": ("high", "normal"), "phys": ("normal",)}
    assert [reservation.name for reservation in found.reservations] == ["course", "course-later"]


def test_slurm_bob_has_phys_only_and_no_reservation():
    found = slurm_allocations("bob")
    assert (found.accounts, found.default_account, found.qos, found.reservations) == (("phys",), "phys", ("normal",), ())


def test_slurm_user_without_associations_has_nothing():
    found = slurm_allocations("nosuch")
    assert found == Allocations(accounts=(), default_account=None)


def test_slurm_associations_of_another_cluster_do_not_count():
    other = "othercluster|alice|gpu|gpu||normal,long|long\n"
    outputs = [data("sacctmgr-withassoc-alice.txt") + other, data("scontrol-show-config.txt"), ""]
    found = slurm.parse_allocations("alice", (), outputs)
    assert found.accounts == ("chem", "phys") and "long" not in found.qos


def test_slurm_unreadable_association_line_is_an_error():
    with pytest.raises(ParseError):
        slurm.parse_allocations("alice", (), ["hpchub|alice|chem\n", data("scontrol-show-config.txt"), ""])


def test_slurm_reservations_captured():
    assert slurm.cluster_allocations_argvs(["a", "q", "c", "r"]) == []
    course, later = slurm.parse_cluster_allocations(["", "", "", data("scontrol-show-reservation.txt")]).reservations
    assert course == Reservation(
        name="course", reservation_id="course", start=datetime(2026, 11, 26, 20, 53, 23),
        end=datetime(2027, 11, 26, 20, 53, 23), active=True, users=("alice", "carol"), state="ACTIVE")
    assert (later.active, later.state, later.queue, later.nodes) == (False, "INACTIVE", "multi", ("node1", "node2", "node3"))
    assert (later.start, later.end) == (datetime(2026, 12, 26, 20, 0), datetime(2026, 12, 26, 22, 0))
    assert slurm.parse_cluster_allocations(["", "", "", "No reservations in the system\n"]).reservations == ()


def test_slurm_cluster_allocations_captured():
    argvs = slurm.cluster_allocations_argvs([])
    assert argvs[0][:5] == ["sacctmgr", "--noheader", "--parsable2", "show", "association"]
    other = "othercluster|gpu||normal,long\n"
    answers = {tuple(argvs[0]): data("sacctmgr-association.txt") + other, tuple(argvs[1]): data("sacctmgr-qos.txt"),
               ("scontrol", "show", "config"): data("scontrol-show-config.txt"),
               ("scontrol", "show", "reservation", "--oneliner"): data("scontrol-show-reservation.txt")}
    everything = slurm.parse_cluster_allocations(run_rounds(slurm.cluster_allocations_argvs,
                                                            lambda argv: answers[tuple(argv)]))
    assert everything.accounts == ("bench", "chem", "course", "phys", "root")  # not gpu: another cluster's
    assert everything.qos == ("high", "normal") and everything.default_account is None
    assert everything.qos_by_account["chem"] == ("high", "normal") and everything.qos_by_account["phys"] == ("normal",)
    assert [reservation.name for reservation in everything.reservations] == ["course", "course-later"]
    with pytest.raises(ParseError):
        slurm.parse_cluster_allocations(["hpchub|chem\n", "", data("scontrol-show-config.txt"), ""])


def test_slurm_reservation_comment_with_spaces_and_equals_signs_stays_in_its_field():
    line = ("ReservationName=maint StartTime=2026-12-01T08:00:00 EndTime=2026-12-01T12:00:00 Duration=04:00:00 "
            "Nodes=gpu[01-02] PartitionName=gpu Users=root Accounts=-phys State=INACTIVE "
            "Comment=disk swap, see Users=everybody")
    (maint,) = slurm.parse_cluster_allocations(["", "", "", line]).reservations
    assert maint.users == ("root",) and maint.accounts == ("-phys",) and maint.nodes == ("gpu01", "gpu02")


# --------------------------------------------------------------------------------------- Grid Engine

SGE_ANSWERS = {
    ("qconf", "-sprjl"): "sge-qconf-sprjl.txt",
    ("qconf", "-suserl"): "sge-qconf-suserl.txt",
    ("qrstat", "-xml", "-u", "*"): "sge-qrstat.xml",
    ("qrstat", "-xml", "-ar", "2"): "sge-qrstat-ar.xml",
    ("qconf", "-sm"): "sge-qconf-sm.txt",
    ("qconf", "-so"): "sge-qconf-so.txt",  # "no operator defined", exit 1: an empty answer
    ("qconf", "-su", "chem_users,course_users,phys_users"): "sge-qconf-su.txt",
    **{("qconf", "-sprj", project): f"sge-qconf-sprj-{project}.txt" for project in ("chem", "course", "phys")},
    **{("qconf", "-suser", user): f"sge-qconf-suser-{user}.txt" for user in ("alice", "bob", "carol")},
}


def sge_answer(argv: list[str]) -> str:
    return data(SGE_ANSWERS[tuple(argv)])


def sge_allocations(user: str, groups: Sequence[str] = (), answer: Callable[[list[str]], str] = sge_answer,
                    ) -> Allocations:
    outputs = run_rounds(lambda outputs: sge.allocations_argvs(user, outputs), answer)
    return sge.parse_allocations(user, groups, outputs)


def test_sge_alice_may_use_chem_by_default_and_phys_and_the_course_reservation():
    found = sge_allocations("alice")
    assert (found.accounts, found.default_account, found.qos) == (("chem", "phys"), "chem", ())
    (course,) = found.reservations
    assert (course.name, course.reservation_id, course.users, course.queue, course.nodes, course.active) == (
        "course", "2", ("alice", "carol"), "long.q", ("vm",), False)
    assert (course.start, course.end) == (datetime(2026, 12, 26, 20, 0), datetime(2026, 12, 26, 22, 0))
    assert course.owner == "root" and found.reservation_admins == ("root", "sgeadmin")


def test_sge_bob_phys_only_carol_course_and_a_user_without_object_nothing():
    assert (sge_allocations("bob").accounts, sge_allocations("bob").reservations) == (("phys",), ())
    carol = sge_allocations("carol")
    assert (carol.accounts, carol.default_account, len(carol.reservations)) == (("course",), "course", 1)
    stranger = sge_allocations("stranger")  # not in -suserl: no qconf -suser for it
    assert stranger == Allocations(accounts=(), default_account=None, reservation_admins=("root", "sgeadmin"))


def test_sge_access_by_group_and_exclusion_list():
    def answer(argv: list[str]) -> str:
        if argv == ["qconf", "-sprj", "phys"]:
            return data("sge-qconf-sprj-phys.txt").replace("xacl NONE", "xacl chem_users")
        if argv == ["qconf", "-su", "chem_users,course_users,phys_users"]:
            return data("sge-qconf-su.txt").replace("entries carol,dora,emil", "entries @students")
        return sge_answer(argv)

    assert sge_allocations("alice", answer=answer).accounts == ("chem",)  # phys excludes chem's users
    assert sge_allocations("erin", ["staff", "students"], answer=answer).accounts == ("course",)


def test_sge_without_projects_or_reservations():
    empty = {("qconf", "-sprjl"): "", ("qrstat", "-xml", "-u", "*"): data("sge-qrstat.xml").split("<ar_summary>")[0]
             + "</qrstat>\n"}

    def answer(argv: list[str]) -> str:
        return empty[tuple(argv)] if tuple(argv) in empty else sge_answer(argv)

    assert sge_allocations("alice", answer=answer) == Allocations(accounts=(), default_account=None,
                                                                  reservation_admins=("root", "sgeadmin"))


def test_sge_cluster_allocations_two_rounds():
    outputs = run_rounds(sge.cluster_allocations_argvs, sge_answer)
    assert len(outputs) == 5
    everything = sge.parse_cluster_allocations(outputs)
    assert everything.reservation_admins == ("root", "sgeadmin")
    assert everything.accounts == ("chem", "course", "phys") and everything.qos == ()
    (course,) = everything.reservations
    assert course.name == "course" and course.admits("carol") and not course.admits("bob")


def test_sge_lists_of_nothing_are_empty_answers_other_failures_are_not():
    assert sge.empty_answer(["qconf", "-sprjl"], 1, "no project list defined\n")
    assert sge.empty_answer(["qconf", "-suserl"], 1, "no user list defined\n")
    assert sge.empty_answer(["qconf", "-so"], 1, "no operator defined\n")
    assert not sge.empty_answer(["qconf", "-sprjl"], 1, "error: commlib error: got select error (Connection refused)")
    assert not sge.empty_answer(["qconf", "-sprj", "chem"], 1, "no project list defined")
    assert not sge.empty_answer(["qconf", "-sprjl"], None, "no project list defined")
    assert not slurm.empty_answer(["sacctmgr", "show", "qos"], 1, "")


# ------------------------------------------------------------------------------------- Reservation

@pytest.mark.parametrize("reservation, user, groups, accounts, admitted", [
    (Reservation("r", "r", None, None, True, users=("alice",)), "alice", (), (), True),
    (Reservation("r", "r", None, None, True, users=("alice",)), "bob", (), (), False),
    (Reservation("r", "r", None, None, True, users=("-bob",)), "alice", (), (), True),
    (Reservation("r", "r", None, None, True, users=("-bob",)), "bob", (), (), False),
    (Reservation("r", "r", None, None, True, groups=("students",)), "erin", ("students",), (), True),
    (Reservation("r", "r", None, None, True, accounts=("chem",)), "bob", (), ("phys",), False),
    (Reservation("r", "r", None, None, True, accounts=("chem",)), "alice", (), ("chem", "phys"), True),
    # Slurm: with users and accounts both, a job must match both.
    (Reservation("r", "r", None, None, True, users=("bob",), accounts=("chem",)), "bob", (), ("phys",), False),
    (Reservation("r", "r", None, None, True, users=("alice",), accounts=("chem",)), "alice", (), ("chem",), True),
])
def test_reservation_admits(reservation, user, groups, accounts, admitted):
    assert reservation.admits(user, groups, accounts) is admitted
