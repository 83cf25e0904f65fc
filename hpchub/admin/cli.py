"""``hpchub``: check a site config, render and submit job scripts, look at jobs and queues."""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
from collections.abc import Sequence
from urllib.parse import quote, urlencode

from ..core import jobs
from ..core.config import SiteConfig, SiteConfigError, load_site_config
from ..core.jobs import PreparedJob
from ..core.options import OptionsError, needs_allocations, placeholder_allocations, resolve_request
from ..core.render import RenderError, UserAccount
from ..schedulers import ParseError
from ..transports.cluster import AccountRefused, AllocationsUnavailable, ClusterClient, client_for, user_allocations
from ..transports.runner import CommandError
from .checks import Finding, live_findings, site_findings


def _parse_sets(pairs: Sequence[str]) -> dict[str, str]:
    values = {}
    for pair in pairs:
        field, sep, value = pair.partition("=")
        if not sep or not field:
            raise OptionsError({pair: "write --set as FIELD=VALUE, e.g. --set cores=2"})
        values[field.strip()] = value
    return values


def build_job(site: SiteConfig, args: argparse.Namespace) -> PreparedJob:
    """The job for --profile/--user/--set (--engines N, --command CMD), built exactly as the
    spawner and the engine launcher build it."""
    try:
        profile = site.profile(args.profile)
    except KeyError:
        slugs = ", ".join(p.slug for p in site.profiles)
        raise OptionsError({"profile": f"no profile {args.profile!r} (profiles: {slugs})"}) from None
    # The user's accounts/QoS/reservations (when the profile needs them) are asked as the hub asks.
    client = client_for(site, profile.cluster)
    if getattr(args, "engines", None):
        from ..parallel import HPCEngineSetLauncher  # ipyparallel: only when asked for

        launcher = HPCEngineSetLauncher(site_config=args.site, profile=args.profile, options=_parse_sets(args.set))
        return asyncio.run(launcher.prepare_asking(args.engines, client, user=args.user))
    allocations = asyncio.run(user_allocations(client, args.user)) if needs_allocations(site, profile) else None
    request = resolve_request(site, profile, _parse_sets(args.set), allocations)
    user = UserAccount.lookup(args.user)
    if getattr(args, "command", None):
        return jobs.command_job(site, request, user, shlex.split(args.command))
    return jobs.server_job(site, request, user, server_name=getattr(args, "server", "") or "")


def spawn_link(site: SiteConfig, profile_slug: str, values: dict[str, str], hub_url: str = "",
               user: str | None = None, server: str | None = None) -> str:
    """A JupyterHub spawn link with these choices (``/hub/spawn?opt-profile=P&opt-F=V``, or
    ``/hub/spawn/USER/SERVER?...`` for a named server), checked as the hub checks a link. It opens
    the spawn form prefilled with them; nothing starts before the user presses Start."""
    try:
        profile = site.profile(profile_slug)
    except KeyError:
        slugs = ", ".join(p.slug for p in site.profiles)
        raise OptionsError({"profile": f"no profile {profile_slug!r} (profiles: {slugs})"}) from None
    resolve_request(site, profile, values)
    if bool(user) != bool(server):
        raise OptionsError({"server": "give --user and --server together (a named server's link names its user)"})
    path = "/hub/spawn" + (f"/{quote(user, safe='')}/{quote(server, safe='')}" if user and server else "")
    query = urlencode({"opt-profile": profile.slug, **{f"opt-{field}": value for field, value in values.items()}})
    return f"{hub_url.rstrip('/')}{path}?{query}"


def cmd_link(args: argparse.Namespace) -> int:
    site = load_site_config(args.site)
    print(spawn_link(site, args.profile, _parse_sets(args.set), args.hub_url, args.user, args.server))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    failed = False
    for path in args.site:
        try:
            site = load_site_config(path)
        except SiteConfigError as error:
            print(error.format(), file=sys.stderr)
            failed = True
            continue
        # Render every profile once so template mistakes show up now, not at a user's spawn.
        problems = []
        for profile in site.profiles:
            user = UserAccount("hpchub-check", "/home/hpchub-check")
            try:
                allocations = placeholder_allocations(site, profile) if needs_allocations(site, profile) else None
                jobs.server_job(site, resolve_request(site, profile, allocations=allocations), user)
            except (RenderError, OptionsError) as error:
                problems.append(f"{path}: profiles[{profile.slug}]: {error}")
                continue
            try:  # the ipyparallel engine job of the profile, too
                from ..parallel import HPCEngineSetLauncher

                HPCEngineSetLauncher(site_config=str(path), profile=profile.slug).prepare(2, user=user.name,
                                                                                          allocations=allocations)
            except (RenderError, OptionsError, ValueError) as error:
                problems.append(f"{path}: profiles[{profile.slug}] (engines): {error}")
        live = asyncio.run(live_findings(site, args.probe_user, probe=not args.no_probe)) if args.live else []
        findings = site_findings(site, internal_ssl=args.internal_ssl) + live
        problems += [f"{_where(path, finding)}: {finding.message}" for finding in findings if finding.level == "error"]
        for finding in findings:
            if finding.level != "error":
                stream = sys.stderr if finding.level == "warning" else sys.stdout
                print(f"{finding.level}: {_where(path, finding)}: {finding.message}", file=stream)
        if problems:
            print("\n".join(problems), file=sys.stderr)
            failed = True
        else:
            print(f"{path}: ok ({site.site}: {len(site.clusters)} clusters, {len(site.profiles)} profiles)")
    return 1 if failed else 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import default_hub_api_url, diagnose, format_diagnosis, record_kernels

    site = load_site_config(args.site)
    try:
        cluster_name = site.profile(args.profile).cluster
    except KeyError:
        slugs = ", ".join(p.slug for p in site.profiles)
        raise OptionsError({"profile": f"no profile {args.profile!r} (profiles: {slugs})"}) from None
    hub_api = args.hub_api or default_hub_api_url(site, cluster_name)
    print(f"hub API URL checked: {hub_api}" + ("" if args.hub_api else " (the default; give --hub-api URL)"))
    diagnosis = asyncio.run(diagnose(site, args.profile, args.user, hub_api, _parse_sets(args.set),
                                     start_timeout=args.start_timeout, report_timeout=args.report_timeout,
                                     say=print, connect_timeout=args.connect_timeout))
    recorded = record_kernels(site, diagnosis)
    if recorded:
        print(recorded)
    print(format_diagnosis(diagnosis))
    return diagnosis.exit_code


def _where(path: str, finding: Finding) -> str:
    return f"{path}:{finding.line}" if finding.line else path


def cmd_render(args: argparse.Namespace) -> int:
    site = load_site_config(args.site)
    job = build_job(site, args)
    sys.stdout.write(job.script)
    if job.files:  # on stderr: stdout stays exactly the script the scheduler gets
        print(files_written(job), file=sys.stderr, end="")
    return 0


def files_written(job: PreparedJob) -> str:
    """What a submission writes into the job's directory besides its secrets: names and sizes."""
    sizes = {name: len(text.encode("utf-8")) for name, text in job.files.items()}
    lines = [f"# written to {job.job_dir}/ with the job ({len(sizes)} files, {sum(sizes.values())} bytes; "
             "the secrets files are made at submission):\n"]
    lines += [f"#   {name}  {size} bytes\n" for name, size in sizes.items()]
    return "".join(lines)


def cmd_submit(args: argparse.Namespace) -> int:
    site = load_site_config(args.site)
    job = build_job(site, args)
    client = client_for(site, job.cluster_name)
    files = {"env": ""} if job.kind != "command" else {}
    job_id = asyncio.run(client.submit(job.user.name, job.key, job.script, job.files_with(files)))
    print(job_id)
    return 0


def _clients(site: SiteConfig, cluster: str | None) -> list[ClusterClient]:
    names = [cluster] if cluster else list(site.clusters)
    for name in names:
        if name not in site.clusters:
            raise OptionsError({"cluster": f"no cluster {name!r} (clusters: {', '.join(site.clusters)})"})
    return [client_for(site, name) for name in names]


async def _names(client: ClusterClient, users: Sequence[str]) -> dict[str, str]:
    """Job names of these users' jobs (status answers leave names out: they are users' text)."""
    names: dict[str, str] = {}
    for user in users:
        names.update(await client.job_names(user))
    return names


MAX_USERS_FOR_NAMES = 50  # one names query per user: beyond this, ask for --users or --all


def cmd_status(args: argparse.Namespace) -> int:
    site = load_site_config(args.site)
    rows = []
    for client in _clients(site, args.cluster):
        jobs = asyncio.run(client.status(args.users.split(",") if args.users else None))
        if args.job_ids:
            jobs = {job_id: job for job_id, job in jobs.items() if job_id in args.job_ids}
        users = sorted({job.user for job in jobs.values() if job.user})
        if len(users) > MAX_USERS_FOR_NAMES and not args.all:
            raise OptionsError({"users": f"{len(users)} users have jobs on {client.name}: "
                                         "name some with --users, or list everything with --all"})
        names = asyncio.run(_names(client, users)) if len(users) <= MAX_USERS_FOR_NAMES else {}
        for job in jobs.values():
            name = job.name or names.get(job.job_id, "")
            if not args.all and not args.job_ids and not name.startswith("hpchub-"):
                continue
            rows.append((client.name, job.job_id, job.user, name or "-", job.queue, job.state.value,
                         job.scheduler_state, ",".join(job.nodes) or "-", job.reason or "-"))
    _table(("CLUSTER", "JOBID", "USER", "NAME", "QUEUE", "STATE", "SCHED", "NODES", "REASON"), rows)
    missing = set(args.job_ids) - {row[1] for row in rows}
    for job_id in sorted(missing):
        print(f"job {job_id}: not known to the scheduler (finished and purged, or never existed)", file=sys.stderr)
    return 1 if missing else 0


def cmd_cancel(args: argparse.Namespace) -> int:
    site = load_site_config(args.site)
    (client,) = _clients(site, args.cluster or next(iter(site.clusters)))
    asyncio.run(client.cancel(args.user, args.job_ids))
    return 0


def cmd_queues(args: argparse.Namespace) -> int:
    site = load_site_config(args.site)
    rows = []
    for client in _clients(site, args.cluster):
        configured = site.clusters[client.name].queues
        for queue in asyncio.run(client.queue_info()):
            limits = configured.get(queue.name)
            rows.append((
                client.name, queue.name, "up" if queue.available else "DOWN",
                f"{queue.cores_free}/{queue.cores_total}", f"{queue.nodes_free}/{queue.nodes_total}",
                str(queue.jobs_running), str(queue.jobs_pending),
                str(limits.max_walltime) if limits and limits.max_walltime else (queue.max_walltime or "-"),
                "yes" if limits else "no",
            ))
    _table(("CLUSTER", "QUEUE", "STATE", "CORES FREE", "NODES FREE", "RUNNING", "PENDING", "MAX WALLTIME",
            "IN SITE CONFIG"), rows)
    return 0


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    for row in (header, *rows):
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="hpchub", description=__doc__)
    commands = top.add_subparsers(dest="command_name", required=True)

    check = commands.add_parser("check", help="validate site configs; exit 1 and list every problem")
    check.add_argument("site", nargs="+", help="site config YAML file(s)")
    check.add_argument("--live", action="store_true",
                       help="also ask each cluster's scheduler: queues present and up, queue limits within the "
                            "scheduler's, PrivateData (Slurm), the submit mode's commands, and (with --probe-user) "
                            "a probe job per profile environment")
    check.add_argument("--probe-user", metavar="USER",
                       help="with --live: run hpchub-job and a probe job per profile environment as USER")
    check.add_argument("--no-probe", action="store_true", help="with --live: no probe jobs")
    check.add_argument("--internal-ssl", action="store_true",
                       help="the hub runs with c.JupyterHub.internal_ssl = True (network.to_hub: reverse or an "
                            "http:// URL is an error without it)")
    check.set_defaults(func=cmd_check)

    def job_args(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("site", help="site config YAML file")
        sub.add_argument("--profile", required=True, help="profile slug")
        sub.add_argument("--user", required=True, help="unix user the job runs as")
        sub.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                         help="a user choice (cores, memory, walltime, gpus, nodes, queue, account, qos, reservation), "
                              "validated like the spawn form; repeatable")
        sub.add_argument("--command", help="run this instead of the Jupyter server (to test a profile's environment)")
        sub.add_argument("--server", default="", help="a named server's name (its job and files are named after it)")

    render = commands.add_parser("render", help="print the job script that would be submitted")
    job_args(render)
    render.add_argument("--engines", type=int, metavar="N", help="show the ipyparallel engine job for N engines instead")
    render.set_defaults(func=cmd_render)

    submit = commands.add_parser("submit", help="render and submit a job as the user; print the job id")
    job_args(submit)
    submit.set_defaults(func=cmd_submit)

    status = commands.add_parser("status", help="hpchub jobs (or the given ones) as the scheduler sees them")
    status.add_argument("site")
    status.add_argument("job_ids", nargs="*")
    status.add_argument("--cluster")
    status.add_argument("--users", help="comma-separated users to ask about (default: everybody)")
    status.add_argument("--all", action="store_true", help="list all jobs, not only hpchub's")
    status.set_defaults(func=cmd_status)

    cancel = commands.add_parser("cancel", help="cancel jobs as their user")
    cancel.add_argument("site")
    cancel.add_argument("job_ids", nargs="+")
    cancel.add_argument("--user", required=True)
    cancel.add_argument("--cluster")
    cancel.set_defaults(func=cmd_cancel)

    link = commands.add_parser("link", help="print a spawn link with these choices (for a class), checked like the form; "
                                                 "it opens the spawn form prefilled, and Start starts the server")
    link.add_argument("site", help="site config YAML file")
    link.add_argument("--profile", required=True, help="profile slug")
    link.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                      help="a choice (cores, memory such as 4G, walltime such as 2:00:00, ...), validated like the "
                           "spawn form; repeatable")
    link.add_argument("--hub-url", default="", help="the hub's public URL, e.g. https://hub.example.org "
                                                    "(default: print the path only)")
    link.add_argument("--user", help="with --server: the user whose named server the link starts")
    link.add_argument("--server", help="with --user: a named server's name")
    link.set_defaults(func=cmd_link)

    from .doctor import EXIT_CODES

    doctor = commands.add_parser(
        "doctor", help="submit a probe job as a user and say why a server of a profile would not start",
        description="Submit a probe job AS the user, built like the profile's server job, and report the node's "
                    "Python, jupyterhub (against the hub's), hpchub, whether the node reaches the hub API and "
                    "whether the hub reaches a port on the node.",
        epilog="exit codes: " + "; ".join(f"{code} {what}" for code, what in EXIT_CODES.items()))
    doctor.add_argument("site", help="site config YAML file")
    doctor.add_argument("--profile", required=True, help="profile slug")
    doctor.add_argument("--user", required=True, help="unix user the probe job runs as")
    doctor.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a user choice, as for render/submit (e.g. --set queue=long.q); repeatable")
    doctor.add_argument("--hub-api", default="", metavar="URL",
                        help="the hub API URL jobs call (default: the cluster's network.to_hub URL, else "
                             "http://ADDRESS-OF-THIS-HOST:8081/hub/api)")
    doctor.add_argument("--start-timeout", type=float, default=120.0, metavar="SECONDS",
                        help="how long the probe job may wait in the queue (default 120)")
    doctor.add_argument("--report-timeout", type=float, default=90.0, metavar="SECONDS",
                        help="how long a started probe may take to report (default 90)")
    doctor.add_argument("--connect-timeout", type=float, default=10.0, metavar="SECONDS",
                        help="how long a connection between the hub and the node, either way, may go unanswered "
                             "before it counts as blocked (default 10)")
    doctor.set_defaults(func=cmd_doctor)

    queues = commands.add_parser("queues", help="live queues: free cores and nodes, running and pending jobs, limits")
    queues.add_argument("site")
    queues.add_argument("--cluster")
    queues.set_defaults(func=cmd_queues)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except SiteConfigError as error:
        print(error.format(), file=sys.stderr)
    except OptionsError as error:
        for field, message in error.problems.items():
            print(f"hpchub: {field}: {message}", file=sys.stderr)
    except (RenderError, CommandError, ParseError, AccountRefused, AllocationsUnavailable) as error:
        print(f"hpchub: {error}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
