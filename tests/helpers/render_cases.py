"""The example profiles rendered for a fixed user: shared by the golden tests and regenerate.py."""

from __future__ import annotations

from dataclasses import dataclass

from hpchub.core.config import load_site_config
from hpchub.core.jobs import server_job
from hpchub.core.options import needs_allocations, resolve_request
from hpchub.core.render import UserAccount
from hpchub.schedulers.base import Allocations

from .support import REPO, SITE_CONFIGS

GOLDEN_DIR = REPO / "tests" / "golden"
USER = UserAccount("alice", "/home/alice")


@dataclass(frozen=True)
class Case:
    config: str
    profile: str
    options: tuple[tuple[str, str], ...] = ()

    @property
    def filename(self) -> str:
        suffix = "".join(f"--{k}={v}" for k, v in self.options)
        return f"{self.config.removesuffix('.yaml')}--{self.profile}{suffix}.sh"


def golden_cases() -> list[Case]:
    cases = []
    for path in sorted(SITE_CONFIGS.glob("*.yaml")):
        site = load_site_config(path)
        cases += [Case(path.name, profile.slug) for profile in site.profiles]
    # A few user choices, so that adjusted values are pinned down too.
    cases += [
        Case("example-slurm-production.yaml", "gpu", (("gpus", "2"), ("account", "ml-lab"), ("walltime", "1-00:00:00"))),
        Case("local-sge.yaml", "small", (("cores", "4"), ("memory", "4G"), ("queue", "long.q"))),
        Case("example-slurm-production.yaml", "cpu-small", (("user_env", ".venv"),)),
    ]
    return cases


# What the scheduler gives alice where a profile asks it (``{from_scheduler: true}``).
ALICE_ALLOCATIONS = Allocations(accounts=("chemistry", "physics"), default_account="physics", qos=("long", "normal"),
                                qos_by_account={"chemistry": ("normal",), "physics": ("long", "normal")},
                                default_qos="normal")


def render_case(case: Case) -> str:
    site = load_site_config(SITE_CONFIGS / case.config)
    profile = site.profile(case.profile)
    allocations = ALICE_ALLOCATIONS if needs_allocations(site, profile) else None
    request = resolve_request(site, profile, dict(case.options), allocations)
    return portable(server_job(site, request, USER).script)


def portable(script: str) -> str:
    """The script with this checkout's path written as $CHECKOUT (server jobs name their site
    config's absolute path), so golden files do not depend on where the repository is."""
    return script.replace(str(SITE_CONFIGS.parent), "$CHECKOUT")
