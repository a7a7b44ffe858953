"""What one WebSocket session decides about its connection's ending and its token. Pure.

The session driver (``connectors/sources/websocket.py``) only carries these out:

* ``ConnectionState``: the facts of the open connection that decide how it ended (the stream is
  stopping; the keep-alive found it dead; Kafka failed under it, so reading stopped; the first
  event arrived). Several can happen before the close frame is read: the *most* telling wins,
  in the order of ``Ending`` (a shutdown explains everything after it; a dead connection explains
  a missing close frame; a Kafka failure explains our own close).
* ``ending_disposition``: that, or else the close frame itself (``close_codes``), with one rule of
  ours on top: when websockets *sent* 1009 itself, a frame was over the hard cap, whatever came
  back; the next attempt reads with a raised cap once (``over_cap``).
* ``token_disposition``: a token failure as a disposition: non-retriable answers stop the stream
  with one line and its fix; the rest back off, never sooner than ``Retry-After``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from connectors.policy import close_codes
from connectors.policy.close_codes import Action, Disposition

CERT_ERROR = "certificate_verify_failed"
# the one line's fix when a certificate is not trusted (token endpoint or WebSocket)
TLS_HINT = ("set ca_file to the bundle of the CA that signed it "
            "(insecure_skip_verify = true turns verification off: tests only)")


class Ending(enum.IntEnum):
    """Why the driver stopped reading a connection, most telling first (lowest value)."""

    SHUTDOWN = 0
    DEAD = 1           # the keep-alive saw no pong in time (or the read failed)
    KAFKA_FAILED = 2   # a send failed: reading stopped so the platform replays it


@dataclass
class ConnectionState:
    """The facts of one open connection (a new one for each connection)."""

    endings: set[Ending] = field(default_factory=set)
    first_event_seen: bool = False

    def end(self, why: Ending) -> None:
        self.endings.add(why)

    def ended(self, why: Ending) -> bool:
        return why in self.endings

    @property
    def ending(self) -> Ending | None:
        """The most telling of the endings seen (None: the server ended it)."""
        return min(self.endings) if self.endings else None


@dataclass(frozen=True)
class Closed:
    """How a connection ended, and whether its last frame was over the hard cap."""

    disposition: Disposition
    over_cap: bool = False


def ending_disposition(state: ConnectionState, sent_code: int | None, received_code: int | None,
                       received_reason: str) -> Closed:
    """The disposition of a connection that closed, from what we know and what was exchanged."""
    if state.ending is Ending.SHUTDOWN:
        return Closed(close_codes.stop())
    if state.ending is Ending.DEAD:
        return Closed(close_codes.pong_timeout())
    if state.ending is Ending.KAFKA_FAILED:
        return Closed(close_codes.kafka_error())
    if sent_code == 1009:
        # websockets closed with 1009 itself (the server may not even echo the close): the
        # cause is ours, whatever came back
        return Closed(close_codes.classify_close(1009, ""), over_cap=True)
    return Closed(close_codes.classify_close(received_code, received_reason))


def token_disposition(stream: str, status: int | None, error: str, retriable: bool,
                      retry_after_s: float) -> Disposition:
    """A failed token request: stop the stream with one line (wrong credentials, an untrusted
    certificate, any other refusal), or back off no sooner than ``Retry-After``."""
    if not retriable:
        hint = ("check client_id and the client secret" if error == "invalid_client"
                else TLS_HINT if error == CERT_ERROR else "check token_url")
        return Disposition(Action.FATAL, "bad_credentials", detail=(
            f"stream {stream}: the token endpoint answered {status} {error}: {hint}"))
    return Disposition(Action.RECONNECT, "token_error", retry_after_s)
