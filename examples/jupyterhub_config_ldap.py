"""The demo hub (jupyterhub_config.py beside this file) with its users from LDAP: a recipe.

Users log in with their LDAP password (JupyterHub's LDAP authenticator binds as them); their servers
run as the unix account of the same name, which NSS resolves through LDAP on the hub host and the
cluster (nslcd/libnss-ldapd or SSSD); a profile with ``unix_groups: [course2026]`` in the site config is
offered to the members of that LDAP group only (hpchub asks NSS for the account's groups with
os.getgrouplist, so secondary groups, memberUid, count). tests/clusters/ldap.sh runs such a directory
on loopback; tests/test_ldap.py runs this file against it.

Everything of jupyterhub_config.py applies (its environment variables too), plus:

  HPCHUB_LDAP_SERVER       the directory's host (default 127.0.0.1)
  HPCHUB_LDAP_PORT         its port (default 3389, tests/clusters/ldap.sh)
  HPCHUB_LDAP_BASE         the base DN (default dc=hpchub,dc=test); users are uid=NAME,ou=people,BASE
  HPCHUB_LDAP_LOGIN_GROUP  only members of this LDAP group (cn=GROUP,ou=groups,BASE) may log in
                           (default ldapusers; empty: every user of the directory)
  HPCHUB_UNIX_ACCOUNT_DOMAINS  e-mail domains stripped from hub user names to find the unix account
                           (comma-separated, HPCSpawner.unix_account_domains; default none)

Production: use ldaps:// (``use_ssl = True``, port 636) or StartTLS (``tls_strategy = "before_bind"``);
the plain ldap:// of the test directory needs ``tls_strategy = "insecure"``.
"""

import os
from pathlib import Path

c = get_config()  # noqa: F821 - provided by JupyterHub
load_subconfig(str(Path(__file__).with_name("jupyterhub_config.py")))  # noqa: F821 - provided by JupyterHub

base = os.environ.get("HPCHUB_LDAP_BASE", "dc=hpchub,dc=test")

c.JupyterHub.authenticator_class = "ldapauthenticator.LDAPAuthenticator"
c.LDAPAuthenticator.server_address = os.environ.get("HPCHUB_LDAP_SERVER", "127.0.0.1")
c.LDAPAuthenticator.server_port = int(os.environ.get("HPCHUB_LDAP_PORT", "3389"))
c.LDAPAuthenticator.tls_strategy = "insecure"  # the test directory: plain LDAP on loopback only
# The user's own bind proves the password; the name must be a plain unix-style name (no LDAP filter
# characters): it becomes the hub name, and so the unix account.
c.LDAPAuthenticator.bind_dn_template = [f"uid={{username}},ou=people,{base}"]
c.LDAPAuthenticator.valid_username_regex = r"^[a-z][a-z0-9_.-]{0,31}$"
login_group = os.environ.get("HPCHUB_LDAP_LOGIN_GROUP", "ldapusers")
# The demo's fixed allowed_users (alice, bob, carol) do not apply: the directory decides.
c.Authenticator.allowed_users = set()
if login_group:
    # posixGroup members are listed by name (memberUid), which the default group_search_filter checks.
    c.LDAPAuthenticator.allowed_groups = [f"cn={login_group},ou=groups,{base}"]
else:
    c.Authenticator.allow_all = True

domains = [d.strip() for d in os.environ.get("HPCHUB_UNIX_ACCOUNT_DOMAINS", "").split(",") if d.strip()]
if domains:
    # Hub users named by e-mail address (another authenticator, or users an admin created through the
    # REST API) run as their account in these domains: dora@uni.example -> dora.
    c.HPCSpawner.unix_account_domains = domains
