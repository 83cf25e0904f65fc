"""A job's end as the job side knows it: the environment variables the job script and the spawner
set, and the one parser for an end in epoch seconds. Standard library only: the server extension
serves it, the hub (hpchub/hub/walltime.py) reads the same values back from the job's report.
"""

from __future__ import annotations

ENV_JOB_END = "HPCHUB_JOB_END"  # set by the job script: its start plus its walltime, epoch seconds
ENV_WARNING = "HPCHUB_WALLTIME_WARNING"  # set by the spawner (env file): seconds before the end to warn and save
DEFAULT_WARNING = 600


def parse_end(value: object) -> int | None:
    """A job end from the job (env or report): positive whole epoch seconds, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = value.strip()
        if not value.isdigit():
            return None
        value = int(value)
    if isinstance(value, int) and value > 0:
        return value
    return None
