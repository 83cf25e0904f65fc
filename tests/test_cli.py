"""The hpchub command: exit codes and messages for render (the real-cluster commands are
exercised by examples/local.sh and the scheduler tests)."""

import pytest
from helpers.render_cases import portable
from helpers.support import REPO, SITE_CONFIGS
from helpers.support import run_hpchub as hpchub

LOCAL_SLURM = str(SITE_CONFIGS / "local-slurm.yaml")


def test_render_prints_the_golden_script():
    result = hpchub("render", LOCAL_SLURM, "--profile", "small", "--user", "alice")
    assert result.returncode == 0, result.stderr
    assert portable(result.stdout) == (REPO / "tests" / "golden" / "local-slurm--small.sh").read_text()


def test_render_applies_valid_choices():
    result = hpchub("render", LOCAL_SLURM, "--profile", "small", "--user", "alice", "--set", "cores=4", "--set", "memory=4G")
    assert result.returncode == 0, result.stderr
    assert "#SBATCH --cpus-per-task=4\n" in result.stdout and "#SBATCH --mem=4096M\n" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "cores=5"], "hpchub: cores: 5 is above the maximum 4"),
        (["--set", "nodes=2"], "hpchub: nodes: profile 'small' does not let users change nodes"),
        (["--set", "memory=3G"], "hpchub: memory: 3G is not one of 1G, 2G, 4G"),
        (["--set", "walltime=$(reboot)"], "hpchub: walltime: '$(reboot)' is not a walltime"),
        (["--set", "cores"], "write --set as FIELD=VALUE"),
        (["--set", "colour=red"], "hpchub: colour: unknown option"),
    ],
)
def test_render_refuses_bad_choices_with_exit_1(args, message):
    result = hpchub("render", LOCAL_SLURM, "--profile", "small", "--user", "alice", *args)
    assert result.returncode == 1 and result.stdout == ""
    assert message in result.stderr


def test_unknown_profile_and_bad_user():
    result = hpchub("render", LOCAL_SLURM, "--profile", "huge", "--user", "alice")
    assert result.returncode == 1 and "no profile 'huge' (profiles: small, multi)" in result.stderr
    result = hpchub("render", LOCAL_SLURM, "--profile", "small", "--user", "alice;id")
    assert result.returncode == 1 and "user name 'alice;id' has characters that are not allowed" in result.stderr


def test_link_prints_a_checked_link_with_encoded_values():
    result = hpchub("link", LOCAL_SLURM, "--profile", "small", "--set", "cores=2", "--set", "walltime=2:30:00",
                    "--set", "memory=4G", "--hub-url", "https://hub.example.org/")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ("https://hub.example.org/hub/spawn?opt-profile=small&opt-cores=2"
                             "&opt-walltime=2%3A30%3A00&opt-memory=4G\n")
    named = hpchub("link", LOCAL_SLURM, "--profile", "multi", "--set", "nodes=3", "--user", "alice", "--server", "course")
    assert named.returncode == 0 and named.stdout == "/hub/spawn/alice/course?opt-profile=multi&opt-nodes=3\n"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--profile", "small", "--set", "cores=5"], "hpchub: cores: 5 is above the maximum 4"),
        (["--profile", "small", "--set", "shoe_size=44"], "hpchub: shoe_size: unknown option"),
        (["--profile", "small", "--set", "walltime=2"], "hpchub: walltime: '2' is not a walltime"),
        (["--profile", "huge"], "hpchub: profile: no profile 'huge' (profiles: small, multi)"),
        (["--profile", "small", "--server", "course"], "hpchub: server: give --user and --server together"),
    ],
)
def test_link_refuses_what_the_hub_would_refuse_like_render(args, message):
    result = hpchub("link", LOCAL_SLURM, *args)
    assert result.returncode == 1 and result.stdout == ""
    assert message in result.stderr
