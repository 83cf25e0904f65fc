"""Each kind of broken site config gives an error naming file, line, key path and problem."""

import logging
import os
import subprocess
import sys
import textwrap

import pytest
from helpers.support import SITE_CONFIGS

from hpchub.core.config import (
    Identity,
    SiteConfigError,
    SiteConfigFile,
    load_site_config,
    login_defs_uid_min,
    parse_site_config,
    profile_allows,
)

VALID = textwrap.dedent(
    """\
    site: Test site
    clusters:
      main:
        scheduler: slurm
        submit: {via: sudo}
        environment:
          modules: [python/3.11]
          venv: /opt/venv
          env: {HTTPS_PROXY: "http://proxy:3128"}
        queues:
          short: {max_walltime: "04:00:00", max_cores: 32, max_memory: 128G, max_nodes: 1, max_gpus: 0}
          gpu:   {max_walltime: "2-00:00:00", max_cores: 16, max_memory: 256G, max_gpus: 4}
    profiles:
      - slug: small
        name: "Small"
        cluster: main
        queue: short
        resources: {cores: 1, memory: 4G, walltime: "02:00:00", gpus: 0, nodes: 1}
        user_adjustable:
          cores: {min: 1, max: 4}
          memory: {choices: [2G, 4G, 8G]}
          walltime: {max: "04:00:00"}
      - slug: gpu
        name: "GPU"
        cluster: main
        queue: gpu
        resources: {cores: 4, memory: 32G, walltime: "08:00:00", gpus: 1}
    """
)


def errors_of(text: str, tmp_path) -> list[str]:
    path = tmp_path / "site.yaml"
    path.write_text(text)
    with pytest.raises(SiteConfigError) as caught:
        load_site_config(path)
    lines = str(caught.value).splitlines()
    assert all(line.startswith(str(path)) for line in lines), lines
    return [line[len(str(path)) :] for line in lines]


def test_valid_config_loads_with_typed_values():
    site = parse_site_config(VALID)
    small = site.profile("small")
    assert small.resources.memory.megabytes == 4096
    assert small.resources.walltime.seconds == 7200
    assert site.clusters["main"].queues["gpu"].max_walltime.seconds == 48 * 3600
    assert site.clusters["main"].submit.via == "sudo"


@pytest.mark.parametrize("path", sorted(SITE_CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_example_site_configs_are_valid(path):
    site = load_site_config(path)
    assert site.profiles


def test_walltime_over_queue_limit_names_profile_key_and_limit(tmp_path):
    text = VALID.replace('walltime: "02:00:00", gpus: 0', 'walltime: "48:00:00", gpus: 0')
    assert errors_of(text, tmp_path) == [
        ":18: profiles[small].resources.walltime: 48:00:00 exceeds queue 'short' limit 04:00:00",
        ":22: profiles[small].user_adjustable.walltime.max: the profile's default 48:00:00 is above max 04:00:00",
    ]


def test_adjustable_bound_over_queue_limit(tmp_path):
    text = VALID.replace("cores: {min: 1, max: 4}", "cores: {min: 1, max: 64}")
    assert errors_of(text, tmp_path) == [":20: profiles[small].user_adjustable.cores.max: 64 exceeds queue 'short' limit 32"]


def test_adjustable_choice_over_queue_limit(tmp_path):
    text = VALID.replace("choices: [2G, 4G, 8G]", "choices: [2G, 4G, 256G]")
    assert errors_of(text, tmp_path) == [
        ":21: profiles[small].user_adjustable.memory.choices: 256G exceeds queue 'short' limit 128G"
    ]


def test_gpus_in_a_queue_without_gpus(tmp_path):
    text = VALID.replace("gpus: 0, nodes: 1}", "gpus: 2, nodes: 1}")
    assert errors_of(text, tmp_path) == [":18: profiles[small].resources.gpus: 2 exceeds queue 'short' limit 0"]


def test_unknown_key_is_an_error_with_a_suggestion(tmp_path):
    text = VALID.replace("    queue: gpu\n", "    queue: gpu\n    acount: proj\n")
    assert errors_of(text, tmp_path) == [":27: profiles[gpu].acount: unknown key 'acount' (did you mean 'account'?)"]


def test_unknown_key_in_a_queue(tmp_path):
    text = VALID.replace("max_gpus: 4}", "max_gpus: 4, max_gpu: 1}")
    assert errors_of(text, tmp_path) == [
        ":12: clusters.main.queues.gpu.max_gpu: unknown key 'max_gpu' (did you mean 'max_gpus'?)"
    ]


def test_unknown_profile_field_lists_allowed_keys(tmp_path):
    text = VALID.replace("    queue: gpu\n", "    queue: gpu\n    zzz: red\n")
    (error,) = errors_of(text, tmp_path)
    assert "profiles[gpu].zzz: unknown key 'zzz' (allowed: slug, name," in error


def test_missing_required_key(tmp_path):
    text = VALID.replace('    resources: {cores: 4, memory: 32G, walltime: "08:00:00", gpus: 1}\n', "")
    assert errors_of(text, tmp_path) == [":23: profiles[gpu].resources: required key is missing"]


def test_unknown_cluster_and_queue_references(tmp_path):
    text = VALID.replace("cluster: main\n    queue: gpu", "cluster: mian\n    queue: gpu").replace(
        "queue: short", "queue: shrot"
    )
    assert errors_of(text, tmp_path) == [
        ":17: profiles[small].queue: cluster 'main' has no queue 'shrot' (queues: short, gpu)",
        ":25: profiles[gpu].cluster: no cluster 'mian' (clusters: main)",
    ]


def test_scheduler_must_be_known(tmp_path):
    (error,) = errors_of(VALID.replace("scheduler: slurm", "scheduler: pbs"), tmp_path)
    assert error.startswith(":4: clusters.main.scheduler: Input should be 'slurm' or 'sge'")


def test_duplicate_slug(tmp_path):
    (error,) = errors_of(VALID.replace("slug: gpu", "slug: small"), tmp_path)
    assert error == ":23: profiles[small].slug: slug 'small' is used by an earlier profile"


def test_duplicate_yaml_key_is_refused(tmp_path):
    text = VALID.replace("    queue: gpu\n", "    queue: gpu\n    queue: short\n")
    assert errors_of(text, tmp_path) == [":27: profiles[1]: key 'queue' appears twice (first on line 26)"]


def test_yaml_syntax_error_names_the_line(tmp_path):
    text = VALID.replace("name: \"GPU\"", "name: \"GPU")
    (error,) = errors_of(text, tmp_path)
    assert error.startswith(":27: YAML syntax error") and "began on line 23" in error


def test_unquoted_walltime_stays_text():
    # YAML 1.1 would read 48:00:00 as the integer 172800 and the error would make no sense.
    site = parse_site_config(VALID.replace('walltime: "08:00:00"', "walltime: 08:00:00"))
    assert site.profile("gpu").resources.walltime.seconds == 8 * 3600


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ("short: {", "sh;ort: {", "clusters.main.queues.sh;ort: 'sh;ort' has characters that are not allowed here"),
        ("modules: [python/3.11]", "modules: ['python; rm -rf ~']", "clusters.main.environment.modules[0]: 'python; rm -rf ~' has characters"),
        ("env: {HTTPS_PROXY:", "env: {HTTPS-PROXY:", "clusters.main.environment.env.HTTPS-PROXY: 'HTTPS-PROXY' has characters"),
        ("cores: 4, memory: 32G", "cores: 0, memory: 32G", "profiles[gpu].resources.cores: Input should be greater than or equal to 1"),
        ("cores: 4, memory: 32G", "cores: '4', memory: 32G", "profiles[gpu].resources.cores: Input should be a valid integer, got '4'"),
        ("memory: 32G", "memory: 32", "profiles[gpu].resources.memory: 32 has no unit; write it like 32M or 32G"),
        ('walltime: "08:00:00", gpus: 1', 'walltime: "8h", gpus: 1', "profiles[gpu].resources.walltime: '8h' is not a walltime"),
        ("slug: gpu", "slug: GPU_1", "profiles[GPU_1].slug: 'GPU_1' has characters that are not allowed here"),
        ("    queue: gpu\n", "    queue: gpu\n    directives: [\"--x\\n#SBATCH --uid=0\"]\n", "profiles[gpu].directives[0]: must be a single line"),
        ("    queue: gpu\n", "    queue: gpu\n    account: \"a b\"\n", "profiles[gpu].account: 'a b' has characters"),
        ("    queue: gpu\n", "    queue: gpu\n    template: ../../etc/passwd\n", "profiles[gpu].template: '../../etc/passwd' has characters"),
        ("submit: {via: sudo}", "submit: {via: ssh}", "clusters.main.submit.host: required with via: ssh (the login node)"),
        ("cores: {min: 1, max: 4}", "cores: {min: 3, max: 4}", "profiles[small].user_adjustable.cores.min: the profile's default 1 is below min 3"),
        ("cores: {min: 1, max: 4}", "cores: {min: 4, max: 2}", "profiles[small].user_adjustable.cores: min 4 is larger than max 2"),
        ("choices: [2G, 4G, 8G]", "choices: [2G, 8G]", "profiles[small].user_adjustable.memory.choices: must include the profile's default 4G"),
        ("cores: {min: 1, max: 4}", "cores: {min: 1, max: 4, choices: [1, 2]}", "profiles[small].user_adjustable.cores: give either choices or min/max, not both"),
        ("cores: {min: 1, max: 4}", "shoe_size: {max: 4}", "profiles[small].user_adjustable.shoe_size: unknown key 'shoe_size'"),
    ],
)
def test_each_kind_of_mistake_is_named(tmp_path, old, new, expected):
    assert old in VALID
    errors = errors_of(VALID.replace(old, new, 1), tmp_path)
    assert any(expected in error for error in errors), errors


def test_sge_profiles_must_use_one_host(tmp_path):
    text = VALID.replace("scheduler: slurm", "scheduler: sge").replace("gpus: 0, nodes: 1}", "gpus: 0, nodes: 2}")
    text = text.replace("max_nodes: 1,", "max_nodes: 4,")
    expected = ":18: profiles[small].resources.nodes: Grid Engine profiles run a server on one host: nodes must be 1"
    assert expected in errors_of(text, tmp_path)


def test_all_problems_are_reported_at_once(tmp_path):
    text = VALID.replace("scheduler: slurm", "scheduler: slurmm").replace("slug: gpu", "slug: G P U")
    assert len(errors_of(text, tmp_path)) == 2


def test_missing_file(tmp_path):
    with pytest.raises(SiteConfigError, match="nope.yaml: cannot read: No such file"):
        load_site_config(tmp_path / "nope.yaml")


def test_not_a_mapping(tmp_path):
    assert errors_of("- a\n- b\n", tmp_path) == [": must be a mapping with keys site, clusters, profiles"]


def test_check_command_exit_codes(tmp_path):
    good = subprocess.run([sys.executable, "-m", "hpchub.admin.cli", "check", *map(str, SITE_CONFIGS.glob("*.yaml"))],
                          capture_output=True, text=True)
    assert good.returncode == 0, good.stderr
    assert good.stdout.count(": ok (") == len(list(SITE_CONFIGS.glob("*.yaml")))
    broken = tmp_path / "broken.yaml"
    broken.write_text(VALID.replace('walltime: "02:00:00", gpus: 0', 'walltime: "48:00:00", gpus: 0'))
    bad = subprocess.run([sys.executable, "-m", "hpchub.admin.cli", "check", str(broken)], capture_output=True, text=True)
    assert bad.returncode == 1
    assert f"{broken}:18: profiles[small].resources.walltime: 48:00:00 exceeds queue 'short' limit 04:00:00" in bad.stderr


def test_check_renders_templates_and_reports_template_errors(tmp_path):
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "slurm.sh.j2").write_text(
        '{% extends "hpchub/slurm.sh.j2" %}{% block launch %}echo {{ no_such_thing }}{% endblock %}')
    site = tmp_path / "site.yaml"
    site.write_text(VALID + "templates_dir: templates\n")
    result = subprocess.run([sys.executable, "-m", "hpchub.admin.cli", "check", str(site)], capture_output=True, text=True)
    assert result.returncode == 1
    assert "profiles[small]: template 'slurm.sh.j2': 'no_such_thing' is undefined" in result.stderr


def test_check_renders_the_engine_templates_too(tmp_path):
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "slurm-engines.sh.j2").write_text(
        '{% extends "hpchub/slurm-engines.sh.j2" %}{% block launch %}srun {{ engines.typo }}{% endblock %}')
    site = tmp_path / "site.yaml"
    site.write_text(VALID + "templates_dir: templates\n")
    result = subprocess.run([sys.executable, "-m", "hpchub.admin.cli", "check", str(site)], capture_output=True, text=True)
    assert result.returncode == 1
    assert "profiles[small] (engines): template 'slurm-engines.sh.j2': 'dict object' has no attribute 'typo'" in result.stderr


# --- submission must be chosen, never defaulted (issue 7, finding 1) ---

def test_a_cluster_without_submit_is_an_error_naming_line_and_key(tmp_path):
    # Before: a missing `submit:` silently meant `via: local`, every user's job run as the hub.
    assert errors_of(VALID.replace("    submit: {via: sudo}\n", ""), tmp_path) == [
        ":3: clusters.main.submit: required: how jobs are submitted (sudo, local or ssh)"
    ]


def test_submit_without_via_is_an_error(tmp_path):
    assert errors_of(VALID.replace("submit: {via: sudo}", "submit: {sudo_command: /usr/bin/sudo}"), tmp_path) == [
        ":5: clusters.main.submit.via: required: how jobs are submitted (sudo, local or ssh)"
    ]


# --- the smallest uid a job may run as ---

@pytest.mark.parametrize(
    "text, expected",
    [
        ("# comment\nUID_MIN\t\t\t 1000\n#SYS_UID_MIN 100\nSUB_UID_MIN 100000\n", 1000),
        ("UID_MIN 500\n", 500),
        ("  UID_MIN   2000  # site range\n", 2000),
        ("UID_MIN 0x3e8\n", 1000),
        ("UID_MIN 01750\n", 1000),
        ("#UID_MIN 500\nSYS_UID_MIN 100\n", 1000),
        ("UID_MIN many\n", 1000),
    ],
)
def test_login_defs_uid_min(tmp_path, text, expected):
    path = tmp_path / "login.defs"
    path.write_text(text)
    assert login_defs_uid_min(path) == expected


def test_login_defs_uid_min_without_the_file(tmp_path):
    assert login_defs_uid_min(tmp_path / "missing") == 1000


def test_uid_min_from_the_site_config_or_login_defs():
    assert parse_site_config(VALID + "uid_min: 5000\n").effective_uid_min == 5000
    assert parse_site_config(VALID).effective_uid_min == login_defs_uid_min("/etc/login.defs")
    with pytest.raises(SiteConfigError, match="uid_min: Input should be greater than or equal to 0"):
        parse_site_config(VALID + "uid_min: -1\n")


# --- who may use a profile (finding 4) ---

def _profile_with(access: str):
    return parse_site_config(VALID.replace("    queue: gpu\n", f"    queue: gpu\n{access}")).profile("gpu")


def test_profile_without_users_or_groups_is_for_everyone():
    assert profile_allows(_profile_with(""), Identity("alice"))
    assert profile_allows(_profile_with(""), Identity())


def test_profile_users_and_groups_are_separate_lists():
    profile = _profile_with("    unix_users: [carol]\n    unix_groups: [gpu-staff]\n")
    assert profile_allows(profile, Identity(unix_user="carol"))
    assert profile_allows(profile, Identity(unix_user="alice", unix_groups=frozenset({"users", "gpu-staff"})))
    assert not profile_allows(profile, Identity(unix_user="alice", unix_groups=frozenset({"users"})))
    # A user named like the group is not a member of it, and a group named like a user is no user.
    assert not profile_allows(profile, Identity(unix_user="gpu-staff", unix_groups=frozenset({"gpu-staff-not"})))
    assert not profile_allows(profile, Identity(unix_user="bob", unix_groups=frozenset({"carol"})))


def test_each_access_list_matches_only_names_of_its_own_name_space():
    # Hub user carol runs as unix account dave; unix account carol belongs to hub user c.smith.
    hub_carol = Identity(hub_user="carol", unix_user="dave")
    unix_carol = Identity(hub_user="c.smith", unix_user="carol")
    for_hub_carol = _profile_with("    hub_users: [carol]\n")
    for_unix_carol = _profile_with("    unix_users: [carol]\n")
    assert profile_allows(for_hub_carol, hub_carol) and not profile_allows(for_hub_carol, unix_carol)
    assert profile_allows(for_unix_carol, unix_carol) and not profile_allows(for_unix_carol, hub_carol)
    # A JupyterHub group and a unix group both called tutors are two groups.
    hub_tutor = Identity(hub_user="erin", hub_groups=frozenset({"tutors"}), unix_user="erin")
    unix_tutor = Identity(hub_user="fred", unix_user="fred", unix_groups=frozenset({"tutors"}))
    for_hub_tutors = _profile_with("    hub_groups: [tutors]\n")
    for_unix_tutors = _profile_with("    unix_groups: [tutors]\n")
    assert profile_allows(for_hub_tutors, hub_tutor) and not profile_allows(for_hub_tutors, unix_tutor)
    assert profile_allows(for_unix_tutors, unix_tutor) and not profile_allows(for_unix_tutors, hub_tutor)


def test_the_old_mixed_access_keys_are_errors_that_say_how_to_migrate(tmp_path):
    text = VALID.replace("    queue: gpu\n", "    queue: gpu\n    users: [carol]\n    groups: [tutors]\n")
    assert errors_of(text, tmp_path) == [
        ":27: profiles[gpu].users: no longer a key: it matched the hub user name or the unix account, so a hub user "
        "and a unix account of the same name got each other's profiles; write hub_users: [...] for JupyterHub user "
        "names and/or unix_users: [...] for unix accounts",
        ":28: profiles[gpu].groups: no longer a key: it matched JupyterHub groups and unix groups alike, so a group "
        "of one kind got the profiles of a same-named group of the other; write unix_groups: [...] for unix/LDAP "
        "groups and/or hub_groups: [...] for JupyterHub groups",
    ]


def test_profile_access_lists_are_single_lines(tmp_path):
    (error,) = errors_of(VALID.replace("    queue: gpu\n", '    queue: gpu\n    hub_users: ["a\\nb"]\n'), tmp_path)
    assert "profiles[gpu].hub_users[0]: must be a single line" in error


# --- edits to the site config file (finding 11) ---

def _write(path, text, when: float | None = None):
    path.write_text(text)
    if when is not None:
        os.utime(path, (when, when))


def test_site_config_file_takes_edits_and_keeps_the_last_good_one(tmp_path, caplog):
    path = tmp_path / "site.yaml"
    _write(path, VALID)
    config = SiteConfigFile(path)
    first = config.current()
    assert config.generation == 1 and config.last_error is None
    assert config.current() is first  # unchanged file: the same object, no re-parse

    _write(path, VALID.replace('name: "GPU"', 'name: "GPU v2"'))
    second = config.current()
    assert second.profile("gpu").name == "GPU v2" and config.generation == 2

    caplog.set_level(logging.ERROR, logger="hpchub.config")
    broken = VALID.replace('walltime: "02:00:00", gpus: 0', 'walltime: "48:00:00", gpus: 0')
    _write(path, broken)
    assert config.current() is second and config.current() is second
    assert config.generation == 2
    assert "48:00:00 exceeds queue 'short' limit 04:00:00" in str(config.last_error)
    logged = [r.getMessage() for r in caplog.records if r.name == "hpchub.config"]
    assert len(logged) == 1, logged  # once per bad content, not once per call
    assert f"{path}:18: profiles[small].resources.walltime: 48:00:00 exceeds" in logged[0]
    assert "last good version stays in use" in logged[0]

    _write(path, VALID.replace('name: "GPU"', 'name: "GPU v3"'))
    assert config.current().profile("gpu").name == "GPU v3"
    assert config.generation == 3 and config.last_error is None


def test_site_config_file_touch_without_change_keeps_the_config(tmp_path):
    path = tmp_path / "site.yaml"
    _write(path, VALID, when=1_000_000)
    config = SiteConfigFile(path)
    first = config.current()
    for when in (1_000_100, None):  # an old mtime (stat trusted) and a fresh one (content hashed)
        _write(path, VALID, when=when)
        assert config.current() is first
    os.utime(path)
    assert config.current() is first and config.generation == 1


def test_site_config_file_edit_that_keeps_size_and_mtime_is_seen(tmp_path):
    # What `rsync -t` or `cp -p` of a same-size edit does: the mtime of the old file is kept.
    path = tmp_path / "site.yaml"
    _write(path, VALID)
    config = SiteConfigFile(path)
    config.current()
    stat = path.stat()
    _write(path, VALID.replace('name: "GPU"', 'name: "GPX"'))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert config.current().profile("gpu").name == "GPX"


def test_site_config_file_that_was_never_good_raises_every_time(tmp_path, caplog):
    path = tmp_path / "site.yaml"
    caplog.set_level(logging.ERROR, logger="hpchub.config")
    config = SiteConfigFile(path)
    for _ in range(2):
        with pytest.raises(SiteConfigError, match="cannot read: No such file"):
            config.current()
    _write(path, "site: [")
    for _ in range(2):
        with pytest.raises(SiteConfigError, match="YAML syntax error"):
            config.current()
    assert len(caplog.records) == 2  # the missing file once, the broken YAML once
    _write(path, VALID)
    assert config.current().site == "Test site" and config.generation == 1


def test_site_config_file_removed_keeps_the_last_good_one(tmp_path):
    path = tmp_path / "site.yaml"
    _write(path, VALID)
    config = SiteConfigFile(path)
    site = config.current()
    path.unlink()
    assert config.current() is site and "cannot read" in str(config.last_error)
    _write(path, VALID)  # the same content back: nothing new to take
    assert config.current() is site and config.generation == 1 and config.last_error is None


SSH_SUBMIT = ("submit: {via: ssh, host: login.hpc.example.org, key: '/etc/hpchub/keys/{user}.key', "
              "known_hosts: /etc/hpchub/known_hosts, query_user: hpchub-query}")


def test_ssh_submission_keys_are_read():
    site = parse_site_config(VALID.replace("submit: {via: sudo}", SSH_SUBMIT + "\n    network: {to_servers: tunnel}"))
    submit = site.clusters["main"].submit
    assert (submit.host, submit.port, submit.user, submit.sudo) == ("login.hpc.example.org", 22, "{user}", False)
    assert submit.status_account == "hpchub-query" and site.clusters["main"].network.to_servers == "tunnel"
    assert submit.idle_timeout is None  # the SSH pool's default
    idle = parse_site_config(VALID.replace("submit: {via: sudo}", SSH_SUBMIT[:-1] + ", idle_timeout: 120}"))
    assert idle.clusters["main"].submit.idle_timeout == 120
    service = VALID.replace("submit: {via: sudo}", "submit: {via: ssh, host: login, user: hpchub-svc, sudo: true, "
                                                   "key: /etc/hpchub/svc.key, known_hosts: /etc/hpchub/known_hosts}")
    assert parse_site_config(service).clusters["main"].submit.status_account == "hpchub-svc"


def test_service_accounts_always_include_the_hubs_own_ssh_accounts():
    listed = VALID.replace("submit: {via: sudo}", SSH_SUBMIT[:-1] + ", service_accounts: [backup, hpchub-query]}")
    assert parse_site_config(listed).clusters["main"].submit.refused_accounts == ("backup", "hpchub-query")
    service = VALID.replace("submit: {via: sudo}", "submit: {via: ssh, host: login, user: hpchub-svc, sudo: true, "
                                                   "key: /etc/hpchub/svc.key, known_hosts: /etc/hpchub/known_hosts}")
    assert parse_site_config(service).clusters["main"].submit.refused_accounts == ("hpchub-svc",)
    local = VALID.replace("submit: {via: sudo}", "submit: {via: sudo, service_accounts: [backup]}")
    assert parse_site_config(local).clusters["main"].submit.refused_accounts == ("backup",)


@pytest.mark.parametrize(
    "submit, message",
    [
        ("submit: {via: ssh, key: /k, known_hosts: /kh, query_user: q}", "clusters.main.submit.host: required with via: ssh"),
        ("submit: {via: ssh, host: login, known_hosts: /kh, query_user: q}", "clusters.main.submit.key: required with via: ssh"),
        ("submit: {via: ssh, host: login, key: /k, query_user: q}", "clusters.main.submit.known_hosts: required with via: ssh"),
        ("submit: {via: ssh, host: login, key: /k, known_hosts: /kh}", "clusters.main.submit.query_user: required when user is {user}"),
        ("submit: {via: ssh, host: login, key: /k, known_hosts: /kh, sudo: true}", "clusters.main.submit.user: with sudo: true"),
        ("submit: {via: ssh, host: 'login; rm -rf /', key: /k, known_hosts: /kh, query_user: q}", "clusters.main.submit.host:"),
        ("submit: {via: ssh, host: login, key: '/k/../../{user}', known_hosts: /kh, query_user: q, user: 'a b'}",
         "clusters.main.submit.user:"),
        ("submit: {via: sudo, host: login}", "clusters.main.submit.host: only means something with via: ssh"),
        ("submit: {via: sudo, service_accounts: ['backup; id']}", "clusters.main.submit.service_accounts[0]:"),
        ("submit: {via: sudo, idle_timeout: 60}", "clusters.main.submit.idle_timeout: only means something with via: ssh"),
        ("submit: {via: ssh, host: login, key: /k, known_hosts: /kh, query_user: q, idle_timeout: 0}",
         "clusters.main.submit.idle_timeout:"),
        ("submit: {via: ssh, host: login, key: /k, known_hosts: /kh, query_user: q, idle_timeout: 5m}",
         "clusters.main.submit.idle_timeout:"),
        ("submit: {via: sudo}\n    network: {to_servers: tunnel}", "clusters.main.network: tunnels and reverse forwards need via: ssh"),
    ],
)
def test_ssh_submission_mistakes_are_named(tmp_path, submit, message):
    errors = errors_of(VALID.replace("submit: {via: sudo}", submit), tmp_path)
    assert any(message in line for line in errors), errors


def _with_allocations(settings: str, scheduler: str = "slurm") -> str:
    """VALID with ``settings`` (YAML lines) added to the gpu profile."""
    text = VALID.replace("scheduler: slurm", f"scheduler: {scheduler}")
    return text.replace("    queue: gpu\n", "    queue: gpu\n" + textwrap.indent(settings, "    "), 1)


def test_allocation_settings_fixed_list_and_from_scheduler():
    site = parse_site_config(_with_allocations("account: chem\nqos: [normal, high]\nreservation: {from_scheduler: true}\n"))
    gpu = site.profile("gpu")
    account, qos, reservation = (gpu.allocation(field) for field in ("account", "qos", "reservation"))
    assert (account.fixed, account.adjustable, account.optional) == ("chem", False, False)
    assert (qos.choices, qos.default, qos.adjustable, qos.optional) == (("normal", "high"), "normal", True, False)
    assert reservation.from_scheduler and reservation.adjustable and reservation.default is None and reservation.optional
    unset = site.profile("small").allocation("qos")
    assert (unset.choices, unset.default, unset.adjustable, unset.fixed) == ((), None, False, None)


def test_older_account_with_user_adjustable_choices_keeps_working():
    site = parse_site_config(_with_allocations("account: chem\nuser_adjustable: {account: {choices: [chem, phys]}}\n"))
    rule = site.profile("gpu").allocation("account")
    assert (rule.choices, rule.default, rule.adjustable, rule.optional) == (("chem", "phys"), "chem", True, False)
    without_default = parse_site_config(_with_allocations("user_adjustable: {account: {choices: [chem]}}\n"))
    rule = without_default.profile("gpu").allocation("account")
    assert (rule.default, rule.adjustable, rule.optional) == (None, True, True)


@pytest.mark.parametrize(
    "settings, scheduler, expected",
    [
        ("qos: high\n", "sge", ":27: profiles[gpu].qos: Grid Engine has no QoS"),
        ("account: {from_scheduler: false}\n", "slurm", ":27: profiles[gpu].account: a mapping here must be "
                                                       "{from_scheduler: true}"),
        ("reservation: []\n", "slurm", ":27: profiles[gpu].reservation: an empty list"),
        ("account: [chem, 'a b']\n", "slurm", ":27: profiles[gpu].account: 'a b' has characters that are not allowed"),
        ("account: [chem, chem]\n", "slurm", ":27: profiles[gpu].account: lists a name twice"),
        ("qos: 3\n", "slurm", ":27: profiles[gpu].qos: give a name, a list of names or {from_scheduler: true}, got 3"),
        ("account: {from_scheduler: true}\nuser_adjustable: {account: {choices: [chem]}}\n", "slurm",
         ":28: profiles[gpu].user_adjustable.account: account already says what users may choose"),
    ],
)
def test_allocation_setting_mistakes_are_named(tmp_path, settings, scheduler, expected):
    errors = errors_of(_with_allocations(settings, scheduler), tmp_path)
    assert any(error.startswith(expected) for error in errors), errors


def test_sge_profile_may_take_a_project_and_a_reservation():
    site = parse_site_config(_with_allocations("account: chem\nreservation: course\n", "sge"))
    assert site.profile("gpu").allocation("reservation").fixed == "course"


def test_check_renders_profiles_whose_allocations_come_from_the_scheduler(tmp_path):
    # Before: resolve_request refused them without the scheduler's answer, so `check` failed every such profile.
    site = tmp_path / "site.yaml"
    site.write_text(_with_allocations("account: {from_scheduler: true}\nqos: {from_scheduler: true}\n"
                                      "reservation: course\n"))
    result = subprocess.run([sys.executable, "-m", "hpchub.admin.cli", "check", str(site)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    sge = tmp_path / "sge.yaml"
    sge.write_text(_with_allocations("account: {from_scheduler: true}\nreservation: course\n", "sge")
                   .replace("gpus: 0, nodes: 1}", "gpus: 0}").replace(", gpus: 1}", "}").replace("max_gpus: 4", "max_gpus: 0"))
    result = subprocess.run([sys.executable, "-m", "hpchub.admin.cli", "check", str(sge)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
