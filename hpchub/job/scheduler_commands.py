"""The scheduler commands the job side runs itself, one small table per scheduler: the submit
command of ``hpchub-job submit`` and the start estimate of ``hpchub-job estimate`` (their argv, the
environment they run with, the script as they read it) and a node's address as the scheduler has it
(the server extension binds to it).

Standard library only, like all of hpchub/job/. The hub's scheduler backends
(hpchub/schedulers/slurm.py, sge.py) take these same functions as their members of the contract
(base.SchedulerBackend), so what the hub says about submitting and what the job side does cannot
differ; the hub imports this module, never the reverse.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta


class Slurm:
    name = "slurm"

    @staticmethod
    def submit_argv() -> list[str]:
        return ["sbatch", "--parsable"]

    # sbatch reads SBATCH_* (and SLURM_CLUSTERS, SLURM_HINT, ...) as options that override the
    # script's #SBATCH lines: a user's shell that exports them for their own jobs must not move a hub
    # job to another partition or give it another time limit. SLURM_CONF only says where the cluster is.
    @staticmethod
    def estimate_argv() -> list[str]:
        """When the script on stdin would start, without submitting it (on stderr:
        "sbatch: Job N to start at 2026-12-07T14:20:00 using ...")."""
        return ["sbatch", "--test-only"]

    # "sbatch: Job 1234 to start at 2026-12-07T14:20:00 using 2 processors on nodes vm in partition
    # debug"; a start this close to now is "starts now" (rounded to the second, and asking takes time).
    TEST_ONLY_RE = re.compile(r"^sbatch: Job \S+ to start at (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d) using (\d+) "
                              r"processors? on nodes (\S+) in partition (\S+)\s*$", re.MULTILINE)
    STARTS_NOW_SLACK = timedelta(seconds=60)

    @staticmethod
    def test_only_answer(output: str) -> tuple[re.Match[str], datetime] | None:
        """sbatch --test-only's line in ``output`` and the start it names; None without one."""
        match = Slurm.TEST_ONLY_RE.search(output)
        if match is None:
            return None
        try:
            return match, datetime.fromisoformat(match.group(1))
        except ValueError:
            return None

    @staticmethod
    def estimate_context_argvs(output: str, now: datetime) -> list[list[str]]:
        """What else to ask (read-only, as the user) when ``sbatch --test-only`` says "later": its
        start adds a rough delay for every waiting job of higher priority (CPUs x time limit over the
        partition's CPUs) and ignores backfill, so a short job that fits in idle CPUs before the
        backfill scheduler's planned starts is told "in an hour" and then starts at once. The
        partition's waiting jobs (priority, size, time limit, planned start and nodes, submit time) and its CPUs
        let the hub's backend see such a job (hpchub.schedulers.slurm.parse_estimate)."""
        answer = Slurm.test_only_answer(output)
        if answer is None or answer[1] <= now + Slurm.STARTS_NOW_SLACK:
            return []
        partition = answer[0].group(4)
        return [["squeue", "--noheader", f"--partition={partition}", "--states=PENDING", "--format=%Q|%C|%l|%S|%Y|%V"],
                ["sinfo", "--noheader", f"--partition={partition}", "--format=%C"]]

    @staticmethod
    def submit_environment(environ: Mapping[str, str]) -> dict[str, str]:
        return {name: value for name, value in environ.items()
                if not name.startswith(("SBATCH_", "SLURM_")) or name == "SLURM_CONF"}

    @staticmethod
    def submit_script(script: str) -> str:
        return script  # sbatch reads no per-user default files

    @staticmethod
    def node_address_argv(node: str) -> list[str] | None:
        """The node's address as Slurm knows it (NodeAddr), for nodes whose names DNS does not know."""
        return ["scontrol", "show", "node", node, "--oneliner"]

    @staticmethod
    def parse_node_address(stdout: str) -> str | None:
        match = re.search(r"\bNodeAddr=(\S+)", stdout)
        return match.group(1) if match else None


# qsub first applies the options of $SGE_ROOT/$SGE_CELL/common/sge_request, ~/.sge_request (~ from
# the password database, not $HOME) and ./.sge_request, and the script's directives override only
# the options they repeat: a user's -pe, -l h_vmem, -a, -hold_jid, -p or client -jsv would stay in a
# hub job. -clear as the script's first directive drops all of them (the cluster's file too: a site
# puts what every hub job needs in the profiles' directives), whatever the file's -C says.
SGE_CLEAR_DEFAULTS = "#$ -clear"


class GridEngine:
    name = "sge"

    @staticmethod
    def submit_argv() -> list[str]:
        return ["qsub", "-terse"]

    @staticmethod
    def estimate_argv() -> list[str]:
        """Whether the script on stdin could be scheduled now, with the cluster's current load, without
        submitting it ("verification: found suitable queue(s)" / "verification: no suitable queues")."""
        return ["qsub", "-w", "p"]

    @staticmethod
    def estimate_context_argvs(output: str, now: datetime) -> list[list[str]]:
        """Nothing: ``qsub -w p`` already answers for the cluster's load now."""
        return []

    @staticmethod
    def submit_environment(environ: Mapping[str, str]) -> dict[str, str]:
        return dict(environ)  # qsub takes no job options from the environment

    @staticmethod
    def submit_script(script: str) -> str:
        first, _, rest = script.partition("\n")
        if first.startswith("#!"):  # the interpreter line stays first
            return f"{first}\n{SGE_CLEAR_DEFAULTS}\n{rest}"
        return f"{SGE_CLEAR_DEFAULTS}\n{script}"

    @staticmethod
    def node_address_argv(node: str) -> list[str] | None:
        """None: Grid Engine itself resolves host names (DNS or its host_aliases), so do we."""
        return None

    @staticmethod
    def parse_node_address(stdout: str) -> str | None:
        return None


JobSideScheduler = type[Slurm] | type[GridEngine]
SCHEDULERS: dict[str, JobSideScheduler] = {"slurm": Slurm, "sge": GridEngine}


def for_scheduler(scheduler: str) -> JobSideScheduler:
    """The job side's commands for ``scheduler`` (ValueError naming the known ones)."""
    try:
        return SCHEDULERS[scheduler]
    except KeyError:
        raise ValueError(f"no scheduler backend {scheduler!r} (have: {', '.join(SCHEDULERS)})") from None
