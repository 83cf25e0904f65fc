"""Sharing a running server with other hub users: JupyterHub's own sharing (its ``orm.Share`` and
``orm.ShareCode``, its scopes), with a page and a fix.

- ``sharing_roles()``: the ``user`` role an admin loads so that users may share (JupyterHub's default
  ``user`` role may not): ``c.JupyterHub.load_roles += sharing_roles()``.
- The page ``/hub/hpchub/share/OWNER/SERVER`` (``SharePage``, template ``hpchub-share.html``), linked
  from the home page for each ready server when ``HPCSpawner.sharing`` is on: share with a user or a
  group, create a share-code link with an expiry, list and revoke. Plain HTML forms with the hub's
  xsrf token, no JavaScript; every action makes the same scope checks as JupyterHub's REST handlers
  (``jupyterhub/apihandlers/shares.py``), so the page can do nothing the REST API would refuse.
- ``install_group_share_fix()``: JupyterHub 6.1's tokens miss the shares a user has through a group
  (``scopes.get_scopes_for`` adds a token owner's direct shares only), so a member of a group a server
  is shared with passes the hub's authorize page and is then refused by the server. Installed at
  import, for the JupyterHub versions known to have the defect; tests/test_sharing.py checks that the
  defect still exists upstream (so we notice when it is fixed) and that the fix closes it.

Whoever joins a shared server runs code there as its owner (docs/production.md, "Security: who runs
what"); the page says so.
"""

from __future__ import annotations

import functools
import logging
from datetime import datetime, timezone
from typing import Any

from jupyterhub import orm
from jupyterhub.handlers.base import BaseHandler
from jupyterhub.utils import url_escape_path, url_path_join
from tornado import web
from tornado.httputil import url_concat

log = logging.getLogger("hpchub.sharing")

ROUTE = r"/hpchub/share/([^/]+)/([^/]*)"  # below the hub prefix: /hub/hpchub/share/OWNER/SERVER
TEMPLATE = "hpchub-share.html"

# The share-code lifetimes the page offers (JupyterHub accepts 60 s to 1 year), in seconds.
CODE_LIFETIMES = {3600: "1 hour", 86400: "1 day", 7 * 86400: "1 week"}

# JupyterHub versions whose tokens miss group shares (scopes.get_scopes_for); checked by a canary test.
GROUP_SHARE_DEFECT_MAJORS = (5, 6)


def sharing_roles(by_name: bool = True) -> list[dict[str, Any]]:
    """The roles users need to share their servers, for ``c.JupyterHub.load_roles``: the ``user`` role
    with ``shares!user`` (share one's own servers, make share codes) and, with ``by_name``, the right
    to name the users and groups to share with (``read:users:name``, ``read:groups:name``: every user
    may then learn every user's and group's name). Without ``by_name``: share codes only."""
    scopes = ["self", "shares!user"]
    if by_name:
        scopes += ["read:users:name", "read:groups:name"]
    return [{"name": "user", "description": "Standard permissions for users, and sharing their servers",
             "scopes": scopes}]


# -- who may do what --------------------------------------------------------------------------------
def server_filter(owner: str, server_name: str) -> str:
    return f"server={owner}/{server_name}"


def access_scope(owner: str, server_name: str) -> str:
    """The scope a share grants (JupyterHub's default for a share and a share code)."""
    return f"access:servers!{server_filter(owner, server_name)}"


def share_page_path(hub_base_url: str, owner: str, server_name: str) -> str:
    """``/hub/hpchub/share/OWNER/SERVER``; the default server's ends in ``/`` (its name is empty)."""
    return url_path_join(hub_base_url, "hpchub/share", url_escape_path(owner)) + "/" + url_escape_path(server_name)


def sharing_enabled(spawner: Any) -> bool:
    """Is ``HPCSpawner.sharing`` on for this server (a wrapspawner's running child counts)?"""
    live = getattr(spawner, "child_spawner", None) or spawner
    return bool(getattr(live, "sharing", False))


_warned: set[str] = set()


def warn_cannot_share(owner: str) -> None:
    """Say in the hub's log, once per user and process, that sharing is on but this user's roles
    do not allow it (the admin forgot sharing_roles())."""
    if owner not in _warned:
        _warned.add(owner)
        log.warning("hpchub: sharing is on (HPCSpawner.sharing) but user %s has no 'shares' scope on their servers: "
                    "load the 'user' role of hpchub.hub.sharing.sharing_roles() (scopes 'shares!user', "
                    "'read:users:name', 'read:groups:name'), see docs/sharing.md", owner)


# -- the page ---------------------------------------------------------------------------------------
def _when(moment: datetime | None) -> str:
    """A database time (naive UTC) as the page shows it."""
    if moment is None:
        return ""
    return moment.replace(tzinfo=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


class SharePage(BaseHandler):
    """GET: the server's shares and codes, and the forms; POST: one action (``action`` field)."""

    def _target(self, owner_name: str, server_name: str) -> tuple[Any, Any, bool]:
        """(owner, orm spawner, may_share), or 404 for anyone who may not even read its shares."""
        owner = self.find_user(owner_name)
        orm_spawner = owner.orm_spawners.get(server_name) if owner is not None else None
        if owner is None or orm_spawner is None or not sharing_enabled(owner.spawners[server_name]):
            raise web.HTTPError(404, f"no server {owner_name}/{server_name} to share")
        where = server_filter(owner_name, server_name)
        may_share = self.has_scope(f"shares!{where}")
        if not may_share and not self.has_scope(f"read:shares!{where}"):
            raise web.HTTPError(404, f"no server {owner_name}/{server_name} to share")
        if not may_share and self.current_user.name == owner_name:
            warn_cannot_share(owner_name)
        return owner, orm_spawner, may_share

    def _page_url(self, owner_name: str, server_name: str) -> str:
        return share_page_path(self.hub.base_url, owner_name, server_name)

    def _accept_link(self, code: str) -> str:
        path = url_concat(self.hub.base_url + "accept-share", {"code": code})
        public_url = self.settings.get("public_url")
        if public_url:
            return public_url._replace(path=path).geturl()
        return f"{self.request.protocol}://{self.request.host}{path}"

    async def _render(self, owner: Any, orm_spawner: Any, may_share: bool, status: int = 200,
                      error: str = "", new_link: str = "", new_link_expires: str = "") -> None:
        shares = sorted(({"kind": "group" if share.group else "user",
                          "name": share.group.name if share.group else share.user.name,
                          "created": _when(share.created_at)} for share in orm_spawner.shares),
                        key=lambda row: (row["kind"], row["name"]))
        codes = [{"id": code.id, "expires": _when(code.expires_at), "used": code.exchange_count or 0,
                  "last_used": _when(code.last_exchanged_at)}
                 for code in sorted(orm_spawner.share_codes, key=lambda code: code.id) if not code.expired]
        spawner = owner.spawners[orm_spawner.name]
        self.set_status(status)
        html = await self.render_template(
            TEMPLATE, owner=owner.name, server_name=orm_spawner.name, server_url=owner.server_url(orm_spawner.name),
            server_ready=spawner.ready, may_share=may_share, is_owner=self.current_user.name == owner.name,
            shares=shares, codes=codes, lifetimes=CODE_LIFETIMES, error=error, new_link=new_link,
            new_link_expires=new_link_expires, page_url=self._page_url(owner.name, orm_spawner.name))
        self.finish(html)

    @web.authenticated
    async def get(self, owner_name: str, server_name: str) -> None:
        owner, orm_spawner, may_share = self._target(owner_name, server_name)
        await self._render(owner, orm_spawner, may_share)

    @web.authenticated
    async def post(self, owner_name: str, server_name: str) -> None:
        owner, orm_spawner, may_share = self._target(owner_name, server_name)
        if not may_share:
            raise web.HTTPError(403, f"you may not share {owner_name}/{server_name}")
        action = self.get_body_argument("action", "")
        try:
            new_code = self._act(action, orm_spawner)
        except ShareRefused as refused:
            await self._render(owner, orm_spawner, may_share, refused.status, str(refused))
            return
        if new_code is not None:
            # The code exists only now (the hub keeps its hash): show it once, not behind a redirect.
            share_code, code = new_code
            await self._render(owner, orm_spawner, may_share, new_link=self._accept_link(code),
                               new_link_expires=_when(share_code.expires_at))
            return
        self.redirect(self._page_url(owner_name, server_name), status=303)

    def _act(self, action: str, orm_spawner: Any) -> tuple[Any, str] | None:
        """Do one action, with the checks JupyterHub's REST handlers make; a new code's (row, code)."""
        owner_name, server_name = orm_spawner.user.name, orm_spawner.name
        scope = access_scope(owner_name, server_name)
        if action in ("share-user", "share-group", "new-code") and not self.has_scope(scope):
            raise ShareRefused(403, f"you may not share {scope} yourself")
        if action == "share-user":
            name = self.get_body_argument("user", "").strip()
            if not self.has_scope(f"read:users:name!user={name}"):
                raise ShareRefused(403, "sharing with a user by name needs the scope 'read:users:name' (ask the admin)")
            found = self.find_user(name) if name else None
            if found is None:
                raise ShareRefused(400, f"no hub user {name!r}")
            if found.name == owner_name:
                raise ShareRefused(400, f"{name} owns this server")
            orm.Share.grant(self.db, orm_spawner, found.orm_user, scopes=[scope])
        elif action == "share-group":
            name = self.get_body_argument("group", "").strip()
            if not self.has_scope(f"read:groups:name!group={name}"):
                raise ShareRefused(403, "sharing with a group by name needs the scope 'read:groups:name' (ask the admin)")
            group = orm.Group.find(self.db, name=name) if name else None
            if group is None:
                raise ShareRefused(400, f"no hub group {name!r}")
            orm.Share.grant(self.db, orm_spawner, group, scopes=[scope])
        elif action == "new-code":
            try:
                lifetime = int(self.get_body_argument("expires_in", ""))
            except ValueError:
                lifetime = 0
            if lifetime not in CODE_LIFETIMES:
                raise ShareRefused(400, f"a link expires in one of: {', '.join(CODE_LIFETIMES.values())}")
            return orm.ShareCode.new(self.db, orm_spawner, scopes=[scope], expires_in=lifetime)
        elif action == "revoke-user":
            found = self.find_user(self.get_body_argument("user", ""))
            if found is not None:
                orm.Share.revoke(self.db, orm_spawner, found.orm_user)
        elif action == "revoke-group":
            group = orm.Group.find(self.db, name=self.get_body_argument("group", ""))
            if group is not None:
                orm.Share.revoke(self.db, orm_spawner, group)
        elif action == "revoke-code":
            code_id = self.get_body_argument("code_id", "")
            for share_code in list(orm_spawner.share_codes):
                if str(share_code.id) == code_id:
                    self.db.delete(share_code)
            self.db.commit()
        elif action == "revoke-all":
            self.db.query(orm.Share).filter_by(spawner_id=orm_spawner.id).delete()
            self.db.query(orm.ShareCode).filter_by(spawner_id=orm_spawner.id).delete()
            self.db.commit()
        else:
            raise ShareRefused(400, f"unknown action {action!r}")
        log.info("hpchub: %s did %s on %s/%s", self.current_user.name, action, owner_name, server_name)
        return None


class ShareRefused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# -- JupyterHub's group shares for tokens -----------------------------------------------------------
def with_group_shares(get_scopes_for: Any) -> Any:
    """``jupyterhub.scopes.get_scopes_for`` that also gives a user's token the shares the user has
    through a group, within what the token may do (as upstream does for direct shares)."""
    from jupyterhub import scopes
    from sqlalchemy import inspect

    @functools.wraps(get_scopes_for)
    def get_scopes_for_with_group_shares(orm_object: Any) -> Any:
        found = get_scopes_for(orm_object)
        if not isinstance(orm_object, orm.APIToken) or orm_object.user is None:
            return found
        through_groups: set[str] = set()
        for group in orm_object.user.groups:
            for share in group.shared_with_me:
                through_groups |= scopes.expand_share_scopes(share)
        if not through_groups:
            return found
        if "inherit" in orm_object.scopes:
            return set(found) | through_groups
        asked = set(scopes.expand_scopes(frozenset(orm_object.scopes), owner=orm_object.user,
                                         oauth_client=orm_object.oauth_client))
        if orm_object.client_id != "jupyterhub":
            asked |= scopes.access_scopes(orm_object.oauth_client)  # an OAuth token reaches its own server
        granted = scopes._intersect_expanded_scopes(frozenset(asked), frozenset(through_groups),
                                                    db=inspect(orm_object).session)
        return set(found) | set(granted)

    get_scopes_for_with_group_shares._hpchub_group_shares = True  # type: ignore[attr-defined]
    return get_scopes_for_with_group_shares


def install_group_share_fix() -> bool:
    """Wrap JupyterHub's get_scopes_for where it is looked up (the scopes module, and the name the
    API handlers imported), on the versions known to need it; True if installed (or already)."""
    import jupyterhub
    from jupyterhub import scopes
    from jupyterhub.apihandlers import base as api_base

    if getattr(scopes.get_scopes_for, "_hpchub_group_shares", False):
        return True
    if jupyterhub.version_info[0] not in GROUP_SHARE_DEFECT_MAJORS:
        return False
    needed = ("expand_share_scopes", "expand_scopes", "access_scopes", "_intersect_expanded_scopes")
    if not all(hasattr(scopes, name) for name in needed) or api_base.get_scopes_for is not scopes.get_scopes_for:
        log.warning("hpchub: JupyterHub %s is not shaped as expected: shares with groups are not given to "
                    "tokens (a group's members may be refused by a shared server)", jupyterhub.__version__)
        return False
    fixed = with_group_shares(scopes.get_scopes_for)
    scopes.get_scopes_for = fixed
    api_base.get_scopes_for = fixed
    return True


HANDLERS = [(ROUTE, SharePage)]


def home_page_entry(spawner: Any, parsed_scopes: Any) -> dict[str, Any] | None:
    """What the home page shows about sharing a server: None (sharing off, or the server not ready),
    else ``{"url": the share page, "allowed": may this user share it}``; a user who may not is told
    why on the page, and the hub's log says it once."""
    from jupyterhub import scopes

    if not sharing_enabled(spawner) or not spawner.ready:
        return None
    owner, name = spawner.user.name, spawner.name
    allowed = scopes.has_scope(f"shares!{server_filter(owner, name)}", parsed_scopes, db=spawner.user.db)
    if not allowed:
        warn_cannot_share(owner)
    return {"url": share_page_path(spawner.hub.base_url, owner, name), "allowed": allowed}
