"""What the tests share besides fixtures (those are in tests/conftest.py); setup.cfg puts tests/ on
sys.path, so tests import these as ``helpers.NAME``.

- support: paths of the checkout, the hpchub command, code run as a test user, user-readable files.
- jobs: test jobs submitted straight to the real schedulers, and waiting for their states.
- profiles: test-only profiles appended to the local site configs.
- hub: a real JupyterHub and configurable-http-proxy for the end-to-end tests.
- render_cases: the example profiles rendered for the golden files.
"""
