"""Where a webhook may go: a matrix of allowed and refused URLs, checked at submission (and so at delivery)."""

from __future__ import annotations

import ipaddress

import pytest

from aigc_saas.errors import InvalidInput
from aigc_saas.webhooks.policy import address_refusal, check_target, check_webhook_url

ALLOWED = [
    "http://93.184.216.34/hook",
    "https://93.184.216.34:8443/x?y=1",
    "http://8.8.8.8:65535/",
    "https://1.1.1.1/",
    "http://[2606:4700:4700::1111]/hook",
    "http://[2a00:1450:4001::1]:8080/a/b",
    "HTTP://9.9.9.9/upper-case-scheme",
]

REFUSED = [
    # loopback, however it is spelled
    ("http://127.0.0.1/", "loopback"),
    ("http://127.1/", "loopback"),
    ("http://2130706433/", "loopback"),
    ("http://0x7f000001/", "loopback"),
    ("http://0177.0.0.1/", "loopback"),
    ("http://localhost:8000/hook", "loopback"),
    ("http://[::1]/", "loopback"),
    ("http://0.0.0.0:8000/", "unspecified"),
    ("http://[::]/", "unspecified"),
    # private, CGNAT, link-local
    ("http://10.0.0.1/", "private"),
    ("http://172.16.5.4/", "private"),
    ("http://172.31.255.255/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://100.64.0.1/", "carrier-grade NAT"),
    ("http://100.127.255.254/", "carrier-grade NAT"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[fc00::1]/", "unique local"),
    ("http://[fd12:3456::1]/", "unique local"),
    ("http://[fec0::1]/", "site-local"),
    # multicast, broadcast, reserved, documentation, benchmarking
    ("http://224.0.0.1/", "multicast"),
    ("http://239.255.255.250:1900/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("http://255.255.255.255/", "broadcast"),
    ("http://240.0.0.1/", "reserved"),
    ("http://192.0.2.1/", "documentation"),
    ("http://[2001:db8::1]/", "documentation"),
    ("http://198.18.0.1/", "benchmarking"),
    ("http://192.0.0.8/", "IETF protocol assignments"),
    # IPv6 forms that embed an IPv4 address
    ("http://[64:ff9b::a9fe:a9fe]/", "NAT64"),
    ("http://[64:ff9b::7f00:1]/", "NAT64"),
    ("http://[64:ff9b:1::a9fe:a9fe]/", "local-use NAT64"),
    ("http://[2002:a9fe:a9fe::]/", "6to4"),
    ("http://[2002:7f00:1::1]/", "6to4"),
    ("http://[::127.0.0.1]/", "IPv4-compatible"),
    ("http://[::a9fe:a9fe]/", "IPv4-compatible"),
    ("http://[::ffff:127.0.0.1]/", "IPv4-mapped"),
    ("http://[::ffff:169.254.169.254]/", "IPv4-mapped"),
    ("http://[::ffff:8.8.8.8]/", "IPv4-mapped"),
    ("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "Teredo"),
    # not http(s), no host, credentials, control characters
    ("ftp://93.184.216.34/", "must be an http(s) URL"),
    ("file:///etc/passwd", "must be an http(s) URL"),
    ("gopher://93.184.216.34:70/", "must be an http(s) URL"),
    ("javascript:alert(1)", "must be an http(s) URL"),
    ("http:///no-host", "must be an http(s) URL"),
    ("http://user:secret@93.184.216.34/", "credentials"),
    ("http://93.184.216.34/\r\nX-Injected: 1", "control characters"),
    ("http://93.184.216.34/" + "a" * 2100, "at most 2000"),
]

BAD_PORTS = [
    "http://93.184.216.34:99999/",
    "http://93.184.216.34:65536/",
    "http://93.184.216.34:0/",
    "http://93.184.216.34:abc/",
    "http://93.184.216.34:-1/",
    "http://[2606:4700::1]:70000/",
]


@pytest.fixture(autouse=True)
def strict(settings) -> None:  # noqa: ANN001
    settings.AIGC_WEBHOOK_ALLOW_PRIVATE = False


def test_the_matrix_has_at_least_40_urls() -> None:
    assert len(ALLOWED) + len(REFUSED) + len(BAD_PORTS) >= 40


@pytest.mark.parametrize("url", ALLOWED)
def test_allowed(url: str) -> None:
    assert check_webhook_url(url) == url
    target = check_target(url)
    assert ipaddress.ip_address(target.ip).is_global


@pytest.mark.parametrize("url, reason", REFUSED, ids=[u[:60] for u, _ in REFUSED])
def test_refused(url: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_webhook_url(url)
    assert refused.value.code == "invalid_webhook_url"
    assert reason in refused.value.message
    assert refused.value.fields[0]["field"] == "webhook_url"


@pytest.mark.parametrize("url", BAD_PORTS)
def test_bad_ports_are_a_400_with_their_own_code(url: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_webhook_url(url)
    assert refused.value.code == "invalid_webhook_port"
    assert "port" in refused.value.message


def test_allow_private_relaxes_only_the_private_ranges(settings) -> None:  # noqa: ANN001
    settings.AIGC_WEBHOOK_ALLOW_PRIVATE = True
    for url in ("http://127.0.0.1:9/", "http://localhost:9/", "http://10.1.2.3/", "http://[fd00::1]/"):
        assert check_webhook_url(url) == url
    for url in ("http://169.254.169.254/", "http://224.0.0.1/", "http://[::ffff:127.0.0.1]/", "http://0.0.0.0/"):
        with pytest.raises(InvalidInput):
            check_webhook_url(url)


def test_a_host_that_does_not_resolve_is_refused_at_submission() -> None:
    with pytest.raises(InvalidInput, match="does not resolve"):
        check_webhook_url("http://no-such-host.invalid/hook")


def test_every_range_is_named() -> None:
    assert address_refusal(ipaddress.ip_address("8.8.8.8"), allow_private=False) is None
    assert address_refusal(ipaddress.ip_address("::1"), allow_private=True) is None
    assert address_refusal(ipaddress.ip_address("::2"), allow_private=True) == "IPv4-compatible"
    assert address_refusal(ipaddress.ip_address("192.88.99.1"), allow_private=False) is not None  # 6to4 relay


def test_submission_with_a_bad_port_is_a_400_over_http(acme) -> None:  # noqa: ANN001
    response = acme.post(
        "/api/v1/jobs",
        {"generator": "transformers-text", "params": {"prompt": "x"}, "webhook_url": "http://93.184.216.34:99999/"},
        content_type="application/json",
    )
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "invalid_webhook_port"
