"""An instructor's view of a class: the hub page ``/hub/hpchub/class/GROUP``.

It lists the servers of a JupyterHub group's members (profile, the job's state, queue, node, time
left, last activity), with "join" per server, "start for all" (one profile, at most
``ClassView.start_concurrency`` submissions at once, servers already starting or running skipped)
and "stop all". Who may see or do what is JupyterHub's own scopes, checked for each server on every
request: ``read:servers`` to see a server, ``start:servers`` / ``delete:servers`` to start / stop it,
``access:servers`` to join it, ``read:users:activity`` for its last activity. :func:`class_roles`
gives the role that grants exactly these on one group's servers to an instructor group: no admin
rights. A start goes through JupyterHub's spawn as if the student had asked: the student's spawner
checks the profile against the student's own profiles and submits the job as the student.

The table is made from cached data (HPCSpawner.page_info: the shared poller's last answer, the saved
state): a page view asks no scheduler anything.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jupyterhub import orm
from jupyterhub.handlers.base import BaseHandler
from jupyterhub.utils import url_path_join
from tornado import web
from traitlets import Integer
from traitlets.config import Configurable

from ..core import accounts
from ..core.config import Profile, SiteConfig
from . import walltime

log = logging.getLogger("hpchub.teaching")

ROUTE = r"/hpchub/class/([^/]+)"  # below the hub prefix: /hub/hpchub/class/GROUP
TEMPLATE = "hpchub-class.html"

# What an instructor group gets on its course group's members (class_roles): see them and their
# servers, start, stop and join those servers. servers = read:servers + start:servers + delete:servers.
CLASS_SCOPES = ("list:users", "read:users", "servers", "access:servers")
# A group name that can stand in a scope filter (!group=NAME) and a URL path segment.
GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,254}")
_ROLE_NAME = re.compile(r"[a-z][a-z0-9\-_~.]{1,253}[a-z0-9]")  # JupyterHub's rule for role names


class ClassView(Configurable):
    """The instructor's class page, ``/hub/hpchub/class/GROUP`` (see [teaching](../../teaching.md))."""

    start_concurrency = Integer(
        4,
        min=1,
        config=True,
        help="""How many servers "start for all" submits at once. Each start counts until its job is
        submitted (or its spawn fails or finishes), so a class of 60 reaches the scheduler 4 by 4,
        not 60 submissions in the same second; JupyterHub's own `concurrent_spawn_limit` still applies.""",
    )


def class_roles(classes: Mapping[str, str | Sequence[str]]) -> list[dict[str, Any]]:
    """JupyterHub roles for ``{course group: instructor group(s)}``: each lets the members of the
    instructor groups see the course group's members and their servers, start, stop and join those
    servers (the scopes CLASS_SCOPES filtered by ``!group=COURSE``), nothing else. For
    ``c.JupyterHub.load_roles``; the groups themselves come from ``load_groups`` or the authenticator."""
    roles = []
    for course, instructors in classes.items():
        groups = [instructors] if isinstance(instructors, str) else list(instructors)
        if not groups:
            raise ValueError(f"class {course!r}: no instructor group")
        for name in (course, *groups):
            if not isinstance(name, str) or not GROUP_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a group name class_roles accepts (letters, digits and ._@+-, "
                                 "starting with a letter or digit)")
        roles.append({
            "name": role_name(course),
            "description": f"Instructors of {course}: see, start, stop and join the servers of its members",
            "groups": groups,
            "scopes": [f"{scope}!group={course}" for scope in CLASS_SCOPES],
        })
    return roles


def role_name(course: str) -> str:
    """The role's name for ``course``: ``instructors-of-COURSE``, made a valid role name (lower case;
    a short hash keeps two courses apart whose names differ only in what had to be replaced)."""
    base = re.sub(r"[^a-z0-9\-_~.]", "-", course.lower())
    name = f"instructors-of-{base}"
    if base != course or not _ROLE_NAME.fullmatch(name):
        name = f"instructors-of-{base[:200].rstrip('-_~.')}-{hashlib.sha256(course.encode()).hexdigest()[:8]}"
    return name


def course_profiles(site: SiteConfig, course: str) -> list[Profile]:
    """The profiles "start for all" offers: those the course group may use (naming nobody, or the
    group in ``hub_groups``). Each start is checked again against the student's own profiles."""
    who = accounts.Identity(hub_groups=frozenset({course}))
    return [profile for profile in site.profiles if accounts.profile_allows(profile, who)]


def activity_text(last: datetime.datetime | None, now: float | None = None) -> str:
    """A last activity (JupyterHub's naive UTC datetime) as ``5 min ago``; "" for none."""
    if last is None:
        return ""
    if last.tzinfo is None:
        last = last.replace(tzinfo=datetime.timezone.utc)
    now = time.time() if now is None else now
    return f"{walltime.duration_text(now - last.timestamp())} ago"


@dataclass
class ServerRow:
    """One server of a member as the page shows it (only what the viewer may see)."""

    user: str
    server: str  # "" for the default server
    status: str  # no server, stopped, starting, ready, stopping, failed
    profile: str = ""
    job_id: str = ""
    job_state: str = ""
    queue: str = ""
    node: str = ""
    time_left: str = ""
    last_activity: str = ""
    note: str = ""  # why the last job ended, or why the last start failed
    join_url: str = ""
    can_stop: bool = False


@dataclass
class ActionReport:
    """What the last "start for all" / "stop all" of a class did, per server (``user/server``)."""

    action: str
    by: str
    at: float
    results: dict[str, str] = field(default_factory=dict)
    running: bool = True

    @property
    def at_text(self) -> str:
        return time.strftime("%H:%M:%S", time.localtime(self.at))


# The last action per class (group name), shown on its page until the next one; in the hub's memory.
_reports: dict[str, ActionReport] = {}
_tasks: set[asyncio.Future] = set()  # actions still running (referenced so they are not collected)


def _label(user_name: str, server_name: str) -> str:
    return f"{user_name}/{server_name}" if server_name else user_name


def _live_spawner(spawner: Any) -> Any:
    """The HPCSpawner behind a running server (wrapspawner: its child)."""
    child = getattr(spawner, "child_spawner", None)
    return child if child is not None else spawner


def _failure(spawner: Any) -> str:
    """Why the last start of a live spawner failed, if it did (JupyterHub keeps the exception)."""
    future = getattr(spawner, "_spawn_future", None)
    if future is None or not future.done() or future.cancelled() or future.exception() is None:
        return ""
    error = future.exception()
    return str(getattr(error, "log_message", None) or error).splitlines()[0][:300]


class ClassHandler(BaseHandler):
    """``/hub/hpchub/class/GROUP``: GET the page, POST ``action=start|stop`` (xsrf-protected forms)."""

    _group: str = ""  # the class of this request, once checked (its members are all _may is asked about)

    def _may(self, scope: str, user_name: str, server_name: str | None = None) -> bool:
        """Whether the viewer holds ``scope`` on a server of ``user_name`` (or on the user), who must be a
        member of the class: a scope on the whole group answers for every member."""
        if self._group and self.has_scope(f"{scope}!group={self._group}"):
            return True
        target = f"server={user_name}/{server_name}" if server_name is not None else f"user={user_name}"
        return bool(self.has_scope(f"{scope}!{target}"))

    def _class_group(self, group_name: str) -> orm.Group:
        """The group, if the viewer may see its servers (403 otherwise, before its existence is known)."""
        if not GROUP_NAME.fullmatch(group_name) or not self.has_scope(f"read:servers!group={group_name}"):
            raise web.HTTPError(403, f"you may not see the servers of class {group_name}")
        group = orm.Group.find(self.db, name=group_name)
        if group is None:
            raise web.HTTPError(404, f"there is no group {group_name}")
        self._group = group.name
        return group

    def _members(self, group: orm.Group) -> list:
        """The group's members whose servers the viewer may see, as JupyterHub User objects, by name."""
        return [self._user_from_orm(member) for member in sorted(group.users, key=lambda member: member.name)
                if self._may("read:servers", member.name)]

    def _site(self) -> SiteConfig | None:
        """The site config, through the viewer's own spawner (None if it is no HPCSpawner)."""
        spawner = _live_spawner(self.current_user.spawner)
        return spawner.site if hasattr(spawner, "site") and hasattr(spawner, "visible_profiles") else None

    # -- the page ------------------------------------------------------------------------------
    @web.authenticated
    async def get(self, group_name: str) -> None:
        group = self._class_group(group_name)
        site = self._site()
        queues = {profile.slug: profile.queue for profile in site.profiles} if site is not None else {}
        rows = [row for user in self._members(group) for row in self._rows(user, queues)]
        profiles = course_profiles(site, group.name) if site is not None else []
        may_start = any(self._may("start:servers", row.user) for row in rows)
        html = await self.render_template(
            TEMPLATE, group=group.name, rows=rows, profiles=profiles if may_start else [],
            may_stop=any(row.can_stop for row in rows), report=_reports.get(group.name),
            allow_named_servers=self.allow_named_servers,
            class_url=url_path_join(self.hub.base_url, "hpchub/class", group.name),
        )
        self.finish(html)

    def _rows(self, user: Any, queues: Mapping[str, str]) -> list[ServerRow]:
        rows = []
        activity = self._may("read:users:activity", user.name)
        for spawner in user.all_spawners():
            if not self._may("read:servers", user.name, spawner.name):
                continue
            row = self._row(user, spawner, queues, activity)
            if row.status != "stopped" or row.profile or row.note or row.last_activity:  # else: never used
                rows.append(row)
        return rows or [ServerRow(user.name, "", "no server")]

    def _row(self, user: Any, spawner: Any, queues: Mapping[str, str], activity: bool) -> ServerRow:
        name = spawner.name
        row = ServerRow(user.name, name, "stopped")
        orm_spawner = spawner if isinstance(spawner, orm.Spawner) else spawner.orm_spawner
        row.profile = str((orm_spawner.user_options or {}).get("profile") or "")
        if activity:
            row.last_activity = activity_text(orm_spawner.last_activity)
        if isinstance(spawner, orm.Spawner):  # not running: what the saved state says about its last job
            end_reason = str((spawner.state or {}).get("end_reason") or "")
            row.note = end_reason if end_reason != walltime.STOPPED else ""
            return row
        live = _live_spawner(spawner)
        row.profile = str(getattr(live, "job_profile", "") or row.profile)
        if spawner.pending:
            row.status = "starting" if spawner.pending == "spawn" else "stopping"
        elif spawner.ready:
            row.status = "ready"
        elif _failure(spawner):
            row.status, row.note = "failed", _failure(spawner)
        if hasattr(live, "page_info"):
            info = live.page_info()
            row.job_id, row.job_state = str(info["job_id"]), str(info["state"])
            row.queue = str(info.get("queue") or (queues.get(row.profile, "") if row.job_id else ""))
            row.node, row.time_left = str(info.get("node") or ""), str(info["time_left"])
            if not row.note and info["end_reason"] != walltime.STOPPED:  # "stopped (stopped)" says nothing
                row.note = str(info["end_reason"] or "")
        if row.status == "ready" and self._may("access:servers", user.name, name):
            row.join_url = user.server_url(name)
        row.can_stop = row.status in ("starting", "ready") and self._may("delete:servers", user.name, name)
        return row

    # -- the actions ---------------------------------------------------------------------------
    @web.authenticated
    async def post(self, group_name: str) -> None:
        group = self._class_group(group_name)
        action = self.get_body_argument("action", "")
        if action == "start":
            report = self._start_all(group)
        elif action == "stop":
            report = self._stop(group)
        else:
            raise web.HTTPError(400, "action must be start or stop")
        _reports[group.name] = report
        self.redirect(url_path_join(self.hub.base_url, "hpchub/class", group.name), status=303)

    def _run(self, report: ActionReport, jobs: list) -> None:
        async def run_all() -> None:
            try:
                await asyncio.gather(*jobs)
            finally:
                report.running = False

        task = asyncio.ensure_future(run_all())
        _tasks.add(task)
        task.add_done_callback(_tasks.discard)

    def _start_all(self, group: orm.Group) -> ActionReport:
        site = self._site()
        slug = self.get_body_argument("profile", "")
        profiles = {profile.slug: profile for profile in course_profiles(site, group.name)} if site is not None else {}
        if slug not in profiles:
            raise web.HTTPError(400, f"profile {slug!r} is not one that class {group.name} may use")
        server_name = self.get_body_argument("server", "").strip()
        if server_name and not self.allow_named_servers:
            raise web.HTTPError(400, "named servers are not enabled on this hub")
        report = ActionReport(f"start for all ({profiles[slug].name})", self.current_user.name, time.time())
        limit = asyncio.Semaphore(ClassView(config=self.settings["config"]).start_concurrency)
        jobs = []
        for user in self._members(group):
            label = _label(user.name, server_name)
            if not self._may("start:servers", user.name, server_name):
                continue  # not the viewer's to start: not listed in the report either
            spawner = user.spawners[server_name] if server_name in user.orm_spawners else None
            if spawner is not None and spawner.pending:
                report.results[label] = "skipped: already starting" if spawner.pending == "spawn" \
                    else f"skipped: {spawner.pending} pending"
            elif spawner is not None and spawner.ready:
                report.results[label] = "skipped: already running"
            else:
                report.results[label] = "waiting for its turn"
                jobs.append(self._start_one(user, server_name, {"profile": slug}, report, limit))
        self.log.info("%s: start for all of class %s (profile %s, server %r): %d servers", self.current_user.name,
                      group.name, slug, server_name, len(jobs))
        self._run(report, jobs)
        return report

    async def _start_one(self, user: Any, server_name: str, options: dict[str, str], report: ActionReport,
                         limit: asyncio.Semaphore) -> None:
        label = _label(user.name, server_name)
        async with limit:
            report.results[label] = "submitting"
            try:
                if server_name:
                    await self._check_named_server_request(user, server_name, server_name)
                spawner = user.get_or_create_spawner(server_name, server_name, replace_failed=True)
                if spawner.active:  # started meanwhile (by the student?)
                    report.results[label] = "skipped: already running"
                    return
                spawn = asyncio.ensure_future(self.spawn_single_user(user, server_name, options=dict(options)))
                # The slot is free once the job is submitted: the rest of the wait is the queue's.
                while not spawn.done() and not getattr(_live_spawner(spawner), "job_id", ""):
                    await asyncio.wait({spawn}, timeout=0.2)
            except Exception as error:
                report.results[label] = f"refused: {_message(error)}"
                return
        if spawn.done():
            _record_start(report, label, spawner, spawn)
        else:
            report.results[label] = "submitted"
            spawn.add_done_callback(lambda done: _record_start(report, label, spawner, done))

    def _stop(self, group: orm.Group) -> ActionReport:
        """Stop every server of the class the viewer may stop (``user`` and ``server`` given: that one)."""
        only_user = self.get_body_argument("user", None)
        only_server = self.get_body_argument("server", "")
        members = {user.name: user for user in self._members(group)}
        targets = []
        if only_user is not None:
            if only_user not in members or not self._may("delete:servers", only_user, only_server):
                raise web.HTTPError(403, f"you may not stop {_label(only_user, only_server)} from class {group.name}")
            user = members[only_user]
            if only_server in user.spawners and user.spawners[only_server].active:
                targets.append((user, only_server))
            action = f"stop {_label(only_user, only_server)}"
        else:
            for user in members.values():
                for name, spawner in list(user.spawners.items()):
                    if spawner.active and self._may("delete:servers", user.name, name):
                        targets.append((user, name))
            action = "stop all"
        report = ActionReport(action, self.current_user.name, time.time())
        limit = asyncio.Semaphore(ClassView(config=self.settings["config"]).start_concurrency)
        for user, name in targets:
            report.results[_label(user.name, name)] = "stopping"
        self.log.info("%s: %s of class %s: %d servers", self.current_user.name, action, group.name, len(targets))
        self._run(report, [self._stop_one(user, name, report, limit) for user, name in targets])
        return report

    async def _stop_one(self, user: Any, server_name: str, report: ActionReport, limit: asyncio.Semaphore) -> None:
        label = _label(user.name, server_name)
        async with limit:
            try:
                spawner = user.spawners[server_name]
                if spawner.pending == "spawn":
                    # A start still waiting (its job in the queue): interrupted as JupyterHub's REST API does;
                    # the spawner cancels the job.
                    if spawner._spawn_future is not None:
                        spawner._spawn_future.cancel()
                    deadline = time.monotonic() + 10
                    while spawner.pending == "spawn" and time.monotonic() < deadline:
                        await asyncio.sleep(0.2)
                if spawner.pending == "stop":
                    report.results[label] = "stopping"
                    return
                await self.stop_single_user(user, server_name)
            except Exception as error:
                report.results[label] = f"failed: {_message(error)}"
                return
        report.results[label] = "stopping" if spawner.pending == "stop" else "stopped"
        if spawner._stop_future is not None and not spawner._stop_future.done():
            spawner._stop_future.add_done_callback(lambda _: report.results.__setitem__(label, "stopped"))


def _message(error: BaseException) -> str:
    return str(getattr(error, "log_message", None) or error or type(error).__name__).splitlines()[0][:300]


def _record_start(report: ActionReport, label: str, spawner: Any, spawn: asyncio.Future) -> None:
    error = None if spawn.cancelled() else spawn.exception()
    if spawn.cancelled():
        report.results[label] = "cancelled"
    elif error is not None:
        report.results[label] = f"failed: {_message(error)}"
    elif spawner.ready:
        report.results[label] = "started"
    else:
        report.results[label] = "submitted"  # still starting after slow_spawn_timeout: the table says where


HANDLERS = [(ROUTE, ClassHandler)]
