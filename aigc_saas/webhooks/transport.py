"""One HTTP POST to a checked address: no redirects, no second DNS lookup, bounded in time and size.

`http.client` never follows redirects; the connection is opened to `Target.ip` while the Host header, TLS SNI
and certificate check use the URL's host name, so what was checked is what is reached.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import time
from dataclasses import dataclass

from aigc_saas.webhooks.policy import Target

MAX_RESPONSE_BYTES = 64 * 1024  # read (and drop) at most this much of a receiver's answer


class TransientError(Exception):
    """Worth another attempt later: connection refused or reset, timeout, 5xx, 408, 429."""


class PermanentError(Exception):
    """Another attempt would fail the same way (TLS certificate mismatch, malformed response)."""


@dataclass
class Response:
    status: int
    duration_ms: int


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a fixed IP, verifying the certificate for the URL's host name."""

    def __init__(self, ip: str, port: int, server_hostname: str, timeout: float) -> None:
        super().__init__(ip, port, timeout=timeout, context=ssl.create_default_context())
        self._server_hostname = server_hostname

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self._server_hostname)


def _abort(connection: http.client.HTTPConnection) -> None:
    """Past the total deadline: shut the socket down, which wakes the blocked read with an error."""
    sock = connection.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def post(target: Target, body: bytes, headers: dict[str, str], timeout: float) -> Response:
    """POST `body` to the pinned target; the receiver's status, or `TransientError` / `PermanentError`.

    `timeout` bounds each socket operation; the whole attempt is cut at twice that, so a receiver that drips
    a byte just inside the timeout cannot hold a worker."""
    if target.scheme == "https":
        connection: http.client.HTTPConnection = _PinnedHTTPSConnection(
            target.ip, target.port, target.hostname, timeout
        )
    else:
        connection = http.client.HTTPConnection(target.ip, target.port, timeout=timeout)
    started = time.monotonic()
    watchdog = threading.Timer(2 * timeout, _abort, args=[connection])
    watchdog.daemon = True
    watchdog.start()
    try:
        connection.request("POST", target.path, body=body, headers={**headers, "Host": target.host_header})
        answer = connection.getresponse()
        answer.read(MAX_RESPONSE_BYTES)
        status = answer.status
    except ssl.SSLCertVerificationError as exc:
        raise PermanentError(f"TLS certificate not valid for {target.hostname!r}: {exc.verify_message}") from None
    except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
        if time.monotonic() - started >= 2 * timeout:
            raise TransientError(
                f"the receiver at {target.ip}:{target.port} took longer than {2 * timeout} s"
            ) from None
        if isinstance(exc, TimeoutError):
            raise TransientError(f"no answer from {target.ip}:{target.port} within {timeout} s") from None
        if isinstance(exc, http.client.HTTPException) and not isinstance(exc, ConnectionError):
            raise PermanentError(f"malformed HTTP response from the receiver: {exc!r}"[:300]) from None
        raise TransientError(f"could not reach {target.ip}:{target.port}: {exc}") from None
    finally:
        watchdog.cancel()
        connection.close()
    if time.monotonic() - started >= 2 * timeout:
        raise TransientError(f"the receiver at {target.ip}:{target.port} took longer than {2 * timeout} s")
    return Response(status=status, duration_ms=int((time.monotonic() - started) * 1000))
