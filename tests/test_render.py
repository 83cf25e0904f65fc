"""Job scripts: golden renders of the example profiles, quoting, injection attempts, site templates."""

from __future__ import annotations

import os
import subprocess
import textwrap
import time

import jinja2
import pytest
from helpers.render_cases import GOLDEN_DIR, SITE_CONFIGS, USER, golden_cases, render_case

from hpchub.core.config import load_site_config, parse_site_config
from hpchub.core.options import ADJUSTABLE_FIELDS, OptionsError, resolve_request
from hpchub.core.render import (
    Launch,
    RenderError,
    UserAccount,
    job_context,
    packaged_templates_dir,
    render_job_script,
    template_environment,
    template_name,
)
from hpchub.hub.form import form_environment


@pytest.mark.parametrize("case", golden_cases(), ids=lambda c: c.filename)
def test_golden_job_scripts(case):
    expected = (GOLDEN_DIR / case.filename).read_text()
    assert render_case(case) == expected, "template output changed: review, then run tests/golden/regenerate.py"


@pytest.mark.parametrize("case", golden_cases(), ids=lambda c: c.filename)
def test_rendered_scripts_are_valid_bash(case):
    result = subprocess.run(["bash", "-n"], input=render_case(case), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_no_golden_file_is_stale():
    expected = {case.filename for case in golden_cases()}
    on_disk = {path.name for path in GOLDEN_DIR.glob("*.sh")}
    assert on_disk == expected


INJECTIONS = [
    "x; rm -rf ~",
    "$(id)",
    "`id`",
    "4G\n#SBATCH --uid=0",
    "2\n#$ -u root",
    "02:00:00\n#SBATCH --partition=admin",
    "' ; id ; '",
    "--uid=0",
    "4G --uid=0",
    "1 --wrap=id",
    "short --uid=0",
    "gpu\nid",
    "${IFS}id",
    "4G\r#SBATCH --uid=0",
    "4G\x00",
    "２",  # a full-width digit
    "1e3",
    "-1",
    [1],
    {"a": 1},
    True,
]


def all_profiles():
    for path in sorted(SITE_CONFIGS.glob("*.yaml")):
        site = load_site_config(path)
        for profile in site.profiles:
            yield site, profile


@pytest.mark.parametrize("payload", INJECTIONS, ids=repr)
def test_injection_through_every_field_is_refused(payload):
    attempts = 0
    for site, profile in all_profiles():
        for field in ADJUSTABLE_FIELDS:
            if field == "user_env" and payload == "1e3" and profile.slug == "cpu-small":
                continue  # a fine directory name (~/1e3): what user envs take is tested in test_user_envs.py
            attempts += 1
            with pytest.raises(OptionsError) as caught:
                resolve_request(site, profile, {field: payload})
            assert field in caught.value.problems
    assert attempts > 20


def test_fields_the_admin_did_not_open_cannot_be_changed():
    site = load_site_config(SITE_CONFIGS / "example-sge-course.yaml")
    with pytest.raises(OptionsError) as caught:
        resolve_request(site, site.profile("student"), {"cores": 2, "queue": "all.q", "walltime": "24:00:00"})
    assert set(caught.value.problems) == {"cores", "queue", "walltime"}
    assert "does not let users change" in caught.value.problems["cores"]


def test_user_choices_within_bounds_are_applied_and_admin_values_kept():
    site = load_site_config(SITE_CONFIGS / "example-slurm-production.yaml")
    request = resolve_request(site, site.profile("cpu-small"), {"cores": "8", "memory": "16G", "account": "physics"})
    assert (request.cores, request.memory.megabytes, request.account) == (8, 16384, "physics")
    assert request.queue == "cpu" and request.walltime.hms == "04:00:00"


@pytest.mark.parametrize(
    "options, field, message",
    [
        ({"cores": 17}, "cores", "17 is above the maximum 16"),
        ({"cores": 0}, "cores", "0 is below the minimum 1"),
        ({"memory": "12G"}, "memory", "12G is not one of 4G, 8G, 16G, 32G, 64G"),
        ({"walltime": "13:00:00"}, "walltime", "13:00:00 is above the maximum 12:00:00"),
        ({"account": "root"}, "account", "root is not one of physics, chemistry, default"),
        ({"profile": "cpu-small", "shoe_size": 44}, "shoe_size", "unknown option"),
    ],
)
def test_out_of_bounds_choices_say_why(options, field, message):
    site = load_site_config(SITE_CONFIGS / "example-slurm-production.yaml")
    with pytest.raises(OptionsError) as caught:
        resolve_request(site, site.profile("cpu-small"), options)
    assert message in caught.value.problems[field]


def test_empty_form_fields_keep_the_profile_values():
    site = load_site_config(SITE_CONFIGS / "local-slurm.yaml")
    request = resolve_request(site, site.profile("small"), {"cores": "", "memory": None})
    assert request.cores == 1 and str(request.memory) == "1G"


def test_user_names_are_checked():
    for bad in ["alice; id", "$(id)", "a\nb", "", "../root", "-rf"]:
        with pytest.raises(RenderError):
            UserAccount.lookup(bad)


SITE = textwrap.dedent(
    """\
    site: quoting test
    clusters:
      c:
        scheduler: slurm
        submit: {{via: sudo}}
        environment:
          env:
            TRICKY: "$(touch {canary}) `touch {canary}` ' \\" ; touch {canary} $HOME"
        queues:
          q: {{}}
    profiles:
      - slug: p
        name: p
        cluster: c
        queue: q
        resources: {{walltime: "01:00:00"}}
    """
)


def test_values_reach_the_script_literally_and_never_run(tmp_path):
    canary = tmp_path / "pwned"
    site = parse_site_config(SITE.format(canary=canary))
    request = resolve_request(site, site.profile("p"))
    args = [f"$(touch {canary})", f"`touch {canary}`", "a'b", 'c"d', "e f", ";", "&&", "$HOME", "*"]
    launch = Launch(command=["printf", "[%s]\\n", *args], env={"SHOWN": f"$(touch {canary})"})
    context = job_context(site, request, UserAccount("alice", str(tmp_path)), launch, name="hpchub-alice-x")
    script = render_job_script(site, context, template_name(request))
    script += ""
    result = subprocess.run(["bash", "-c", script.replace("exec printf", 'printf "%s\\n" "$TRICKY" "$SHOWN"; exec printf')],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-len(args):] == [f"[{arg}]" for arg in args]
    assert f"$(touch {canary}) `touch {canary}` ' \" ; touch {canary} $HOME" in lines
    assert f"$(touch {canary})" in lines
    assert not canary.exists()


def test_a_newline_never_reaches_a_script_even_from_a_template_value(tmp_path):
    site = parse_site_config(SITE.format(canary="x"))
    request = resolve_request(site, site.profile("p"))
    launch = Launch(command=["echo", "ok\n#SBATCH --uid=0"])
    context = job_context(site, request, USER, launch, name="hpchub-alice-x")
    with pytest.raises(RenderError, match="line break"):
        render_job_script(site, context, template_name(request))


SITE_WITH_TEMPLATES = textwrap.dedent(
    """\
    site: templates test
    templates_dir: site-templates
    clusters:
      c:
        scheduler: slurm
        submit: {via: sudo}
        queues:
          q: {}
    profiles:
      - slug: default
        name: default
        cluster: c
        queue: q
        resources: {walltime: "01:00:00"}
      - slug: special
        name: special
        cluster: c
        queue: q
        template: special.sh.j2
        resources: {walltime: "01:00:00"}
    """
)


def _render_from(tmp_path, slug):
    site_file = tmp_path / "site.yaml"
    site_file.write_text(SITE_WITH_TEMPLATES)
    site = load_site_config(site_file)
    request = resolve_request(site, site.profile(slug))
    context = job_context(site, request, USER, Launch(command=["jupyterhub-singleuser"]), name="hpchub-alice-x")
    return render_job_script(site, context, template_name(request))


def test_site_template_dir_is_searched_first_and_can_extend_the_packaged_one(tmp_path):
    templates = tmp_path / "site-templates"
    templates.mkdir()
    (templates / "slurm.sh.j2").write_text(
        '{% extends "hpchub/slurm.sh.j2" %}\n'
        "{% block directives %}{{ super() }}#SBATCH --qos=jupyter\n{% endblock %}\n"
        "{% block launch %}echo site launch\n{{ super() }}{% endblock %}\n"
    )
    script = _render_from(tmp_path, "default")
    directives = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert directives[-1] == "#SBATCH --qos=jupyter"
    assert "#SBATCH --partition=q" in directives
    assert "echo site launch\n" in script and script.rstrip().endswith("exec jupyterhub-singleuser")


def test_a_site_file_under_hpchub_never_shadows_the_packaged_template(tmp_path):
    # A site file at templates_dir/hpchub/slurm.sh.j2 used to replace what every
    # `{% extends "hpchub/slurm.sh.j2" %}` got, directives and all.
    (tmp_path / "site-templates" / "hpchub").mkdir(parents=True)
    (tmp_path / "site-templates" / "hpchub" / "slurm.sh.j2").write_text("#!/bin/bash\necho shadowed\n")
    (tmp_path / "site-templates" / "hpchub" / "site-only.sh.j2").write_text("echo site only\n")
    (tmp_path / "site-templates" / "slurm.sh.j2").write_text('{% extends "hpchub/slurm.sh.j2" %}')
    script = _render_from(tmp_path, "default")
    assert "shadowed" not in script and "#SBATCH --partition=q\n" in script
    packaged = (packaged_templates_dir() / "slurm.sh.j2").read_text()
    site_templates = tmp_path / "site-templates"
    for environment in (template_environment(site_templates), form_environment(site_templates)):
        assert environment.loader.get_source(environment, "hpchub/slurm.sh.j2")[0] == packaged
        with pytest.raises(jinja2.TemplateNotFound, match="hpchub/site-only.sh.j2"):
            environment.get_template("hpchub/site-only.sh.j2")


def test_templates_compile_once_and_edits_still_take_effect(tmp_path):
    # The spawner renders at every spawn: one environment per templates directory keeps the compiled
    # templates; an edited site template, and a site file added after the packaged one was used,
    # must still show up without a hub restart.
    (tmp_path / "site-templates" / "partials").mkdir(parents=True)
    assert "source /etc/site-env.sh" not in _render_from(tmp_path, "default")
    site_templates = tmp_path / "site-templates"
    assert template_environment(site_templates) is template_environment(site_templates)
    assert form_environment(site_templates) is form_environment(site_templates)
    partial = site_templates / "partials" / "environment.sh.j2"
    partial.write_text("source /etc/site-env.sh\n")
    assert "source /etc/site-env.sh\n" in _render_from(tmp_path, "default")
    partial.write_text("source /etc/other-env.sh\n")
    os.utime(partial, ns=(time.time_ns() + 10**9,) * 2)  # a later mtime, as an edit a second later has
    script = _render_from(tmp_path, "default")
    assert "source /etc/other-env.sh\n" in script and "site-env" not in script


def test_site_partial_overrides_the_packaged_partial(tmp_path):
    (tmp_path / "site-templates" / "partials").mkdir(parents=True)
    (tmp_path / "site-templates" / "partials" / "environment.sh.j2").write_text("source /etc/site-env.sh\n")
    script = _render_from(tmp_path, "default")
    assert "source /etc/site-env.sh\n" in script


def test_profile_template_is_used_and_a_missing_one_is_a_clear_error(tmp_path):
    (tmp_path / "site-templates").mkdir()
    with pytest.raises(RenderError, match="template 'special.sh.j2' not found in .*site-templates"):
        _render_from(tmp_path, "special")
    (tmp_path / "site-templates" / "special.sh.j2").write_text(
        '{% extends "slurm.sh.j2" %}{% block environment %}module load special\n{% endblock %}'
    )
    assert "module load special\n" in _render_from(tmp_path, "special")


def test_undefined_variables_are_errors_not_empty_strings(tmp_path):
    (tmp_path / "site-templates").mkdir()
    (tmp_path / "site-templates" / "slurm.sh.j2").write_text(
        '{% extends "hpchub/slurm.sh.j2" %}{% block launch %}{{ job.typo }}{% endblock %}')
    with pytest.raises(RenderError, match="has no attribute 'typo'"):
        _render_from(tmp_path, "default")
