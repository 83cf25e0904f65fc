"""hpchub.hub.sharing without a hub: JupyterHub's group shares for tokens (the upstream defect, still
there, and hpchub's fix), and the roles an admin loads. In-memory sqlite through JupyterHub's own orm.
The page itself, grant and revoke in real browsers: tests/test_e2e_sharing.py."""

from __future__ import annotations

import re

import pytest
from jupyterhub import orm, roles, scopes

from hpchub.hub import sharing

SHARED = "access:servers!server=alice/"


@pytest.fixture
def db():
    """alice's default server shared with the group 'course' (bob is a member; carol is not)."""
    session = orm.new_session_factory("sqlite://")()
    roles.create_role(session, {"name": "user", "scopes": ["self"]})
    users = {name: orm.User(name=name) for name in ("alice", "bob", "carol")}
    session.add_all(users.values())
    clients = {name: orm.OAuthClient(identifier=name) for name in ("jupyterhub", "jupyterhub-user-alice",
                                                                   "jupyterhub-user-carol")}
    session.add_all(clients.values())
    session.commit()
    for user in users.values():
        roles.grant_role(session, user, "user")
    spawner = orm.Spawner(user=users["alice"], name="", oauth_client=clients["jupyterhub-user-alice"])
    session.add(spawner)
    group = orm.Group(name="course")
    group.users.append(users["bob"])
    session.add(group)
    session.commit()
    orm.Share.grant(session, spawner, group)
    yield session
    session.close()


def token(db, user: str, scopes_: list[str] | None = None, client: str = "jupyterhub") -> orm.APIToken:
    owner = orm.User.find(db, user)
    return orm.APIToken.find(db, orm.APIToken.new(user=owner, scopes=scopes_, client_id=client))


def upstream_get_scopes_for():
    return getattr(scopes.get_scopes_for, "__wrapped__", scopes.get_scopes_for)


def test_upstream_jupyterhub_still_gives_tokens_no_group_shares(db):
    """The canary: when this fails, JupyterHub fixed its defect and hpchub's fix can go (or stay
    off: GROUP_SHARE_DEFECT_MAJORS)."""
    get_scopes_for = upstream_get_scopes_for()
    assert SHARED in get_scopes_for(orm.User.find(db, "bob"))  # the user has the share...
    assert SHARED not in get_scopes_for(token(db, "bob"))  # ...his API token not
    assert SHARED not in get_scopes_for(token(db, "bob", ["read:users:name!user"], "jupyterhub-user-alice"))  # nor OAuth


def test_with_the_fix_a_groups_members_tokens_reach_the_shared_server_and_nothing_more(db):
    get_scopes_for = sharing.with_group_shares(upstream_get_scopes_for())
    assert SHARED in get_scopes_for(token(db, "bob"))  # API token ("inherit": all the user may)
    assert SHARED in get_scopes_for(token(db, "bob", ["read:users:name!user"], "jupyterhub-user-alice"))  # OAuth
    # A token for something else does not grow the share: a narrow hub token, an OAuth token of another server.
    assert SHARED not in get_scopes_for(token(db, "bob", ["read:users:name!user"]))
    assert SHARED not in get_scopes_for(token(db, "bob", ["read:users:name!user"], "jupyterhub-user-carol"))
    assert SHARED not in get_scopes_for(token(db, "carol"))  # not a member
    bobs = token(db, "bob")
    spawner = orm.User.find(db, "alice").orm_spawners[""]
    orm.Share.revoke(db, spawner, orm.Group.find(db, "course"))
    assert SHARED not in get_scopes_for(bobs)  # revoked: gone at once


def test_the_fix_is_installed_where_jupyterhub_looks_it_up_once():
    from jupyterhub.apihandlers import base as api_base

    assert sharing.install_group_share_fix()
    installed = scopes.get_scopes_for
    assert sharing.install_group_share_fix()
    assert scopes.get_scopes_for is installed is api_base.get_scopes_for
    assert installed.__wrapped__ is upstream_get_scopes_for() and not hasattr(installed.__wrapped__, "__wrapped__")


def test_the_sharing_roles_are_the_user_role_with_shares():
    (role,) = sharing.sharing_roles()
    assert role["name"] == "user" and set(role["scopes"]) == {"self", "shares!user", "read:users:name", "read:groups:name"}
    (codes_only,) = sharing.sharing_roles(by_name=False)
    assert set(codes_only["scopes"]) == {"self", "shares!user"}
    scopes._check_scopes_exist(role["scopes"])  # every scope is one JupyterHub knows


def server(sharing: bool = True, ready: bool = True, name: str = "lab"):
    """What home_page_entry reads of a running HPCSpawner: alice's server 'lab'."""
    from types import SimpleNamespace

    return SimpleNamespace(sharing=sharing, ready=ready, name=name, hub=SimpleNamespace(base_url="/hub/"),
                           user=SimpleNamespace(name="alice", db=None))


def test_the_home_page_links_a_ready_server_when_sharing_is_on_and_the_user_may_share():
    may = scopes.parse_scopes({"shares!user=alice", "read:shares!user=alice"})
    assert sharing.home_page_entry(server(), may) == {"url": "/hub/hpchub/share/alice/lab", "allowed": True}
    # The default server's page (its name is empty) ends in "/", as the page's route wants it.
    assert sharing.home_page_entry(server(name=""), may)["url"] == "/hub/hpchub/share/alice/"
    assert re.fullmatch(sharing.ROUTE, "/hpchub/share/alice/") and re.fullmatch(sharing.ROUTE, "/hpchub/share/alice/lab")
    assert sharing.home_page_entry(server(sharing=False), may) is None
    assert sharing.home_page_entry(server(ready=False), may) is None


def test_sharing_on_without_the_shares_scope_is_said_on_the_page_and_in_the_log(caplog):
    sharing._warned.discard("alice")
    only_self = scopes.parse_scopes({"read:shares!user=alice", "access:servers!user=alice"})
    with caplog.at_level("WARNING", logger="hpchub.sharing"):
        assert sharing.home_page_entry(server(), only_self) == {"url": "/hub/hpchub/share/alice/lab", "allowed": False}
        sharing.home_page_entry(server(), only_self)
    (record,) = caplog.records  # once per user, not per page load
    assert "sharing is on (HPCSpawner.sharing) but user alice has no 'shares' scope" in record.getMessage()
    assert "sharing_roles()" in record.getMessage()
