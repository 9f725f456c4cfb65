"""One HTTP POST to a checked address: no redirects, no second DNS lookup, bounded in time and size.

`http.client` never follows redirects; the connection is opened to `Target.ip` while the Host header, TLS SNI
and certificate check use the URL's host name, so what was checked is what is reached.
"""

from __future__ import annotations

import http.client
import socket
import ssl
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


def post(target: Target, body: bytes, headers: dict[str, str], timeout: float) -> Response:
    """POST `body` to the pinned target; the receiver's status, or `TransientError` / `PermanentError`."""
    if target.scheme == "https":
        connection: http.client.HTTPConnection = _PinnedHTTPSConnection(
            target.ip, target.port, target.hostname, timeout
        )
    else:
        connection = http.client.HTTPConnection(target.ip, target.port, timeout=timeout)
    started = time.monotonic()
    try:
        connection.request("POST", target.path, body=body, headers={**headers, "Host": target.host_header})
        answer = connection.getresponse()
        answer.read(MAX_RESPONSE_BYTES)
        status = answer.status
    except ssl.SSLCertVerificationError as exc:
        raise PermanentError(f"TLS certificate not valid for {target.hostname!r}: {exc.verify_message}") from None
    except TimeoutError:
        raise TransientError(f"no answer from {target.ip}:{target.port} within {timeout} s") from None
    except (ConnectionError, OSError, ssl.SSLError) as exc:
        raise TransientError(f"could not reach {target.ip}:{target.port}: {exc}") from None
    except http.client.HTTPException as exc:
        raise PermanentError(f"malformed HTTP response from the receiver: {exc!r}"[:300]) from None
    finally:
        connection.close()
    return Response(status=status, duration_ms=int((time.monotonic() - started) * 1000))
