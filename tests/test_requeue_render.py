"""Server jobs are not requeued unless the profile says so (a requeued job restarts elsewhere
under the same id, which the hub would take for the server it started)."""

from __future__ import annotations

import pytest
from helpers.render_cases import SITE_CONFIGS, USER

from hpchub.core.config import parse_site_config
from hpchub.core.jobs import server_job
from hpchub.core.options import resolve_request

REQUEUE_PROFILE = """
  - slug: requeued
    name: may be requeued
    cluster: {cluster}
    queue: {queue}
    resources: {{cores: 1, memory: 100M, walltime: "00:10:00"}}
    requeue: true
"""


def _render(config: str, profile: str, extra: str = "") -> str:
    site = parse_site_config((SITE_CONFIGS / config).read_text() + extra, source=SITE_CONFIGS / config)
    request = resolve_request(site, site.profile(profile), {})
    return server_job(site, request, USER).script


@pytest.mark.parametrize("config, cluster, queue, off, on", [
    ("local-slurm.yaml", "slurm", "debug", "#SBATCH --no-requeue", "#SBATCH --requeue"),
    ("local-sge.yaml", "sge", "short.q", "#$ -r n", "#$ -r y"),
])
def test_requeue_is_off_by_default_and_on_when_the_profile_says(config, cluster, queue, off, on):
    default = _render(config, "small").splitlines()
    assert off in default and on not in default
    requeued = _render(config, "requeued", REQUEUE_PROFILE.format(cluster=cluster, queue=queue)).splitlines()
    assert on in requeued and off not in requeued
