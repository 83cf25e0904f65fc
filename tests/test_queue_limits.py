"""`hpchub check --live`: a queue's limits in the site config against the scheduler's own
(`scontrol show partition`, `qconf -sq`), each finding naming FILE:LINE of the key. The parsers
read outputs captured from the local clusters (tests/data); the real tests give the running
schedulers a site config that claims more than they allow."""

from __future__ import annotations

import pytest
from helpers.support import REPO, SITE_CONFIGS, user_readable
from helpers.support import run_hpchub as hpchub

from hpchub.admin.checks import Finding, queue_limit_findings
from hpchub.core.config import parse_site_config
from hpchub.schedulers import ParseError, SchedulerQueueLimits, sge, slurm

DATA = REPO / "tests" / "data"
SCONTROL_PARTITIONS = (DATA / "scontrol-show-partition.txt").read_text()
QCONF_SHORT_Q = (DATA / "qconf-sq-short.q.txt").read_text()


def test_slurm_partition_limits_from_captured_scontrol_output():
    debug = slurm.parse_queue_limits(SCONTROL_PARTITIONS)  # the first partition: debug
    assert (debug.walltime_seconds, debug.cores_per_node, debug.memory_mb_per_node, debug.nodes, debug.nodes_total) \
        == (4 * 3600, None, None, None, 1)
    assert debug.texts["walltime"] == "MaxTime=04:00:00"
    multi = slurm.parse_queue_limits(SCONTROL_PARTITIONS.splitlines()[1])
    assert (multi.walltime_seconds, multi.nodes_total) == (86400, 3)
    limited = SCONTROL_PARTITIONS.replace("MaxNodes=UNLIMITED", "MaxNodes=2", 1).replace(
        "MaxCPUsPerNode=UNLIMITED", "MaxCPUsPerNode=4", 1).replace("MaxMemPerNode=UNLIMITED", "MaxMemPerNode=8000", 1)
    limits = slurm.parse_queue_limits(limited)
    assert (limits.nodes, limits.cores_per_node, limits.memory_mb_per_node) == (2, 4, 8000)
    with pytest.raises(ParseError):
        slurm.parse_queue_limits("Partition nosuch not found\n")


@pytest.mark.parametrize("text, seconds", [("UNLIMITED", None), ("04:00:00", 14400), ("1-00:00:00", 86400),
                                           ("30", 1800), ("30:15", 1815), ("2-12", 216000), ("1-02:03", 93780)])
def test_slurm_times(text, seconds):
    assert slurm.parse_slurm_time(text) == seconds


def test_grid_engine_queue_limits_from_captured_qconf_output():
    limits = sge.parse_queue_limits(QCONF_SHORT_Q)
    assert (limits.walltime_seconds, limits.cores_per_node, limits.memory_mb_per_slot, limits.nodes) \
        == (4 * 3600, 8, None, 1)
    # Per-host values (the most any host allows counts), a value continued on the next line, and units
    # in Grid Engine's sense: g is 10^9 bytes, G is 2^30.
    edited = QCONF_SHORT_Q.replace("slots                 8", "slots                 1,[vm=4], \\\n"
                                                              "                      [node2=16]")
    edited = edited.replace("h_vmem                INFINITY", "h_vmem                4G,[vm=8g]")
    edited = edited.replace("h_rt                  04:00:00", "h_rt                  3600,[vm=2:00:00]")
    limits = sge.parse_queue_limits(edited)
    assert (limits.cores_per_node, limits.memory_mb_per_slot, limits.walltime_seconds) == (16, 7629, 7200)
    assert limits.texts["cores"] == "slots 1,[vm=4], [node2=16]"
    with pytest.raises(ParseError):
        sge.parse_queue_limits('No cluster queue or queue instance matches the phrase "nosuch.q"\n')


def _line_of(text: str, needle: str) -> int:
    (line,) = [number for number, line in enumerate(text.splitlines(), 1) if needle in line]
    return line


LIMITS_SITE = """\
site: limits test
clusters:
  slurm:
    scheduler: slurm
    submit: {via: sudo}
    queues:
      debug:
        max_walltime: "08:00:00"
        max_cores: 8
        max_memory: 16000M
        max_nodes: 2
profiles:
  - slug: p
    name: p
    cluster: slurm
    queue: debug
    resources: {walltime: "01:00:00"}
"""


def test_every_limit_above_the_schedulers_is_an_error_at_its_key():
    site = parse_site_config(LIMITS_SITE)
    limits = SchedulerQueueLimits(walltime_seconds=4 * 3600, cores_per_node=4, memory_mb_per_node=8000, nodes=1,
                                  texts={"walltime": "MaxTime=04:00:00", "cores": "MaxCPUsPerNode=4",
                                         "memory": "MaxMemPerNode=8000", "nodes": "MaxNodes=1"})
    findings = queue_limit_findings(site, "slurm", "debug", limits)
    assert [(f.level, f.message.split(":")[0], f.line) for f in findings] == [
        ("error", "clusters.slurm.queues.debug.max_walltime", 8),
        ("error", "clusters.slurm.queues.debug.max_cores", 9),
        ("error", "clusters.slurm.queues.debug.max_memory", 10),
        ("error", "clusters.slurm.queues.debug.max_nodes", 11),
    ]
    assert findings[0].message.startswith(
        "clusters.slurm.queues.debug.max_walltime: 08:00:00 is above the scheduler's limit for queue debug "
        "(MaxTime=04:00:00)")
    assert "MaxNodes=1" in findings[3].message
    # A partition with fewer nodes than max_nodes, and no MaxNodes: the nodes it has are the limit.
    (finding,) = queue_limit_findings(site, "slurm", "debug", SchedulerQueueLimits(nodes_total=1, texts={
        "nodes_total": "TotalNodes=1"}))
    assert "(TotalNodes=1), the nodes it has" in finding.message and finding.line == 11
    # Within every limit: nothing to say.
    assert queue_limit_findings(site, "slurm", "debug", SchedulerQueueLimits(walltime_seconds=8 * 3600)) == []


def test_grid_engine_memory_per_slot_counts_a_one_core_job():
    site = parse_site_config((SITE_CONFIGS / "local-sge.yaml").read_text())  # short.q: max_memory 16G
    per_slot = SchedulerQueueLimits(memory_mb_per_slot=8192, texts={"memory": "h_vmem 8G"})
    (finding,) = queue_limit_findings(site, "sge", "short.q", per_slot)
    assert finding == Finding("error", finding.message, 21)  # the short.q line
    assert "16G is above the scheduler's limit for queue short.q (h_vmem 8G); a one-core job with it asks " \
           "16384M per slot" in finding.message
    assert queue_limit_findings(site, "sge", "short.q", SchedulerQueueLimits(memory_mb_per_slot=16384)) == []


# --- the real schedulers --------------------------------------------------------------------

# (config file, the queue line, the same line claiming more than the scheduler allows, the key, the
# scheduler's words)
ABOVE = {
    "slurm": ("local-slurm.yaml", 'debug: {max_walltime: "04:00:00"', 'debug: {max_walltime: "08:00:00"',
              "clusters.slurm.queues.debug.max_walltime: 08:00:00 is above the scheduler's limit for queue debug "
              "(MaxTime=04:00:00)"),
    "sge": ("local-sge.yaml", 'short.q: {max_walltime: "04:00:00", max_cores: 8,',
            'short.q: {max_walltime: "04:00:00", max_cores: 12,',
            "clusters.sge.queues.short.q.max_cores: 12 is above the scheduler's limit for queue short.q (slots 8)"),
}


def test_check_live_names_file_line_and_key_of_a_limit_above_the_schedulers(scheduler):
    name, line, claimed, expected = ABOVE[scheduler]
    text = (SITE_CONFIGS / name).read_text()
    assert line in text
    path = user_readable(f"above-{scheduler}.yaml", text.replace(line, claimed))
    result = hpchub("check", "--live", "--no-probe", str(path))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{path}:{_line_of(text, line)}: {expected}" in result.stderr, result.stderr
    # The config as it is stays within the scheduler's limits.
    result = hpchub("check", "--live", "--no-probe", str(SITE_CONFIGS / name))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is above the scheduler's limit" not in result.stderr
