"""The served access log: ids cut to a prefix, the site's own file names whole."""

from __future__ import annotations

from web.accesslog import redact_path


def test_ids_in_paths_are_cut_and_queries_dropped() -> None:
    meeting_id = "Zq9xA1b2C3d4E5f6G7h8i9"
    assert redact_path(f"/m/{meeting_id}") == "/m/Zq9x…"
    assert redact_path(f"/m/{meeting_id}/ws?resume=secret") == "/m/Zq9x…/ws"
    assert redact_path(f"/r/{meeting_id}/poster.jpg") == "/r/Zq9x…/poster.jpg"


def test_static_file_names_stay_whole() -> None:
    assert redact_path("/static/meeting-gestures.js?v=1") == "/static/meeting-gestures.js"
    # not a way around the cut: anything that climbs out of /static/ is cut as elsewhere
    assert redact_path("/static/../m/Zq9xA1b2C3d4E5f6G7h8i9") == "/static/../m/Zq9x…"
