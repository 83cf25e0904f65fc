"""Grid Engine backend: argv builders and parsers, against qstat -xml captured from the real local SGE."""

import dataclasses
import logging
from datetime import datetime

import pytest
from helpers.support import REPO

from hpchub.schedulers import JobState, JobStatus, ParseError, queue_position, sge

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


def test_output_that_is_no_xml_at_all_is_a_parse_error():
    with pytest.raises(ParseError, match="no valid XML"):
        sge.parse_status("error: commlib error: got select error (Connection refused)")


def _listing(*jobs):
    return ("<?xml version='1.0'?><job_info><queue_info></queue_info><job_info>" + "".join(jobs)
            + "</job_info></job_info>")


def test_unknown_state_letters_mark_that_job_unknown_and_active(caplog):
    with caplog.at_level(logging.WARNING, logger="hpchub.schedulers"):
        jobs = sge.parse_status(_listing(_job(7, "z"), _job(8, "qw")))
    assert sge.state_from_letters("z") is JobState.UNKNOWN
    assert jobs["7"].state is JobState.UNKNOWN and jobs["7"].state.is_active and jobs["7"].scheduler_state == "z"
    assert jobs["8"].state is JobState.PENDING
    assert jobs.problems == ("job 7: unknown Grid Engine job state 'z'",) and "'z'" in caplog.text


def test_an_entry_without_a_job_number_is_skipped_and_reported():
    jobs = sge.parse_status(_listing(_job("", "qw"), _job(8, "qw")))
    assert set(jobs) == {"8"} and len(jobs.problems) == 1 and "without a job number" in jobs.problems[0]


def test_characters_xml_forbids_cost_nothing():
    """SGE 8.1.9 refuses such names at qsub (see test_sge_real); another Grid Engine may list
    them raw, which no XML parser accepts. They are replaced before parsing."""
    weird = _job(7, "qw").replace("hpchub-alice-x", "x\x1f\x00\x0b999\ud800")
    jobs = sge.parse_status(_listing(weird, _job(8, "r", "short.q@vm", "MASTER", owner="bob")))
    assert jobs["7"].state is JobState.PENDING and jobs["7"].name == "x\ufffd\ufffd\ufffd999\ufffd"
    assert jobs["8"].state is JobState.RUNNING and jobs["8"].host == "vm" and not jobs.problems


def test_a_name_a_grid_engine_did_not_escape_costs_that_name_only():
    """A raw "&" or "<" makes the answer invalid XML: read as a document, every job would be
    unknown. Each entry is read on its own: only the name is lost or read as printed."""
    raw_lt = _job(7, "qw").replace("hpchub-alice-x", "a<b")
    raw_amp = _job(8, "r", "short.q@vm", "MASTER", owner="bob").replace("hpchub-bob-x", "x & y&z")
    jobs = sge.parse_status(_listing(raw_lt, raw_amp, _job(9, "hqw")))
    assert jobs["7"].state is JobState.PENDING and jobs["7"].user == "alice" and jobs["7"].priority == 0.5
    assert jobs["8"].name == "x & y&z" and jobs["8"].host == "vm" and jobs["9"].state is JobState.HELD
    assert not jobs.problems


def test_entities_read_as_an_xml_parser_reads_them():
    jobs = sge.parse_status(_listing(_job(7, "qw").replace("hpchub-alice-x", "a&amp;b&#60;c&#x3e;d&quot;&apos;")))
    assert jobs["7"].name == "a&b<c>d\"'"


@pytest.mark.parametrize("cut", ["</job_list>", "<state>", "</queue_info>"])
def test_a_cut_answer_is_a_parse_error_not_jobs_gone(cut):
    """qstat killed mid-answer: the jobs after the cut are not gone, the answer is unreadable."""
    captured = (DATA / "qstat-jobs.xml").read_text()
    with pytest.raises(ParseError):
        sge.parse_status(captured[:captured.index(cut) + len(cut)])


def test_each_job_reads_its_own_entries_only():
    """Job 8 has no owner and no queue; job 7's SLAVE entries come after job 8's entry."""
    no_owner = _job(8, "r", "", "").replace("<JB_owner>alice</JB_owner>", "")
    xml = ("<job_info><queue_info>" + _job(7, "r", "mpi.q@n1", "MASTER") + no_owner
           + _job(7, "r", "mpi.q@n2", "SLAVE") + _job(7, "r", "mpi.q@n1", "SLAVE", owner="bob")
           + "</queue_info><job_info></job_info></job_info>")
    jobs = sge.parse_status(xml)
    assert jobs["8"].user == "" and jobs["8"].queue == "" and jobs["8"].nodes == () and jobs["8"].host is None
    assert jobs["7"].user == "alice" and jobs["7"].nodes == ("n1", "n2") and jobs["7"].queue == "mpi.q"


def test_a_parsed_job_reads_like_any_job_status_and_stays_frozen():
    jobs = sge.parse_status((DATA / "qstat-jobs.xml").read_text())
    job = jobs["44"]
    assert isinstance(job, JobStatus)
    assert {field.name: getattr(job, field.name) for field in dataclasses.fields(JobStatus)} == {
        "job_id": "44", "state": JobState.ERROR, "scheduler_state": "Eqw", "user": "alice", "name": "errjob",
        "queue": "", "nodes": (), "reason": "job is in an error state (Eqw); `qstat -j ID` tells why",
        "estimated_start": None, "submitted": datetime(2026, 11, 25, 20, 32, 9), "started": None, "priority": 0.25}
    assert jobs["42"].started == datetime(2026, 11, 25, 20, 32, 9) and jobs["42"].submitted is None
    assert job == sge.parse_status((DATA / "qstat-jobs.xml").read_text())["44"]
    for field in ("state", "name", "nodes", "job_id"):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(job, field, None)


def test_names_with_xml_characters_read_exactly():
    """Captured: alice's job 21 named 'a<b>&c]]>' and bob's 26 named 'b<x'. SGE writes '<' as
    '%lt;' (its bug); everything else it escapes properly."""
    jobs = sge.parse_status((DATA / "qstat-odd-names.xml").read_text())
    assert jobs["21"].name == "a<b>&c]]>" and jobs["21"].state is JobState.PENDING
    assert jobs["26"].name == "b<x" and jobs["23"].state is JobState.RUNNING and not jobs.problems


def test_job_names_of_one_user():
    assert sge.job_names_argv("bob") == ["qstat", "-xml", "-u", "bob"]
    stdout = (DATA / "qstat-names-bob.xml").read_text()
    assert sge.parse_job_names(stdout, "bob") == {"23": "capture", "26": "b<x", "22": "capture"}
    assert sge.parse_job_names((DATA / "qstat-odd-names.xml").read_text(), "alice") == {
        "21": "a<b>&c]]>", "24": "capture", "25": "capture"}


def test_backend_members_without_an_sge_command():
    assert sge.node_address_argv("vm") is None and sge.parse_node_address("") is None
    assert sge.private_data_argv() is None and sge.parse_private_data("") is False


@pytest.mark.parametrize("memory_mb, cores, per_slot, expected", [(4096, 4, True, 1024), (1000, 3, True, 334),
                                                                   (4096, 4, False, 4096), (512, 1, True, 512)])
def test_memory_per_slot_is_divided_by_the_cores_rounding_up(memory_mb, cores, per_slot, expected):
    assert sge.memory_per_request_mb(memory_mb, cores, per_slot) == expected


def test_empty_cluster():
    assert sge.parse_status("<?xml version='1.0'?><job_info><queue_info></queue_info><job_info></job_info></job_info>") == {}


@pytest.mark.parametrize("stdout, job_id", [("42\n", "42"), ("43.1-4:1\n", "43")])
def test_parse_submit(stdout, job_id):
    assert sge.parse_submit(stdout) == job_id


def test_parse_submit_refusal():
    with pytest.raises(ParseError, match="qsub printed no job id"):
        sge.parse_submit("Unable to run job: job rejected: the job tries to run as root.\n")


@pytest.mark.parametrize("stderr, unknown", [
    ("error: failed receiving gdi request response for mid=1 (got syncron message receive timeout error).\n", True),
    ("Unable to run job: job rejected: the job tries to run as root.\nExiting.\n", False),
    ("error: commlib error: got select error (Connection refused)\nUnable to run job: unable to send message to "
     "qmaster using port 6444 on host \"vm\": got send error.\nExiting.\n", False),
])
def test_a_submit_that_lost_qmasters_answer_has_an_unknown_outcome(stderr, unknown):
    assert sge.submit_outcome_unknown(stderr) is unknown


def test_queue_info_from_captured_qstat_f():
    queues = {q.name: q for q in sge.parse_queue_info([(DATA / "qstat-f-r.xml").read_text()])}
    assert set(queues) == {"short.q", "long.q"}
    assert queues["short.q"].cores_total == 8 and queues["short.q"].cores_free == 6
    assert queues["short.q"].jobs_running == 1 and queues["short.q"].jobs_pending == 3
    assert queues["long.q"].jobs_running == 1 and queues["long.q"].available


def test_cancel_argv():
    assert sge.cancel_argv(["1", "2"]) == ["qdel", "1", "2"]


def test_queue_info_lists_the_priorities_of_jobs_that_can_start():
    """Captured: pending 25 (alice) and 26 (bob) at 0.75, 21 and 22 at 0, 24 held; 23 runs in long.q."""
    queues = {q.name: q for q in sge.parse_queue_info([(DATA / "qstat-f-r-pending.xml").read_text()])}
    assert queues["short.q"].pending_priorities == (0.75, 0.75, 0.0, 0.0)
    assert queues["short.q"].jobs_pending == 5 and queues["long.q"].pending_priorities == ()
    job = JobStatus(job_id="22", state=JobState.PENDING, scheduler_state="qw", priority=0.0)
    assert queue_position(queues["short.q"], job) == 3


def test_jobs_without_a_queue_are_ahead_in_every_queue():
    pending = ("<job_list state='pending'><JB_job_number>9</JB_job_number><JAT_prio>0.9</JAT_prio>"
               "<state>qw</state></job_list>")
    captured = (DATA / "qstat-f-r-pending.xml").read_text()
    text = captured.replace("<job_info>\n    <job_list", f"<job_info>{pending}<job_list", 1)
    queues = {q.name: q for q in sge.parse_queue_info([text])}
    assert queues["short.q"].pending_priorities[0] == 0.9 and queues["long.q"].pending_priorities == (0.9,)


def test_explain_gives_the_error_reason():
    stdout = ("job_number:                 44\nowner:                      alice\n"
              "error reason          1:      11/25/2026 21:31:07 [1001:14636]: error: can't open output file "
              '"/proc/nope": No such file or directory\nscheduling info:            Job is in error state\n')
    assert sge.explain_argv("44") == ["qstat", "-j", "44"]
    assert sge.parse_explain(stdout).endswith('can\'t open output file "/proc/nope": No such file or directory')
    assert sge.parse_explain("job_number: 45\n") is None


@pytest.mark.parametrize("script, expected", [
    ("#!/bin/bash\n#$ -q short.q\nhostname\n", "#!/bin/bash\n#$ -clear\n#$ -q short.q\nhostname\n"),
    ("#$ -q short.q\n", "#$ -clear\n#$ -q short.q\n"),
])
def test_the_submitted_script_clears_the_default_request_files_first(script, expected):
    """-clear as the first directive: no sge_request file adds options to a hub job (the real
    submission with a user's own ~/.sge_request is in test_user_settings_real.py)."""
    assert sge.submit_script(script) == expected
    assert sge.submit_environment({"PATH": "/usr/bin", "SGE_ROOT": "/var/lib/gridengine"}) == {
        "PATH": "/usr/bin", "SGE_ROOT": "/var/lib/gridengine"}
