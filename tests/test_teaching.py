"""The class view's permissions and helpers (hpchub.hub.teaching), without a hub: the roles of
class_roles() through JupyterHub's own role and scope machinery (an in-memory database), the
profiles "start for all" offers, the texts. The page itself: tests/test_pages_class.py."""

from __future__ import annotations

import datetime

import pytest
from jupyterhub import orm, roles, scopes

from hpchub.core.config import parse_site_config
from hpchub.hub import teaching


@pytest.fixture
def db():
    """alice and bob in group course, tutor in group instructors, carol in neither; the default
    `user` role for all, class_roles({"course": "instructors"}) loaded."""
    session = orm.new_session_factory("sqlite://")()
    users = {name: orm.User(name=name) for name in ("alice", "bob", "carol", "tutor")}
    session.add_all(users.values())
    session.add(orm.OAuthClient(identifier="jupyterhub"))
    for name in ("alice", "carol"):
        client = orm.OAuthClient(identifier=f"jupyterhub-user-{name}")
        session.add(client)
        session.add(orm.Spawner(user=users[name], name="class", oauth_client=client))
    course, instructors = orm.Group(name="course"), orm.Group(name="instructors")
    course.users.extend([users["alice"], users["bob"]])
    instructors.users.append(users["tutor"])
    session.add_all([course, instructors])
    session.commit()
    roles.create_role(session, {"name": "user", "scopes": ["self"]})
    for user in users.values():
        roles.grant_role(session, user, "user")
    for role in teaching.class_roles({"course": "instructors"}):
        roles.create_role(session, role)
        for group in role["groups"]:
            roles.grant_role(session, orm.Group.find(session, group), role["name"])
    yield session
    session.close()


def allowed(db, user: str, scope: str) -> bool:
    held = scopes.get_scopes_for(orm.User.find(db, user))
    return bool(scopes.has_scope(scope, scopes.parse_scopes(held), db=db))


def test_an_instructor_may_see_start_stop_and_join_the_course_servers_only(db):
    for scope in ("read:servers", "start:servers", "delete:servers", "access:servers"):
        assert allowed(db, "tutor", f"{scope}!server=alice/class"), scope
        assert allowed(db, "tutor", f"{scope}!server=bob/"), scope  # any server of a member, started or not
        assert allowed(db, "tutor", f"{scope}!group=course"), scope  # what the page and the home link check
        assert not allowed(db, "tutor", f"{scope}!server=carol/class"), scope  # outside the course
        assert not allowed(db, "tutor", f"{scope}!group=instructors"), scope
    assert allowed(db, "tutor", "read:users:activity!user=alice")
    assert not allowed(db, "tutor", "read:users:activity!user=carol")


def test_an_instructor_gets_no_admin_rights_and_students_none_over_each_other(db):
    held = scopes.get_scopes_for(orm.User.find(db, "tutor"))
    # every scope the role adds is filtered to the course group; nothing unfiltered but the user's own
    assert {scope for scope in held if "!" not in scope} <= {"read:users:shares", "users:shares"} | {
        scope for scope in held if scope.startswith(("read:tokens", "users:activity"))}, sorted(held)
    assert not any(scope.startswith(("admin:", "tokens", "shares", "groups", "proxy", "read:roles"))
                   and "!user=tutor" not in scope for scope in held), sorted(held)
    for scope in ("read:servers", "delete:servers", "access:servers"):
        assert not allowed(db, "alice", f"{scope}!server=bob/"), scope
        assert not allowed(db, "alice", f"{scope}!group=course"), scope


def test_the_instructor_role_reaches_the_oauth_token_of_a_students_server(db):
    """Joining: the token tutor gets for alice's server keeps access to it (roles through groups count
    for tokens); none can be made for carol's server."""
    tutor = orm.User.find(db, "tutor")
    want = "access:servers!server=alice/class"
    token = orm.APIToken.new(user=tutor, scopes=[want], client_id="jupyterhub-user-alice")
    assert want in scopes.get_scopes_for(orm.APIToken.find(db, token))
    with pytest.raises(ValueError, match="not held by User tutor"):
        orm.APIToken.new(user=tutor, scopes=["access:servers!server=carol/class"], client_id="jupyterhub-user-carol")


def test_class_roles_one_role_per_course_with_valid_names():
    made = teaching.class_roles({"course": "instructors", "Physics_101": ["tas", "lecturers"]})
    assert made[0] == {
        "name": "instructors-of-course",
        "description": "Instructors of course: see, start, stop and join the servers of its members",
        "groups": ["instructors"],
        "scopes": ["list:users!group=course", "read:users!group=course", "servers!group=course",
                   "access:servers!group=course"],
    }
    assert made[1]["groups"] == ["tas", "lecturers"] and made[1]["name"].startswith("instructors-of-physics_101-")
    assert made[1]["name"] != teaching.role_name("physics_101")  # two courses never share a role
    for role in made:
        roles._validate_role_name(role["name"])  # JupyterHub's own check (raises if invalid)


@pytest.mark.parametrize("classes", [{"": "instructors"}, {"course": ""}, {"a!b": "instructors"},
                                     {"course": "x=y"}, {"course": []}, {"course/1": "instructors"}])
def test_class_roles_refuses_names_that_cannot_stand_in_a_scope_filter(classes):
    with pytest.raises(ValueError):
        teaching.class_roles(classes)


def test_start_for_all_offers_the_profiles_the_course_group_may_use():
    text = """
site: test
clusters:
  c: {scheduler: slurm, submit: {via: local}, queues: {debug: {}}}
profiles:
  - {slug: open, name: Open, cluster: c, queue: debug, resources: {cores: 1, memory: 1G, walltime: "01:00:00"}}
  - {slug: course, name: Course, cluster: c, queue: debug, hub_groups: [course],
     resources: {cores: 1, memory: 1G, walltime: "01:00:00"}}
  - {slug: other, name: Other, cluster: c, queue: debug, hub_groups: [other],
     resources: {cores: 1, memory: 1G, walltime: "01:00:00"}}
  - {slug: staff, name: Staff, cluster: c, queue: debug, unix_groups: [staff],
     resources: {cores: 1, memory: 1G, walltime: "01:00:00"}}
"""
    site = parse_site_config(text, "site.yaml")
    assert [profile.slug for profile in teaching.course_profiles(site, "course")] == ["open", "course"]


def test_last_activity_text():
    now = 1_000_000.0
    assert teaching.activity_text(None, now) == ""
    naive_utc = datetime.datetime.fromtimestamp(now - 300, datetime.timezone.utc).replace(tzinfo=None)
    assert teaching.activity_text(naive_utc, now) == "5 min ago"
