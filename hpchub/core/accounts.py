"""Which unix account a hub user's servers run as.

JupyterHub's user name is whatever the authenticator says: with PAM or LDAP it is the unix name,
with OAuth it is often an e-mail address (``dora@uni.example``), which is no unix account and no
valid part of a job name. HPCSpawner turns the hub name into the unix account with
:func:`unix_account_name` (traits ``unix_account_map``, ``unix_account_domains``,
``unix_account``) and uses that account for everything that happens on the cluster: the
submission (sudo/ssh as that account), the job's files in its home, the job's name, the group
checks of the profiles and the scheduler queries about its jobs. The hub name stays what the
hub shows and routes (``/user/dora@uni.example/``).
"""

from __future__ import annotations

import grp
import inspect
import os
import pwd
import string
from collections.abc import Awaitable, Callable, Mapping, Sequence

from .config import Identity, Profile, SiteConfig, profile_allows
from .render import USERNAME_RE

# A site's own rule: the hub name (its domain already stripped, see unix_account_domains) -> the
# unix account name, or an awaitable of it.
AccountRule = str | Callable[[str], str | Awaitable[str]]

TEMPLATE_FIELDS = frozenset({"username"})


class AccountMapError(Exception):
    """The hub user has no usable unix account; the message says why and which setting decides it."""


def check_template(template: str) -> str:
    """A ``unix_account`` template, checked at config load: only ``{username}``, no format specs."""
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(template)
                  if name is not None]
    except ValueError as error:
        raise ValueError(f"HPCSpawner.unix_account {template!r}: {error}") from None
    for name, spec, conversion in fields:
        if name not in TEMPLATE_FIELDS or spec or conversion:
            raise ValueError(f"HPCSpawner.unix_account {template!r}: the only field is {{username}}, "
                             f"not {{{name}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}")
    if not fields:
        raise ValueError(f"HPCSpawner.unix_account {template!r}: must contain {{username}} (else every hub user "
                         "would run as one account)")
    return template


def strip_domain(hub_name: str, domains: Sequence[str]) -> str:
    """``dora@uni.example`` -> ``dora`` when ``uni.example`` is one of ``domains`` (any case); a
    name without ``@`` as it is. An address in another domain is refused: ``dora@elsewhere.example``
    is not the site's dora."""
    local, at, domain = hub_name.rpartition("@")
    if not at:
        return hub_name
    wanted = {d.lower().lstrip("@") for d in domains}
    if domain.lower() in wanted and local:
        return local
    if not wanted:
        raise AccountMapError(
            f"hub user {hub_name!r} has no unix account: an e-mail address is no unix name (the admins can map "
            "such names with HPCSpawner.unix_account_domains or unix_account_map)")
    raise AccountMapError(
        f"hub user {hub_name!r} has no unix account: {domain!r} is not one of the site's domains "
        f"({', '.join(sorted(wanted))}; HPCSpawner.unix_account_domains)")


async def unix_account_name(hub_name: str, exceptions: Mapping[str, str], domains: Sequence[str],
                            rule: AccountRule) -> str:
    """The unix account of hub user ``hub_name``: its entry in ``exceptions`` if it has one, else
    ``rule`` (a template with ``{username}``, or a callable) applied to the name without its
    e-mail domain (:func:`strip_domain`). The result must be a valid account name; whether the
    account exists, and is no system account or root, is the cluster's check
    (ClusterClient.check_account: over SSH only the login node knows the accounts)."""
    if hub_name in exceptions:
        name, source = exceptions[hub_name], "HPCSpawner.unix_account_map"
    else:
        base = strip_domain(hub_name, domains)
        if callable(rule):
            result = rule(base)
            name = await result if inspect.isawaitable(result) else result
        else:
            name = rule.format(username=base)
        source = "HPCSpawner.unix_account"
    if not isinstance(name, str) or not USERNAME_RE.match(name):
        raise AccountMapError(f"hub user {hub_name!r} maps to {name!r} ({source}), which is not a valid unix "
                              "account name")
    return name


def unix_groups(user_name: str) -> set[str]:
    """The unix groups of ``user_name``, secondary ones included, as NSS answers for this one user
    (os.getgrouplist works with SSSD/LDAP, which do not enumerate all groups). Blocking: call it
    off the event loop."""
    try:
        account = pwd.getpwnam(user_name)
    except KeyError:
        return set()
    names = set()
    for gid in os.getgrouplist(user_name, account.pw_gid):
        try:
            names.add(grp.getgrgid(gid).gr_name)
        except KeyError:
            pass
    return names


def identity(hub_user: str, hub_groups: frozenset[str], unix_user: str) -> Identity:
    """Who asks, in both name spaces: the hub user and its JupyterHub groups, and the unix account
    with its groups as NSS answers now. Blocking (NSS): call it off the event loop."""
    return Identity(hub_user=hub_user, hub_groups=hub_groups, unix_user=unix_user,
                    unix_groups=frozenset(unix_groups(unix_user)))


def visible_profiles(site: SiteConfig, who: Identity, fixed_slug: str | None = None) -> list[Profile]:
    """The profiles of ``site`` that ``who`` may use (:func:`profile_allows`): all of them, or only the
    one a hub pins with ``HPCSpawner.profile`` (KeyError when the site has no such profile)."""
    candidates = [site.profile(fixed_slug)] if fixed_slug else list(site.profiles)
    return [profile for profile in candidates if profile_allows(profile, who)]
