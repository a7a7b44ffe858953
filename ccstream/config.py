"""The configuration file (TOML) of ``docs/kafka.md``, typed and validated.

This module is the one typed source of defaults: seconds are ``float``, ``None`` means disabled,
and no default is stated anywhere else. Unknown keys, wrong types and missing required keys are
rejected with the key's path (``streams[0].platform: ...``). ``CCSTREAM_<SECTION>__<KEY>``
environment variables override the file (``CCSTREAM_KAFKA__BOOTSTRAP_SERVERS``); list items are
addressed by index (``CCSTREAM_STREAMS__0__CLIENT_ID``).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from ccstream.errors import CcstreamError

ENV_PREFIX = "CCSTREAM_"

Platform = Literal["genesys", "nice", "genesys-cloud", "cxone"]
GuidePlatform = Literal["genesys", "nice"]
CxoneEndpoint = Literal["agents/states", "contacts/active", "skills/activity"]
CXONE_ENDPOINTS: tuple[CxoneEndpoint, ...] = ("agents/states", "contacts/active",
                                              "skills/activity")


class ConfigError(CcstreamError, ValueError):
    """Bad configuration; ``key`` is the path of the offending key (``streams[0].url``)."""

    retriable = False
    exit_status = 2

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key = key
        self.problem = problem


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    # topics ccstream creates when missing (existing topics are used as they are)
    partitions: int = Field(6, ge=1)
    replication_factor: int = Field(1, ge=1)
    # producer batching: the setting that trades latency for throughput
    linger_ms: float = Field(5.0, ge=0)
    max_batch_bytes: int = Field(1_048_576, ge=1024)
    request_timeout_s: float = Field(30.0, gt=0)
    client_id: str = "ccstream"


class TopicNames(_Section):
    raw: str = "ccstream.events.raw"
    clean: str = "ccstream.events.clean"
    cursors: str = "ccstream.cursors"
    dlq: str = "ccstream.events.dlq"
    # cluster mode only: no records; its partitions are the slots the instances share
    slots: str = "ccstream.connect.slots"


JitterKind = Literal["default", "full", "decorrelated", "none"]


class ConnectorSettings(_Section):
    """Process-wide connector policy; every stream may override the per-stream ones."""

    backoff_base_s: float = Field(1.0, gt=0)
    backoff_max_s: float = Field(30.0, gt=0)
    jitter: JitterKind = "default"
    # seconds added to every backoff delay, different per deployment, to stagger fleets
    deployment_offset_s: float = Field(0.0, ge=0)
    max_attempts: int = Field(8, ge=1)
    # attempts older than this no longer count towards the breaker (sliding window)
    retry_window_s: float = Field(600.0, gt=0)
    breaker_cooldown_s: float = Field(60.0, gt=0)
    # per-host token bucket across every stream of the process
    reconnects_per_second: float = Field(5.0, gt=0)
    reconnect_burst: int = Field(5, ge=1)
    token_safety_buffer_s: float = Field(300.0, ge=0)
    max_auth_failures: int = Field(3, ge=1)
    pong_timeout_s: float = Field(2.0, gt=0)
    open_timeout_s: float = Field(10.0, gt=0)
    close_timeout_s: float = Field(2.0, gt=0)
    max_frame_bytes: int = Field(1_048_576, ge=1024)
    cursor_commit_interval_s: float = Field(1.0, gt=0)
    grace_period_s: float = Field(12.0, gt=0)
    # Genesys `since`: how much older than the newest event seen a not-yet-received event may be
    # (timestamps are unordered across correlation ids; see connectors/policy/progress.py)
    since_lateness_s: float = Field(30.0, ge=0)
    # exit non-zero (after a clean shutdown) once every stream is stopped or has its breaker open
    exit_when_all_open: bool = True
    # regional failover (streams with ``endpoints``, docs/operations.md): this many failed
    # attempts in a row on one endpoint (or its breaker opening) move the stream to the next
    failover_after_attempts: int = Field(3, ge=1)
    # on a secondary endpoint, the primary is probed about this often (jittered x 0.5-1.5)
    failback_probe_interval_s: float = Field(300.0, gt=0)


class ClusterSettings(_Section):
    """Cluster mode (docs/cluster.md): each stream owned by one live ``ccstream connect``.

    The same file on every machine. Opt-in: with ``enabled = false`` (the default) one process
    runs every stream, exactly as without this section.
    """

    enabled: bool = False
    # the consumer group of the instances, and the prefix of each slot's transactional id
    # (``<group_id>.slot-<n>``)
    group_id: str = Field("ccstream-connect", min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    # partitions of the slot topic when ccstream creates it; later the topic is the truth
    slots: int = Field(32, ge=1, le=1024)
    # static membership (KIP-345): a restart within the session timeout keeps the slots
    instance_id: str | None = Field(None, min_length=1)
    session_timeout_s: float = Field(6.0, gt=0)
    heartbeat_interval_s: float = Field(1.0, gt=0)
    rebalance_timeout_s: float = Field(10.0, gt=0)
    # how long one confirmation of membership lets the instance act; None = session - 2 x heartbeat
    lease_s: float | None = Field(None, gt=0)
    transaction_timeout_s: float = Field(10.0, gt=0)
    takeover_read_timeout_s: float = Field(30.0, gt=0)
    revoke_commit_timeout_s: float = Field(2.0, gt=0)

    @model_validator(mode="after")
    def _timings(self) -> ClusterSettings:
        if self.heartbeat_interval_s * 2 > self.session_timeout_s:
            raise ValueError("heartbeat_interval_s: at most half of session_timeout_s")
        if self.lease() >= self.session_timeout_s - self.heartbeat_interval_s:
            # the lease must run out before the group can evict us and hand a slot on
            raise ValueError("lease_s: must be shorter than session_timeout_s - "
                             "heartbeat_interval_s")
        if self.lease() < self.heartbeat_interval_s:
            raise ValueError("lease_s: at least heartbeat_interval_s (it is renewed that often)")
        return self

    def lease(self) -> float:
        """The membership lease in seconds (configured, or session - 2 x heartbeat)."""
        if self.lease_s is not None:
            return self.lease_s
        return self.session_timeout_s - 2 * self.heartbeat_interval_s


StreamName = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")


def _loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")


def _http_only_to_loopback(url: str, key: str) -> None:
    """The real platforms' contracts: plain ``http``/``ws`` only to loopback (tests)."""
    scheme = urlsplit(url).scheme
    if scheme in ("http", "ws") and not _loopback(url):
        raise ValueError(f"{key}: {scheme}:// is only allowed to a loopback host; use "
                         f"{scheme}s://")


def _secret_from(stream: str, key: str, inline: SecretStr | None, env: str | None) -> str:
    if inline is not None:
        return inline.get_secret_value()
    assert env is not None
    value = os.environ.get(env)
    if not value:
        raise ConfigError(f"streams.{stream}.{key}_env", f"environment variable {env} is not set")
    return value


def _one_of(inline: SecretStr | None, env: str | None, key: str) -> None:
    if inline is None and env is None:
        raise ValueError(f"one of {key}_env or {key} is required")
    if inline is not None and env is not None:
        raise ValueError(f"give {key}_env or {key}, not both")


def key_error(key: str, problem: str) -> PydanticCustomError:
    """A validation error naming a key below the model's own path (``endpoints[1].url``):
    ``parse`` joins it to the path, so the error reads ``streams[0].endpoints[1].url: ...``."""
    return PydanticCustomError("ccstream_key", "{key}: {problem}",
                               {"key": key, "problem": problem})


PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")


def proxy_problem(url: str) -> str | None:  # noqa: PLR0911 (one return per rule)
    """Why ``url`` is not a usable proxy (None: it is). Never quotes the URL: it may carry the
    proxy's password. HTTP CONNECT (``http://``, ``https://``) and SOCKS5 (``socks5://``,
    ``socks5h://``: the proxy resolves names); SOCKS4 is refused: it has no password and no
    IPv6, and a proxy that speaks it speaks SOCKS5 too (docs/operations.md, "Proxies")."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "not a URL (expected http://[user:password@]host:port)"
    if parts.scheme in ("socks4", "socks4a"):
        return (f"{parts.scheme}:// is not supported (SOCKS4 has no password and no IPv6): "
                "use socks5:// or socks5h://")
    if parts.scheme not in PROXY_SCHEMES:
        return ("the scheme must be http://, https://, socks5:// or socks5h:// "
                "(http://[user:password@]host:port)")
    if not parts.hostname:
        return "no host (expected http://[user:password@]host:port)"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return "a proxy URL has no path, query or fragment"
    if parts.username is not None and parts.password is None:
        return "a user without a password (give user:password@, percent-encoded)"
    del port
    return None


def _check_proxy(proxy: SecretStr | None) -> None:
    if proxy is not None:
        problem = proxy_problem(proxy.get_secret_value())
        if problem is not None:
            raise key_error("proxy", problem)


class Endpoint(_Section):
    """One region of a stream: its socket URL and, when it differs, its token URL."""

    url: str = Field(pattern=r"^wss?://")
    token_url: str | None = Field(None, pattern=r"^https?://")


class StreamConfig(_Section):
    """A stream of the integration guide's flavours (``platform = "genesys" | "nice"``).

    One endpoint (``url`` + ``token_url``) or an ordered list (``endpoints``, the first is the
    primary; each one's ``token_url`` defaults to the stream's): ``endpoint_list()`` is the
    resolved list either way.
    """

    name: str = StreamName
    platform: GuidePlatform
    url: str | None = Field(None, pattern=r"^wss?://")
    token_url: str | None = Field(None, pattern=r"^https?://")
    endpoints: tuple[Endpoint, ...] | None = None
    # HTTP(S) CONNECT proxy for this stream's sockets, token and REST calls (a secret: it may
    # carry a password); None = HTTPS_PROXY / HTTP_PROXY / NO_PROXY of the environment
    proxy: SecretStr | None = None
    client_id: str = Field(min_length=1)
    client_secret_env: str | None = None
    client_secret: SecretStr | None = None
    types: tuple[str, ...] = ()
    # None = the platform's own interval (12 s Genesys, 25 s NICE)
    ping_interval_s: float | None = Field(None, gt=0)
    # how far back the platform replays; None = the platform adapter's assumption (one day)
    retention_s: float | None = Field(None, gt=0)
    ca_file: str | None = None
    insecure_skip_verify: bool = False

    @model_validator(mode="after")
    def _one_secret_source(self) -> StreamConfig:
        _one_of(self.client_secret, self.client_secret_env, "client_secret")
        _check_proxy(self.proxy)
        self._check_endpoints()
        return self

    def _check_endpoints(self) -> None:
        if self.endpoints is None:
            if self.url is None:
                raise key_error("url", "required (or endpoints = [{url = ...}, ...])")
            if self.token_url is None:
                raise key_error("token_url", "required")
            return
        if self.url is not None:
            raise key_error("endpoints", "give url or endpoints, not both")
        if not self.endpoints:
            raise key_error("endpoints", "give at least one endpoint")
        seen: dict[str, int] = {}
        for i, endpoint in enumerate(self.endpoints):
            if endpoint.url in seen:
                raise key_error(f"endpoints[{i}].url",
                                f"the same URL as endpoints[{seen[endpoint.url]}].url")
            seen[endpoint.url] = i
            if endpoint.token_url is None and self.token_url is None:
                raise key_error(f"endpoints[{i}].token_url",
                                "required (or one token_url for the stream)")

    def endpoint_list(self) -> tuple[Endpoint, ...]:
        """The stream's endpoints in order (the primary first), each with its token URL."""
        if self.endpoints is None:
            assert self.url is not None and self.token_url is not None
            return (Endpoint(url=self.url, token_url=self.token_url),)
        return tuple(Endpoint(url=e.url, token_url=e.token_url or self.token_url)
                     for e in self.endpoints)

    def secret(self) -> str:
        """The client secret, read from the environment variable when one is named."""
        return _secret_from(self.name, "client_secret", self.client_secret,
                            self.client_secret_env)

    def inline_secrets(self) -> tuple[str, ...]:
        return ("client_secret",) if self.client_secret is not None else ()


class GenesysCloudStream(_Section):
    """A Genesys Cloud Notifications stream (``platform = "genesys-cloud"``, docs/genesys-cloud.md).

    ``url``, ``token_url``, ``types`` and ``ping_interval_s`` are not keys of this platform and are
    refused like any unknown key (the contract says so: a socket with no token, topics instead
    of types, health checks instead of pings).
    """

    name: str = StreamName
    platform: Literal["genesys-cloud"]
    api_url: str = Field(pattern=r"^https?://")
    # None = api_url's host with its leading "api." replaced by "login." (the SDKs' rule)
    login_url: str | None = Field(None, pattern=r"^https?://")
    client_id: str = Field(min_length=1)
    client_secret_env: str | None = None
    client_secret: SecretStr | None = None
    topics: tuple[str, ...] = Field(min_length=1)
    # set: {queue} / {user} expand to exactly these ids (no listing)
    queues: tuple[str, ...] | None = None
    users: tuple[str, ...] | None = None
    backfill: bool = True
    settle_s: float = Field(60.0, ge=0)
    channel_rollover_s: float = Field(82_800.0, gt=0)
    max_channels: int = Field(5, ge=1, le=20)
    health_after_s: float = Field(35.0, gt=0)
    health_timeout_s: float = Field(5.0, gt=0)
    ca_file: str | None = None
    insecure_skip_verify: bool = False
    # HTTP(S) CONNECT proxy for REST, token and socket alike (see StreamConfig.proxy)
    proxy: SecretStr | None = None

    @model_validator(mode="after")
    def _checks(self) -> GenesysCloudStream:
        _one_of(self.client_secret, self.client_secret_env, "client_secret")
        _check_proxy(self.proxy)
        _http_only_to_loopback(self.api_url, "api_url")
        if self.login_url is not None:
            _http_only_to_loopback(self.login_url, "login_url")
        elif (not (urlsplit(self.api_url).hostname or "").startswith("api.")
              and not _loopback(self.api_url)):
            raise ValueError("login_url is required when api_url's host does not start "
                                 "with 'api.'")
        return self

    def login(self) -> str:
        """The login (OAuth) base URL: configured, or derived from ``api_url``."""
        if self.login_url is not None:
            return self.login_url.rstrip("/")
        parts = urlsplit(self.api_url)
        host = parts.netloc
        if host.startswith("api."):
            host = "login." + host[len("api."):]
        return urlunsplit((parts.scheme, host, "", "", "")).rstrip("/")

    def secret(self) -> str:
        return _secret_from(self.name, "client_secret", self.client_secret,
                            self.client_secret_env)

    def inline_secrets(self) -> tuple[str, ...]:
        return ("client_secret",) if self.client_secret is not None else ()


class CxoneStream(_Section):
    """A NICE CXone real-time data stream (``platform = "cxone"``, docs/cxone.md): HTTP polls."""

    name: str = StreamName
    platform: Literal["cxone"]
    discovery_url: str = Field("https://cxone.niceincontact.com", pattern=r"^https?://")
    access_key_id: str = Field(min_length=1)
    access_key_secret_env: str | None = None
    access_key_secret: SecretStr | None = None
    client_id: str = Field(min_length=1)
    client_secret_env: str | None = None
    client_secret: SecretStr | None = None
    tenant_id: str | None = None
    endpoints: tuple[CxoneEndpoint, ...] = CXONE_ENDPOINTS
    # at least one second: a faster poll only burns the tenant's rate limit (docs/cxone.md)
    poll_interval_s: float = Field(5.0, ge=1.0)
    api_version: str = "v32.0"
    backfill: bool = True
    settle_s: float = Field(60.0, ge=0)
    ca_file: str | None = None
    insecure_skip_verify: bool = False
    # HTTP(S) CONNECT proxy for discovery, token and polls (see StreamConfig.proxy)
    proxy: SecretStr | None = None

    @model_validator(mode="after")
    def _checks(self) -> CxoneStream:
        _one_of(self.access_key_secret, self.access_key_secret_env, "access_key_secret")
        _one_of(self.client_secret, self.client_secret_env, "client_secret")
        _check_proxy(self.proxy)
        _http_only_to_loopback(self.discovery_url, "discovery_url")
        parts = urlsplit(self.discovery_url)
        if not parts.hostname:
            raise ValueError(f"discovery_url: {self.discovery_url!r} has no host")
        if len(set(self.endpoints)) != len(self.endpoints) or not self.endpoints:
            raise ValueError("endpoints: give each endpoint once, at least one")
        return self

    def secret(self) -> str:
        """The app's client secret."""
        return _secret_from(self.name, "client_secret", self.client_secret,
                            self.client_secret_env)

    def access_secret(self) -> str:
        return _secret_from(self.name, "access_key_secret", self.access_key_secret,
                            self.access_key_secret_env)

    def inline_secrets(self) -> tuple[str, ...]:
        return tuple(key for key, value in (("client_secret", self.client_secret),
                                            ("access_key_secret", self.access_key_secret))
                     if value is not None)


AnyStream = Annotated[StreamConfig | GenesysCloudStream | CxoneStream,
                      Field(discriminator="platform")]


class DedupSettings(_Section):
    app_id: str = "ccstream-dedup"
    # sized for ~230 events/s per partition (20 M events per partition per 24 h window), see
    # README.md "The dedup pipeline"; expected_events_per_window is per partition
    window_s: float = Field(86_400.0, gt=0)
    generations: int = Field(3, ge=2)
    expected_events_per_window: int = Field(20_000_000, ge=1000)
    false_positive_rate: float = Field(1e-6, gt=0, lt=0.5)
    strict: bool = False
    workers_standby_replicas: int = Field(1, ge=0)
    # how often each partition's transaction commits: a clean record is invisible until then.
    # 0.1 s (Kafka Streams' exactly-once default) with the partitions committed concurrently:
    # p99 emit -> clean ~0.2-0.4 s at 2,000 events/s on 2 cores vs 1.5-3 s at 0.5 s committed
    # in turn, at no more worker CPU (bench/bench_latency.py)
    commit_interval_s: float = Field(0.1, gt=0)
    # the agent judges records in batches (up to this many, or what arrived within
    # batch_within_s): one changelog op and one lock round per partition per batch
    batch_max_events: int = Field(500, ge=1, le=10_000)
    batch_within_s: float = Field(0.01, gt=0, le=1.0)
    session_timeout_s: float = Field(10.0, gt=0)
    # static group membership (KIP-345): a worker restarted with the same id takes its own
    # place at once instead of waiting out the dead member's session; unique per worker, stable
    # across its restarts (a pod name). None: dynamic membership
    instance_id: str | None = Field(None, min_length=1)
    data_dir: str | None = None
    # bits spent relative to the Bloom optimum -ln p/(ln 2)^2; above 1.0 the filter uses the
    # fewest probes that still meet p (less CPU per event), see pipeline/bloom.py
    memory_factor: float = Field(1.0, ge=1.0, le=2.0)
    # changelog retention beyond the oldest live generation: covers a worker that is down this
    # long (older ops would be deleted before it recovers them)
    changelog_retention_margin_s: float = Field(7 * 86_400.0, ge=0)


class MetricsSettings(_Section):
    # None disables the HTTP endpoint; metrics are still kept in-process
    port: int | None = Field(None, ge=0, le=65535)
    host: str = "127.0.0.1"
    # /healthz (docs/operations.md): unhealthy once the event loop ran this late (a blocked loop)
    max_loop_lag_s: float = Field(5.0, gt=0)
    # /readyz: Kafka is checked this often in the background (each check bounded by it too)
    kafka_check_interval_s: float = Field(5.0, gt=0)
    # /readyz: a stream that stopped streaming less than this ago still counts (a reconnect)
    ready_grace_s: float = Field(15.0, ge=0)


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HHMM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$"


def minutes(hhmm: str) -> int:
    """``"02:30"`` -> 150 (``"24:00"`` -> 1440, the end of a day)."""
    hours, mins = hhmm.split(":")
    return int(hours) * 60 + int(mins)


class MaintenanceWindow(_Section):
    """A ``[[maintenance]]`` window (docs/operations.md): once (``start``/``end``, UTC) or weekly
    (``day``, ``from``, ``to``, UTC), for every stream of a ``platform`` or for ``streams``."""

    platform: Platform | None = None
    streams: tuple[str, ...] | None = None
    start: datetime | None = None      # a TOML datetime or RFC 3339; no offset = UTC
    end: datetime | None = None
    day: Weekday | None = None
    from_: str | None = Field(None, alias="from", pattern=_HHMM)
    to: str | None = Field(None, pattern=_HHMM)
    # inside the window a dropped stream makes one probe (a connection attempt) about this often
    probe_interval_s: float = Field(300.0, gt=0)

    @model_validator(mode="after")
    def _checks(self) -> MaintenanceWindow:
        if (self.platform is None) == (self.streams is None):
            raise key_error("platform", "give platform or streams (one of them)")
        if self.streams is not None and not self.streams:
            raise key_error("streams", "give at least one stream name")
        once = (self.start, self.end) != (None, None)
        weekly = (self.day, self.from_, self.to) != (None, None, None)
        if once == weekly:
            raise key_error("start", "give start and end, or day, from and to")
        if once:
            if self.start is None or self.end is None:
                raise key_error("end" if self.end is None else "start", "required")
            if self.epochs()[1] <= self.epochs()[0]:
                raise key_error("end", "the window ends before it starts")
        else:
            for key, value in (("day", self.day), ("from", self.from_), ("to", self.to)):
                if value is None:
                    raise key_error(key, "required for a weekly window")
            assert self.from_ is not None and self.to is not None
            if minutes(self.to) <= minutes(self.from_):
                raise key_error("to", "the window ends before it starts (a window across "
                                "midnight is two windows)")
        return self

    def epochs(self) -> tuple[float, float]:
        """A one-off window's start and end, epoch seconds (a naive datetime is UTC)."""
        assert self.start is not None and self.end is not None
        return _utc_epoch(self.start), _utc_epoch(self.end)

    def covers(self, stream: str, platform: str) -> bool:
        return (self.streams is not None and stream in self.streams) or \
            self.platform == platform


def _utc_epoch(when: datetime) -> float:
    return (when if when.tzinfo is not None else when.replace(tzinfo=UTC)).timestamp()


class LogSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "console"] = "json"


class Config(_Section):
    kafka: KafkaSettings = KafkaSettings()
    topics: TopicNames = TopicNames()
    connector: ConnectorSettings = ConnectorSettings()
    dedup: DedupSettings = DedupSettings()
    cluster: ClusterSettings = ClusterSettings()
    metrics: MetricsSettings = MetricsSettings()
    log: LogSettings = LogSettings()
    streams: tuple[AnyStream, ...] = ()
    maintenance: tuple[MaintenanceWindow, ...] = ()

    @model_validator(mode="after")
    def _unique_stream_names(self) -> Config:
        seen: set[str] = set()
        for stream in self.streams:
            if stream.name in seen:
                raise ValueError(f"stream name {stream.name!r} is used twice")
            seen.add(stream.name)
        for i, window in enumerate(self.maintenance):
            unknown = sorted(set(window.streams or ()) - seen)
            if unknown:
                raise key_error(f"maintenance[{i}].streams",
                                f"no [[streams]] entry named {', '.join(unknown)}")
        return self

    def maintenance_for(self, stream: AnyStream) -> tuple[MaintenanceWindow, ...]:
        """The ``[[maintenance]]`` windows that cover ``stream``."""
        return tuple(w for w in self.maintenance if w.covers(stream.name, stream.platform))


_PLATFORM_TAGS = ("genesys", "nice", "genesys-cloud", "cxone")


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after", "model") or part in _PLATFORM_TAGS:
            continue  # pydantic's validator markers and union tags are not keys
        else:
            out += f".{part}" if out else str(part)
    return out


def _apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Overlay ``CCSTREAM_SECTION__KEY=value`` onto the parsed file."""
    for name, value in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX):].split("__")]
        node: Any = data
        for i, part in enumerate(path):
            last = i == len(path) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(".".join(path[:i + 1]), f"no such list item (from {name})")
                if last:
                    node[int(part)] = value
                else:
                    node = node[int(part)]
            elif last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
    return data


def parse(data: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Config:
    """Validate a parsed TOML document (plus environment overrides) into a ``Config``."""
    env = os.environ if environ is None else environ
    merged = _apply_env(_deep_copy(data), env)
    try:
        config = Config.model_validate(merged)
    except ValidationError as err:
        first = err.errors()[0]
        loc = tuple(first["loc"])
        if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = (*loc, "platform")  # the stream's platform picks its keys: name that key
        if first["type"] == "ccstream_key":  # a key below the failing model (key_error)
            ctx = first.get("ctx") or {}
            key = str(ctx["key"])
            path = _key_path(loc)
            joined = path + ("" if not path or key.startswith("[") else ".") + key
            raise ConfigError(joined, str(ctx["problem"])) from None
        raise ConfigError(_key_path(loc), first["msg"]) from None
    environment_proxies(env)  # a proxy variable that does not parse is refused at start too
    return config


def environment_proxies(environ: Mapping[str, str]) -> dict[str, str]:
    """``HTTPS_PROXY``, ``HTTP_PROXY`` and ``NO_PROXY`` of ``environ`` as ``{"https", "http",
    "no_proxy"}`` (lower-case names first, as curl and urllib read them; a value without a scheme
    is ``http://``, as curl takes it). A proxy that does not parse is a ``ConfigError`` naming
    the variable."""
    out: dict[str, str] = {}
    for key in ("https_proxy", "http_proxy", "no_proxy"):
        name = key if environ.get(key) else key.upper()
        value = (environ.get(name) or "").strip()
        if not value:
            continue
        if key != "no_proxy":
            value = value if "://" in value else "http://" + value
            problem = proxy_problem(value)
            if problem is not None:
                raise ConfigError(name, problem)
        out[key.removesuffix("_proxy") if key != "no_proxy" else key] = value
    return out


def load(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate a TOML configuration file; every problem is a ``ConfigError``."""
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as err:
        raise ConfigError("", f"cannot read config file {file}: {err.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError("", f"{file} is not valid TOML: {err}") from None
    return parse(data, environ)


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value
