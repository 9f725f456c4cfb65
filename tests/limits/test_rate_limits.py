"""Per-key rate limits: requests/s with a burst and submissions/min, shared through Redis, 429 with headers."""

from __future__ import annotations

import logging
import subprocess
import sys
import time

import pytest
from django.conf import settings

from aigc_saas.accounts import ratelimit
from aigc_saas.accounts.services import create_api_key

pytestmark = pytest.mark.django_db


def test_a_burst_over_the_limit_answers_429_with_retry_after_and_rate_limit_headers(acme, tenant) -> None:  # noqa: ANN001
    tenant.requests_per_second, tenant.request_burst = 1, 5
    tenant.save()

    responses = [acme.get("/api/v1/generators") for _ in range(7)]

    assert [r.status_code for r in responses[:5]] == [200] * 5
    assert responses[5].status_code == 429
    refused = responses[5]
    assert refused.json()["error"]["code"] == "rate_limited"
    assert "1 requests/s with bursts of 5" in refused.json()["error"]["message"]
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["X-RateLimit-Limit"] == "5"
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert [r.headers["X-RateLimit-Remaining"] for r in responses[:5]] == ["4", "3", "2", "1", "0"]
    assert int(responses[0].headers["X-RateLimit-Reset"]) >= 1


def test_the_bucket_refills_at_the_configured_rate(acme, tenant) -> None:  # noqa: ANN001
    tenant.requests_per_second, tenant.request_burst = 5, 2
    tenant.save()
    assert [acme.get("/api/v1/generators").status_code for _ in range(3)] == [200, 200, 429]

    time.sleep(0.25)  # 5/s: one token back after 0.2 s

    assert acme.get("/api/v1/generators").status_code == 200


def test_the_defaults_allow_a_burst_of_40_then_about_20_per_second(acme) -> None:  # noqa: ANN001
    assert (settings.AIGC_RATE_LIMIT_PER_SECOND, settings.AIGC_RATE_LIMIT_BURST) == (20, 40)
    started = time.monotonic()
    codes = [acme.get("/api/v1/account").status_code for _ in range(60)]
    elapsed = time.monotonic() - started

    allowed = codes.count(200)
    # 40 from the burst plus what refilled while the loop ran, never more.
    assert 40 <= allowed <= 40 + int(20 * elapsed) + 1, (allowed, elapsed)
    assert codes.count(429) == 60 - allowed


def test_keys_have_separate_buckets(acme, client_for, tenant) -> None:  # noqa: ANN001
    tenant.requests_per_second, tenant.request_burst = 1, 2
    tenant.save()
    _, other = create_api_key(tenant, "second")
    assert [acme.get("/api/v1/generators").status_code for _ in range(3)] == [200, 200, 429]
    assert client_for(other).get("/api/v1/generators").status_code == 200


def test_submissions_per_minute_limit_job_posts_but_not_reads(acme, tenant, submit) -> None:  # noqa: ANN001
    tenant.submissions_per_minute = 2
    tenant.save()

    codes = [submit(acme).status_code for _ in range(3)]

    assert codes == [202, 202, 429]
    refused = submit(acme)
    assert refused.json()["error"]["code"] == "rate_limited"
    assert "2 submissions/min" in refused.json()["error"]["message"]
    assert refused.headers["X-RateLimit-Limit"] == "2"
    assert int(refused.headers["Retry-After"]) >= 25  # one submission comes back every 30 s
    assert acme.get("/api/v1/jobs").status_code == 200


def test_submission_default_is_120_per_minute(acme, submit, tenant) -> None:  # noqa: ANN001
    tenant.max_jobs_per_day = tenant.max_active_jobs = None
    tenant.requests_per_second = 1000
    tenant.request_burst = 1000
    tenant.save()
    start = time.monotonic()
    codes = [submit(acme).status_code for _ in range(125)]
    refilled = int((time.monotonic() - start) * 2) + 1  # 2 per second come back while it runs
    assert 120 <= codes.count(202) <= 120 + refilled, (codes.count(202), refilled)
    assert 429 in codes


def test_buckets_live_in_redis_so_another_process_shares_them(acme, tenant, tenant_key) -> None:  # noqa: ANN001
    tenant.requests_per_second, tenant.request_burst = 1, 10
    tenant.save()
    prefix = tenant_key[0].prefix
    # Another process (as a second web worker would) spends 7 of this key's 10 requests.
    code = (
        "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'aigc_saas.settings'); django.setup();"
        "from aigc_saas.accounts import ratelimit;"
        f"print(sum(ratelimit.take('req:{prefix}', rate=1, capacity=10).allowed for _ in range(7)))"
    )
    env = {"REDIS_URL": settings.REDIS_URL, "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=settings.BASE_DIR, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "7"

    response = acme.get("/api/v1/generators")

    assert response.status_code == 200
    assert int(response.headers["X-RateLimit-Remaining"]) in (2, 3)  # 10 - 7 - 1, plus at most one refilled


def test_a_redis_outage_lets_requests_through_quickly_and_logs_a_warning(acme, settings, caplog) -> None:  # noqa: ANN001
    from aigc_saas import stack

    settings.REDIS_URL = f"redis://127.0.0.1:{stack.free_port()}/0"  # nothing listens there
    caplog.set_level(logging.WARNING, logger="aigc_saas.accounts.ratelimit")
    started = time.monotonic()

    codes = [acme.get("/api/v1/generators").status_code for _ in range(20)]

    assert codes == [200] * 20
    assert time.monotonic() - started < 5
    warnings = [r for r in caplog.records if "rate limits are not enforced" in r.getMessage()]
    assert len(warnings) == 1  # one warning, then a quiet back-off instead of one per request


def test_a_stalled_redis_costs_at_most_the_socket_timeout(acme, settings) -> None:  # noqa: ANN001
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)  # accepts connections but never answers, like a hung server
    settings.REDIS_URL = f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    try:
        started = time.monotonic()
        response = acme.get("/api/v1/generators")
        elapsed = time.monotonic() - started
    finally:
        listener.close()
    assert response.status_code == 200
    assert elapsed < 1.5, elapsed
    assert ratelimit.SOCKET_TIMEOUT_SECONDS <= 0.5


def test_reset_all_forgets_every_bucket(acme, tenant) -> None:  # noqa: ANN001
    tenant.requests_per_second, tenant.request_burst = 1, 1
    tenant.save()
    assert [acme.get("/api/v1/generators").status_code for _ in range(2)] == [200, 429]

    assert ratelimit.reset_all() >= 1

    assert acme.get("/api/v1/generators").status_code == 200


def test_a_malformed_redis_url_also_fails_open(acme, settings) -> None:  # noqa: ANN001
    settings.REDIS_URL = "not-a-url://"
    assert acme.get("/api/v1/generators").status_code == 200


def test_a_request_asks_redis_once_for_its_lockout_check_and_all_its_limits(acme, submit, monkeypatch) -> None:  # noqa: ANN001
    acme.get("/api/v1/generators")  # the client and its script exist for this URL
    script, calls = ratelimit._client.script(), []

    def counted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(kwargs["keys"])
        return script(*args, **kwargs)

    monkeypatch.setattr(ratelimit._client, "script", lambda: counted)

    assert submit(acme).status_code == 202
    assert acme.get("/api/v1/jobs").status_code == 200

    # The submission: its address's lockout, the key's requests/s and submissions/min; the read: the first two.
    assert [[key.split(":")[2] for key in keys] for keys in calls] == [
        ["authfail", "req", "sub"],
        ["authfail", "req"],
    ]


def test_a_refusal_ends_the_turn_and_the_buckets_after_it_are_not_charged(acme, tenant, submit) -> None:  # noqa: ANN001
    tenant.requests_per_second, tenant.request_burst, tenant.submissions_per_minute = 1, 1, 5
    tenant.save()
    assert submit(acme).status_code == 202  # the burst's one request, and one of the 5 submissions

    refused = [submit(acme) for _ in range(2)]

    assert [r.status_code for r in refused] == [429] * 2
    assert all("requests/s" in r.json()["error"]["message"] for r in refused)
    first, second = ratelimit.take_in_turn(
        [ratelimit.Bucket(f"sub:{tenant.api_keys.first().prefix}", rate=5 / 60, capacity=5, cost=0, need=1)] * 2
    )
    assert first.remaining == second.remaining == 4  # the refused requests took no submission


def test_take_in_turn_answers_up_to_the_first_refusal(acme) -> None:  # noqa: ANN001
    full = ratelimit.Bucket("turn:a", rate=0.001, capacity=1)
    other = ratelimit.Bucket("turn:b", rate=0.001, capacity=3)
    assert [d.allowed for d in ratelimit.take_in_turn([full, other])] == [True, True]

    decisions = ratelimit.take_in_turn([other, full, other])

    assert [d.allowed for d in decisions] == [True, False]  # the third was not asked
    assert decisions[0].remaining == 1 and decisions[1].retry_after >= 1
    assert ratelimit.take_in_turn([ratelimit.Bucket("turn:b", rate=0.001, capacity=3, cost=0)])[0].remaining == 1
