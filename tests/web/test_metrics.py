"""``GET /metrics``: Prometheus text that prometheus-client's own parser reads, counters that
move while a meeting runs, a token that is required, and no meeting id anywhere."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from meeting import ids
from meeting.config import Config, MetricsConfig
from meeting.models import Origin
from meeting.outbox import ANNOUNCE, ChatPost, Delivery, OutboxEntry, Retry
from meeting.recording.model import READY, Recording
from meeting.store.sqlite import SqliteStore
from tests.conftest import serving, wait_for
from tests.web.synthetic_guest import SyntheticGuest
from web.metrics import metrics_app

TOKEN = "scrape-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# The only labels, and the values they may take: never anything a meeting is known by.
LABELS = {"process": {"main"}, "platform": {"slack", "discord"}}


def _with_metrics(config: Config, **metrics: Any) -> Config:
    return dataclasses.replace(config, metrics=MetricsConfig(enabled=True, **metrics))


def parse(text: str) -> dict[str, float]:
    """Every sample, keyed ``name`` or ``name{label=value,...}``, through the official parser."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
            for key, value in sample.labels.items():
                if family.name.startswith("meetnow"):
                    assert key in LABELS and value in LABELS[key], (family.name, key, value)
    return samples


async def scrape(client: TestClient) -> tuple[str, dict[str, float]]:
    response = await client.get("/metrics", headers=AUTH)
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    text = await response.text()
    return text, parse(text)


async def test_a_missing_or_wrong_token_is_refused(config: Config, store: SqliteStore) -> None:
    async with serving(_with_metrics(config, token=TOKEN), store) as (client, _):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                        {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": f"Basic {TOKEN}"}):
            response = await client.get("/metrics", headers=headers)
            assert response.status == 401, headers
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert "meetnow_" not in await response.text()
        assert (await client.get("/metrics", headers=AUTH)).status == 200


async def test_off_by_default(config: Config, store: SqliteStore) -> None:
    async with serving(config, store) as (client, _):
        assert (await client.get("/metrics", headers=AUTH)).status == 404


async def test_counters_move_while_a_meeting_runs_and_no_id_shows(config: Config, store: SqliteStore) -> None:
    async with serving(_with_metrics(config, token=TOKEN), store) as (client, server):
        await server.start_background()
        minted = await server.meetings.mint("Metrics", Origin("web"))
        meeting_id = minted.meeting.id
        _, before = await scrape(client)
        assert before["meetnow_meetings"] == 0
        assert before['meetnow_rtp_packets_forwarded_total{process=main}'] == 0
        guests = [await SyntheticGuest.join(client, meeting_id, name) for name in ("Ada", "Bo")]
        try:
            async def forwarding() -> bool:
                _, now = await scrape(client)
                return now['meetnow_rtp_packets_forwarded_total{process=main}'] > 0
            await wait_for(forwarding, timeout=20, interval=0.2)
            text, first = await scrape(client)
            assert first["meetnow_meetings"] == 1 and first["meetnow_participants"] == 2
            assert first["meetnow_publications{process=main}"] == 4
            assert first["meetnow_viewer_streams{process=main}"] == 4
            assert first["meetnow_media_peers{process=main}"] == 2

            async def moved() -> bool:
                _, now = await scrape(client)
                return all(now[f"{name}{{process=main}}"] > first[f"{name}{{process=main}}"] for name in (
                    "meetnow_rtp_packets_received_total", "meetnow_rtp_packets_forwarded_total",
                    "meetnow_rtp_payload_forwarded_bytes_total", "meetnow_rtp_payload_received_bytes_total",
                    "meetnow_process_cpu_seconds_total"))
            await wait_for(moved, timeout=10, interval=0.2)
            for name in ("meetnow_nacks_sent_total", "meetnow_nacks_received_total",
                         "meetnow_keyframe_requests_total", "meetnow_rtp_retransmissions_total",
                         "meetnow_rtp_packets_lost_total", "meetnow_event_loop_lag_seconds",
                         "meetnow_rtp_retransmissions_refused_total", "meetnow_rtp_probe_packets_total"):
                assert f"{name}{{process=main}}" in first, name
            assert "process_resident_memory_bytes" in first  # the standard process metrics too
            # Neither the meeting's id nor its host key (labels are checked in parse()).
            for secret in (meeting_id, minted.host_url.rsplit("#host=", 1)[1]):
                assert secret not in text
        finally:
            for guest in guests:
                await guest.close()
        await wait_for(lambda: server.sessions.stats()["meetings"] == 0, timeout=10)
        _, after = await scrape(client)
        # Counters of the ended meeting stay counted; what describes "now" went back to zero.
        assert after["meetnow_rtp_packets_forwarded_total{process=main}"] >= first[
            "meetnow_rtp_packets_forwarded_total{process=main}"]
        assert after["meetnow_meetings"] == 0 and after["meetnow_publications{process=main}"] == 0


class FlakyCourier:
    platform = "slack"

    async def deliver(self, entry: OutboxEntry, post: ChatPost | None) -> Delivery:
        return Retry("the platform answered 500")


async def test_outbox_depth_age_and_delivery_errors_by_platform(config: Config, store: SqliteStore) -> None:
    async with serving(_with_metrics(config, token=TOKEN), store) as (client, server):
        server.outbox.register(FlakyCourier())
        _, empty = await scrape(client)
        assert empty["meetnow_outbox_pending{platform=slack}"] == 0
        assert empty["meetnow_chat_delivery_errors_total{platform=slack}"] == 0
        meeting = (await server.meetings.mint("x", Origin("slack", "T", "C", "Al"))).meeting
        await server.outbox.put(f"announce:{meeting.id}", meeting.id, "slack", ANNOUNCE, {"text": "hi"})
        assert await server.outbox.deliver_due() == 1
        _, failed = await scrape(client)
        assert failed["meetnow_chat_delivery_errors_total{platform=slack}"] == 1
        assert failed["meetnow_outbox_pending{platform=slack}"] == 1
        assert failed["meetnow_outbox_oldest_age_seconds{platform=slack}"] >= 0


async def test_recordings_deleted_by_retention_are_counted(config: Config, store: SqliteStore) -> None:
    async with serving(_with_metrics(config, token=TOKEN), store) as (client, server):
        meeting = (await server.meetings.mint("x", Origin("web"))).meeting
        made = datetime.now(timezone.utc) - timedelta(days=31)
        await store.add_recording(Recording(id=ids.new_id(), meeting_id=meeting.id, state=READY,
                                            started_at=made, expires_at=made + timedelta(days=30)))
        _, before = await scrape(client)
        assert before["meetnow_recordings_deleted_by_retention_total"] == 0
        assert before["meetnow_compose_queued"] == 0 and before["meetnow_compose_running"] == 0
        assert (await server.recordings.sweeper.sweep()).deleted == 1
        _, after = await scrape(client)
        assert after["meetnow_recordings_deleted_by_retention_total"] == 1


async def test_metrics_on_a_listener_of_their_own(config: Config, store: SqliteStore) -> None:
    configured = _with_metrics(config, listen="127.0.0.1:9100")
    async with serving(configured, store) as (client, server):
        # Not on the main listener, token or not.
        assert (await client.get("/metrics", headers=AUTH)).status == 404
        async with TestClient(TestServer(metrics_app(server.metrics, ""))) as own:
            response = await own.get("/metrics")
            assert response.status == 200
            assert "meetnow_meetings" in parse(await response.text())
        async with TestClient(TestServer(metrics_app(server.metrics, TOKEN))) as guarded:
            assert (await guarded.get("/metrics")).status == 401
            assert (await guarded.get("/metrics", headers=AUTH)).status == 200
