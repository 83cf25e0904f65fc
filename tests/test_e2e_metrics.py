"""End to end on the real local Grid Engine: a real hub's /hub/metrics after real spawns as bob,
one that succeeds and one whose job fails, scraped with the admin service's token (read:metrics)."""

from __future__ import annotations

import pytest
import requests
from helpers.hub import run_hub, spawn, spawn_failure_message, stop
from helpers.profiles import broken_profile, local_site_text
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.e2e, pytest.mark.sge]

USER = "bob"
POLL_INTERVAL = 5

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def hub(sge_cluster, tmp_path_factory):
    yield from run_hub(tmp_path_factory.mktemp("hub-metrics"), local_site_text("sge", broken_profile("sge")), (USER,),
                       poll_interval=POLL_INTERVAL)


def scrape(hub, token: str | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}  # as Prometheus sends it
    return requests.get(f"{hub.url}/hub/metrics", headers=headers, timeout=30)


def hpchub_series(hub) -> Series:
    response = scrape(hub, hub.admin_token)
    assert response.status_code == 200, response.text
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text) if family.name.startswith("hpchub_")
            for sample in family.samples}


def get(series: Series, name: str, **labels: str) -> float | None:
    return series.get((name, frozenset(labels.items())))


def test_metrics_after_a_spawn_that_succeeds_and_one_that_fails(hub):
    assert scrape(hub).status_code == 403  # metrics need a token with read:metrics
    job_id = spawn(hub, USER, {"profile": "small"})["state"]["job_id"]
    running = hpchub_series(hub)
    small = {"cluster": "sge", "profile": "small"}
    assert get(running, "hpchub_spawns_total", **small) == 1
    assert get(running, "hpchub_servers", cluster="sge", state="running") == 1
    assert get(running, "hpchub_servers", cluster="sge", state="waiting") == 0
    assert get(running, "hpchub_spawn_duration_seconds_count", **small) == 1
    assert get(running, "hpchub_queue_wait_seconds_count", **small) == 1
    duration = get(running, "hpchub_spawn_duration_seconds_sum", **small)
    queue_wait = get(running, "hpchub_queue_wait_seconds_sum", **small)
    assert duration is not None and queue_wait is not None
    # The queue wait is the scheduler's (whole seconds), within the spawn it is part of.
    assert 0 < duration < 120 and 0 <= queue_wait <= duration + 1
    failed_reasons = {dict(labels)["reason"]: value for (name, labels), value in running.items()
                      if name == "hpchub_spawn_failures_total" and dict(labels)["profile"] == "small"}
    assert len(failed_reasons) >= 10 and set(failed_reasons.values()) == {0}
    assert get(running, "hpchub_cluster_command_duration_seconds_count", cluster="sge", kind="submit") == 1
    assert (get(running, "hpchub_cluster_command_duration_seconds_count", cluster="sge", kind="status") or 0) >= 1
    assert get(running, "hpchub_status_poller_consecutive_failures", cluster="sge") == 0
    assert get(running, "hpchub_status_poller_interval_seconds", cluster="sge") == POLL_INTERVAL
    assert not any(name == "hpchub_cluster_command_failures_total" and value for (name, _), value in running.items())

    stop(hub, USER)
    message = spawn_failure_message(hub, USER, {"profile": "broken"})
    assert "/nonexistent/venv" in message
    hub.wait_for_server(USER, ready=False, timeout=30)
    after = hpchub_series(hub)
    broken = {"cluster": "sge", "profile": "broken"}
    assert get(after, "hpchub_spawns_total", **broken) == 1
    assert get(after, "hpchub_spawn_failures_total", reason="job_ended", **broken) == 1
    assert sum(value for (name, _), value in after.items() if name == "hpchub_spawn_failures_total") == 1
    assert get(after, "hpchub_spawn_duration_seconds_count", **broken) in (None, 0)  # a failure has no duration
    assert get(after, "hpchub_spawn_duration_seconds_count", **small) == 1
    assert all(get(after, "hpchub_servers", cluster="sge", state=state) == 0 for state in ("waiting", "starting", "running"))
    assert get(after, "hpchub_cluster_command_duration_seconds_count", cluster="sge", kind="submit") == 2
    assert (get(after, "hpchub_cluster_command_duration_seconds_count", cluster="sge", kind="cancel") or 0) >= 1

    # Bounded labels only: no user name, no job id.
    for _, labels in after:
        assert not {USER, job_id} & {value for _, value in labels}, labels
