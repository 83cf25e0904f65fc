"""Grid Engine backend: argv builders and parsers, against qstat -xml captured from the real local SGE."""

import pytest
from support import REPO

from hpchub.schedulers import JobState, ParseError, sge

DATA = REPO / "tests" / "data"


def test_status_is_one_call_for_everybody_or_given_users():
    assert sge.status_argv() == ["qstat", "-xml", "-g", "t", "-u", "*"]
    assert sge.status_argv(["bob", "alice"])[-1] == "alice,bob"


def test_parse_captured_qstat_xml():
    jobs = sge.parse_status((DATA / "qstat-jobs.xml").read_text())
    assert {job_id: (job.state, job.scheduler_state) for job_id, job in jobs.items()} == {
        "42": (JobState.RUNNING, "r"),
        "43": (JobState.HELD, "hqw"),
        "44": (JobState.ERROR, "Eqw"),
        "45": (JobState.PENDING, "qw"),
        "46": (JobState.RUNNING, "r"),
    }
    # The 2-slot PE job is listed once per slot (-g t); it is still one job on one host.
    assert jobs["42"].nodes == ("vm",) and jobs["42"].queue == "short.q" and jobs["42"].user == "alice"
    assert jobs["46"].user == "bob" and jobs["46"].queue == "long.q"
    assert jobs["45"].host is None and jobs["45"].submitted is not None
    assert "error state" in jobs["44"].reason


def _job(number, state, queue="", master="", owner="alice"):
    return f"""<job_list state="x"><JB_job_number>{number}</JB_job_number><JAT_prio>0.5</JAT_prio>
    <JB_name>hpchub-{owner}-x</JB_name><JB_owner>{owner}</JB_owner><state>{state}</state>
    <queue_name>{queue}</queue_name><master>{master}</master><slots>1</slots></job_list>"""


def test_multi_host_job_lists_every_host_master_first():
    xml = "<job_info><queue_info>" + _job(7, "r", "mpi.q@n2", "SLAVE") + _job(7, "r", "mpi.q@n1", "MASTER") + \
        _job(7, "r", "mpi.q@n3", "SLAVE") + "</queue_info><job_info></job_info></job_info>"
    (job,) = sge.parse_status(xml).values()
    assert job.nodes == ("n1", "n2", "n3") and job.host == "n1"


@pytest.mark.parametrize(
    "letters, state",
    [("qw", JobState.PENDING), ("hqw", JobState.HELD), ("hRwq", JobState.HELD), ("r", JobState.RUNNING),
     ("t", JobState.RUNNING), ("Rr", JobState.RUNNING), ("s", JobState.SUSPENDED), ("S", JobState.SUSPENDED),
     ("T", JobState.SUSPENDED), ("dr", JobState.COMPLETING), ("dt", JobState.COMPLETING), ("Eqw", JobState.ERROR),
     ("Ehqw", JobState.ERROR)],
)
def test_state_letters(letters, state):
    assert sge.state_from_letters(letters) is state


def test_unknown_letters_and_bad_xml_are_parse_errors():
    with pytest.raises(ParseError):
        sge.state_from_letters("z")
    with pytest.raises(ParseError, match="no valid XML"):
        sge.parse_status("error: commlib error: got select error (Connection refused)")


def test_empty_cluster():
    assert sge.parse_status("<?xml version='1.0'?><job_info><queue_info></queue_info><job_info></job_info></job_info>") == {}


@pytest.mark.parametrize("stdout, job_id", [("42\n", "42"), ("43.1-4:1\n", "43")])
def test_parse_submit(stdout, job_id):
    assert sge.parse_submit(stdout) == job_id


def test_parse_submit_refusal():
    with pytest.raises(ParseError, match="qsub printed no job id"):
        sge.parse_submit("Unable to run job: job rejected: the job tries to run as root.\n")


def test_queue_info_from_captured_qstat_f():
    queues = {q.name: q for q in sge.parse_queue_info([(DATA / "qstat-f-r.xml").read_text()])}
    assert set(queues) == {"short.q", "long.q"}
    assert queues["short.q"].cores_total == 8 and queues["short.q"].cores_free == 6
    assert queues["short.q"].jobs_running == 1 and queues["short.q"].jobs_pending == 3
    assert queues["long.q"].jobs_running == 1 and queues["long.q"].available


def test_cancel_argv():
    assert sge.cancel_argv(["1", "2"]) == ["qdel", "1", "2"]


def test_explain_gives_the_error_reason():
    stdout = ("job_number:                 44\nowner:                      alice\n"
              "error reason          1:      11/25/2026 21:31:07 [1001:14636]: error: can't open output file "
              '"/proc/nope": No such file or directory\nscheduling info:            Job is in error state\n')
    assert sge.explain_argv("44") == ["qstat", "-j", "44"]
    assert sge.parse_explain(stdout).endswith('can\'t open output file "/proc/nope": No such file or directory')
    assert sge.parse_explain("job_number: 45\n") is None
