"""The real ASGI server (aigc_saas/asgi_handler.py): a sync view answered in one thread hop, an async view in
the event loop, and both answering as the middleware stack says (security and rate-limit headers, the admin's
session and CSRF cookie, JSON errors)."""

from __future__ import annotations

import threading

import pytest
import requests

from aigc_saas.plugins.models import PluginRecord

pytestmark = pytest.mark.django_db(transaction=True)

SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}


def _has_security_headers(response: requests.Response) -> bool:
    return all(response.headers.get(name) == value for name, value in SECURITY_HEADERS.items())


def test_a_sync_view_answers_with_the_whole_middleware_stack(web_api) -> None:  # noqa: ANN001
    response = web_api.get("account")
    assert response.status_code == 200
    assert response.json()["tenant"] == "acme"
    assert _has_security_headers(response)
    assert int(response.headers["X-RateLimit-Remaining"]) >= 0


def test_a_long_poll_answers_from_the_event_loop_with_the_same_headers(web_api) -> None:  # noqa: ANN001
    job = web_api.submit("transformers-text", {"prompt": "Hi", "max_new_tokens": 2})
    response = web_api.get(f"jobs/{job['id']}?wait=0")
    assert response.status_code == 200
    assert response.json()["id"] == job["id"]
    assert _has_security_headers(response)
    assert "X-RateLimit-Remaining" in response.headers


def test_the_same_job_reads_the_same_with_and_without_waiting(web_api) -> None:  # noqa: ANN001
    # On a queue no worker consumes, so that the job cannot change between the two reads.
    PluginRecord.objects.filter(name="transformers-text").update(queue="web-server-unserved")
    job = web_api.submit("transformers-text", {"prompt": "Hi", "max_new_tokens": 2})
    plain = web_api.get(f"jobs/{job['id']}").json()
    waited = web_api.get(f"jobs/{job['id']}?wait=0").json()
    assert plain == waited


def test_errors_keep_their_codes_on_both_paths(web_api, other_tenant_key) -> None:  # noqa: ANN001
    job = web_api.submit("transformers-text", {"prompt": "Hi", "max_new_tokens": 2})
    stranger = requests.Session()
    stranger.headers["Authorization"] = f"Bearer {other_tenant_key[1]}"
    for suffix in ("", "?wait=0", "/events"):
        response = stranger.get(web_api.url(f"jobs/{job['id']}{suffix}"), timeout=30)
        assert (response.status_code, response.json()["error"]["code"]) == (404, "not_found"), suffix
    bad_wait = web_api.get(f"jobs/{job['id']}?wait=forever")
    assert (bad_wait.status_code, bad_wait.json()["error"]["code"]) == (400, "invalid_wait")
    # A submission that waits: a bad `wait` or a refused body answers as the sync view does, no job is made.
    before = web_api.get("jobs").json()["count"]
    for query, body, code in (
        ("wait=forever", {"generator": "transformers-text", "params": {"prompt": "Hi"}}, "invalid_wait"),
        ("wait=61", {"generator": "transformers-text", "params": {"prompt": "Hi"}}, "invalid_wait"),
        ("wait=5", {"generator": "transformers-text", "params": {"max_new_tokens": 2}}, "invalid_params"),
        ("wait=5", {"generator": "no-such-generator", "params": {}}, "unknown_generator"),
    ):
        refused = web_api.post(f"jobs?{query}", body)
        assert (refused.status_code, refused.json()["error"]["code"]) == (400, code), (query, refused.text)
        assert _has_security_headers(refused)
    assert web_api.get("jobs").json()["count"] == before
    assert web_api.get("jobs?wait=5").json()["count"] == before  # a list ignores `wait`
    missing = web_api.get("no-such-route")
    assert missing.status_code == 404


def test_the_admin_login_page_sets_its_csrf_cookie_and_frame_options(web) -> None:  # noqa: ANN001
    response = requests.get(f"{web.url}/admin/login/", timeout=30)
    assert response.status_code == 200
    assert "csrftoken" in response.cookies
    assert response.headers["X-Frame-Options"] == "DENY"


def test_many_concurrent_requests_to_sync_views_all_answer(web_api) -> None:  # noqa: ANN001
    """More requests at once than the server has threads (2 processes x 16): they queue for one, none fails.
    (36 stays inside the key's burst of 40.)"""
    statuses: list[int] = []

    def ask() -> None:
        session = requests.Session()
        session.headers.update(web_api.session.headers)
        statuses.append(session.get(web_api.url("account"), timeout=60).status_code)

    threads = [threading.Thread(target=ask) for _ in range(36)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 36
