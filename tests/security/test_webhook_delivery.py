"""Webhook delivery against real HTTP servers on 127.0.0.1: no redirects, pinned address, retries, a row per try."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.utils import timezone

from aigc_saas.jobs import services as job_services
from aigc_saas.webhooks import services
from aigc_saas.webhooks.models import DeliveryStatus, WebhookDelivery

pytestmark = pytest.mark.django_db


class Receiver:
    """A real HTTP server answering each POST with the next planned (status, headers); records what it got."""

    def __init__(self, plan: list[tuple[int, dict[str, str]]] | None = None) -> None:
        self.plan = list(plan or [])
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.requests.append((self.command, self.path, dict(self.headers), body))
                status, headers = outer.plan.pop(0) if outer.plan else (204, {})
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_GET = _answer  # noqa: N815 - stdlib names

            def log_message(self, *args) -> None:  # noqa: ANN002
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def target() -> Iterator[Receiver]:
    """Where a redirect points: it must never be reached."""
    server = Receiver()
    yield server
    server.close()


def finished_job(tenant, url: str):  # noqa: ANN001, ANN201
    job = job_services.submit_job(tenant, "transformers-text", {"prompt": "x"}, webhook_url=url)
    type(job).objects.filter(pk=job.pk).update(state="succeeded", result={"text": "done"}, finished_at=timezone.now())
    job.refresh_from_db()
    return job


def one_attempt(job) -> tuple[WebhookDelivery, WebhookDelivery | None]:  # noqa: ANN001
    delivery = WebhookDelivery.objects.create(job=job, url=job.webhook_url, due_at=timezone.now())
    following = services.attempt_delivery(delivery.pk)
    delivery.refresh_from_db()
    return delivery, following


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_redirects_are_never_followed(tenant, receiver: Receiver, target: Receiver, code: int) -> None:  # noqa: ANN001
    receiver.plan = [(code, {"Location": target.url("/latest/meta-data/")})]
    delivery, following = one_attempt(finished_job(tenant, receiver.url()))

    assert len(receiver.requests) == 1 and receiver.requests[0][0] == "POST"
    assert target.requests == []  # not with POST, not with GET
    assert delivery.status == DeliveryStatus.FAILED and following is None
    assert delivery.response_code == code
    assert "redirects are not followed" in delivery.error


def test_a_successful_attempt_is_signed_and_logged(tenant, receiver: Receiver) -> None:  # noqa: ANN001
    job = finished_job(tenant, receiver.url("/hook?x=1", host="localhost"))
    delivery, following = one_attempt(job)

    assert following is None
    assert delivery.status == DeliveryStatus.SUCCEEDED and delivery.response_code == 204
    assert delivery.duration_ms is not None and delivery.address == "127.0.0.1"
    method, path, headers, body = receiver.requests[0]
    assert (method, path) == ("POST", "/hook?x=1")
    assert headers["Host"] == f"localhost:{receiver.port}"  # the URL's host, though the socket went to the IP
    timestamp, digest = (part.split("=", 1)[1] for part in headers["X-AIGC-Signature"].split(","))
    expected = hmac.new(tenant.webhook_secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(digest, expected)
    assert json.loads(body)["job"]["id"] == str(job.pk)
    assert headers["X-AIGC-Attempt"] == "1" and headers["X-AIGC-Delivery"] == str(delivery.pk)


def test_a_second_run_of_the_same_attempt_sends_nothing(tenant, receiver: Receiver) -> None:  # noqa: ANN001
    delivery, _ = one_attempt(finished_job(tenant, receiver.url()))
    assert services.attempt_delivery(delivery.pk) is None
    assert len(receiver.requests) == 1


@pytest.mark.parametrize("code", [500, 502, 503, 429, 408])
def test_server_errors_retry_with_backoff_as_new_rows(tenant, receiver: Receiver, code: int) -> None:  # noqa: ANN001
    receiver.plan = [(code, {}), (code, {})]
    delivery, following = one_attempt(finished_job(tenant, receiver.url()))

    assert delivery.status == DeliveryStatus.RETRYING and delivery.response_code == code
    assert following is not None and following.attempt == 2 and following.status == DeliveryStatus.PENDING
    assert 4 <= services.countdown(following) <= 5  # first backoff: 5 s
    services.attempt_delivery(following.pk)
    following.refresh_from_db()
    assert following.status == DeliveryStatus.RETRYING
    third = WebhookDelivery.objects.get(job=delivery.job, attempt=3)
    assert 9 <= services.countdown(third) <= 10


@pytest.mark.parametrize("code", [400, 401, 403, 404, 410])
def test_client_errors_stop(tenant, receiver: Receiver, code: int) -> None:  # noqa: ANN001
    receiver.plan = [(code, {})]
    delivery, following = one_attempt(finished_job(tenant, receiver.url()))
    assert delivery.status == DeliveryStatus.FAILED and following is None and delivery.response_code == code


def test_connection_refused_retries_and_the_last_attempt_fails(tenant, settings) -> None:  # noqa: ANN001
    settings.AIGC_WEBHOOK_MAX_ATTEMPTS = 2
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    delivery, following = one_attempt(finished_job(tenant, f"http://127.0.0.1:{closed_port}/hook"))

    assert delivery.status == DeliveryStatus.RETRYING and "could not reach" in delivery.error
    assert services.attempt_delivery(following.pk) is None
    following.refresh_from_db()
    assert following.status == DeliveryStatus.FAILED and "gave up after 2 attempts" in following.error


def _fake_dns(monkeypatch, answers):  # noqa: ANN001, ANN202
    """Stand in for an attacker's DNS server: `answers` is called per lookup of *.test names."""
    real = socket.getaddrinfo
    calls: list[str] = []

    def getaddrinfo(host, port, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if str(host).endswith(".test"):
            calls.append(host)
            return answers(len(calls), port)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return calls


def _answer(ip: str, port: int) -> list:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    return [(family, socket.SOCK_STREAM, 6, "", (ip, port))]


def test_transient_dns_errors_retry_and_permanent_ones_stop(tenant, monkeypatch) -> None:  # noqa: ANN001
    job = finished_job(tenant, "http://93.184.216.34/hook")
    type(job).objects.filter(pk=job.pk).update(webhook_url="http://flaky.test/hook")
    job.refresh_from_db()

    def temporary(n: int, port: int) -> list:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    _fake_dns(monkeypatch, temporary)
    delivery, following = one_attempt(job)
    assert delivery.status == DeliveryStatus.RETRYING and following is not None
    assert "Temporary failure" in delivery.error

    def gone(n: int, port: int) -> list:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    _fake_dns(monkeypatch, gone)
    services.attempt_delivery(following.pk)
    following.refresh_from_db()
    assert following.status == DeliveryStatus.FAILED
    assert WebhookDelivery.objects.filter(job=job).count() == 2


def test_dns_rebinding_cannot_redirect_the_connection(tenant, receiver: Receiver, settings, monkeypatch) -> None:  # noqa: ANN001
    """One lookup per attempt, and the socket goes to its answer: a second answer pointing at loopback is
    never asked for, so the loopback receiver is never reached."""
    settings.AIGC_WEBHOOK_ALLOW_PRIVATE = False
    settings.AIGC_WEBHOOK_TIMEOUT = 1
    calls = _fake_dns(monkeypatch, lambda n, port: _answer("93.184.216.34" if n == 1 else "127.0.0.1", port))
    job = finished_job(tenant, f"http://rebind.test:{receiver.port}/hook")
    calls.clear()  # the submission's own lookup: the attempt below must start from a public answer again

    delivery, _ = one_attempt(job)

    assert calls == ["rebind.test"]
    assert receiver.requests == []
    assert delivery.address == "93.184.216.34"


def test_a_private_answer_at_delivery_is_refused_for_good(tenant, receiver: Receiver, settings, monkeypatch) -> None:  # noqa: ANN001
    settings.AIGC_WEBHOOK_ALLOW_PRIVATE = False
    _fake_dns(monkeypatch, lambda n, port: _answer("93.184.216.34" if n == 1 else "127.0.0.1", port))
    job = finished_job(tenant, f"http://rebind.test:{receiver.port}/hook")  # public at submission

    delivery, following = one_attempt(job)  # loopback now

    assert delivery.status == DeliveryStatus.FAILED and following is None
    assert "loopback" in delivery.error
    assert receiver.requests == []


def test_the_outbox_row_is_written_in_the_transaction_and_sent_on_commit(
    tenant, receiver: Receiver, django_capture_on_commit_callbacks
) -> None:  # noqa: ANN001
    job = finished_job(tenant, receiver.url())
    with django_capture_on_commit_callbacks() as callbacks:
        services.enqueue_webhook(job)
        row = WebhookDelivery.objects.get(job=job)
        assert row.status == DeliveryStatus.PENDING and row.attempt == 1
    assert len(callbacks) == 1


def test_notify_finished_enqueues_one_pending_delivery(tenant, receiver: Receiver) -> None:  # noqa: ANN001
    job = finished_job(tenant, receiver.url())
    job_services.notify_finished(job.pk)
    assert list(WebhookDelivery.objects.filter(job=job).values_list("attempt", "status")) == [(1, "pending")]


def test_the_sweeper_resends_only_what_is_overdue(tenant, receiver: Receiver, settings) -> None:  # noqa: ANN001
    settings.AIGC_WEBHOOK_RESEND_SECONDS = 60
    job = finished_job(tenant, receiver.url())
    now = timezone.now()
    overdue = WebhookDelivery.objects.create(job=job, url=job.webhook_url, due_at=now - timedelta(seconds=120))
    WebhookDelivery.objects.create(job=job, url=job.webhook_url, attempt=2, due_at=now)  # just written
    claimed = WebhookDelivery.objects.create(
        job=job, url=job.webhook_url, attempt=3, due_at=now - timedelta(seconds=120), claimed_at=now
    )
    WebhookDelivery.objects.create(
        job=job, url=job.webhook_url, attempt=4, due_at=now - timedelta(hours=1), status=DeliveryStatus.SUCCEEDED
    )

    assert services.resend_pending_webhooks() == 1
    assert services.attempt_delivery(claimed.pk) is None  # a live claim is not taken twice
    assert services.attempt_delivery(overdue.pk) is None
    overdue.refresh_from_db()
    assert overdue.status == DeliveryStatus.SUCCEEDED


def test_admin_lists_attempts_and_redelivers(tenant, receiver: Receiver, admin_client) -> None:  # noqa: ANN001
    delivery, _ = one_attempt(finished_job(tenant, receiver.url()))

    listing = admin_client.get("/admin/webhooks/webhookdelivery/")
    assert listing.status_code == 200 and str(delivery.job_id) in listing.content.decode()
    response = admin_client.post(
        "/admin/webhooks/webhookdelivery/",
        {"action": "redeliver_selected", "_selected_action": [delivery.pk]},
    )
    assert response.status_code == 302
    again = WebhookDelivery.objects.get(job=delivery.job, attempt=2)
    assert again.status == DeliveryStatus.PENDING


def test_a_receiver_that_drips_its_answer_is_cut_at_twice_the_timeout(tenant, settings) -> None:  # noqa: ANN001
    """Each byte comes inside the per-read timeout, so only the total deadline can end the attempt."""
    settings.AIGC_WEBHOOK_TIMEOUT = 1
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def drip() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            while not stop.is_set():
                try:
                    conn.sendall(b"X")
                except OSError:
                    return
                time.sleep(0.3)

    threading.Thread(target=drip, daemon=True).start()
    try:
        started = time.monotonic()
        delivery, following = one_attempt(finished_job(tenant, f"http://127.0.0.1:{listener.getsockname()[1]}/"))
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        listener.close()

    assert 1.9 <= elapsed < 4
    assert delivery.status == DeliveryStatus.RETRYING and "took longer than 2 s" in delivery.error
    assert following is not None


def test_https_goes_to_the_checked_address_with_the_host_name_for_sni_and_certificate(tenant, tmp_path) -> None:  # noqa: ANN001
    """A TLS receiver on 127.0.0.1 with a self-signed certificate for `localhost`: the client connects to the
    resolved IP but sends SNI `localhost`, and refuses the untrusted certificate for good."""
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert)]
        + ["-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
        check=True,
        capture_output=True,
    )
    server_names: list[str | None] = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda sock, name, ctx: server_names.append(name)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with contextlib.suppress(OSError, ssl.SSLError), context.wrap_socket(conn, server_side=True):
            pass

    threading.Thread(target=serve, daemon=True).start()
    try:
        delivery, following = one_attempt(finished_job(tenant, f"https://localhost:{port}/hook"))
    finally:
        listener.close()

    assert server_names == ["localhost"]
    assert delivery.address == "127.0.0.1"
    assert delivery.status == DeliveryStatus.FAILED and following is None
    assert "TLS certificate not valid for 'localhost'" in delivery.error
