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
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

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


class StreamConfig(_Section):
    """A stream of the integration guide's flavours (``platform = "genesys" | "nice"``)."""

    name: str = StreamName
    platform: GuidePlatform
    url: str = Field(pattern=r"^wss?://")
    token_url: str = Field(pattern=r"^https?://")
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
        return self

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

    @model_validator(mode="after")
    def _checks(self) -> GenesysCloudStream:
        _one_of(self.client_secret, self.client_secret_env, "client_secret")
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

    @model_validator(mode="after")
    def _checks(self) -> CxoneStream:
        _one_of(self.access_key_secret, self.access_key_secret_env, "access_key_secret")
        _one_of(self.client_secret, self.client_secret_env, "client_secret")
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
    commit_interval_s: float = Field(0.5, gt=0)
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

    @model_validator(mode="after")
    def _unique_stream_names(self) -> Config:
        seen: set[str] = set()
        for stream in self.streams:
            if stream.name in seen:
                raise ValueError(f"stream name {stream.name!r} is used twice")
            seen.add(stream.name)
        return self


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
    merged = _apply_env(_deep_copy(data), os.environ if environ is None else environ)
    try:
        return Config.model_validate(merged)
    except ValidationError as err:
        first = err.errors()[0]
        loc = tuple(first["loc"])
        if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = (*loc, "platform")  # the stream's platform picks its keys: name that key
        raise ConfigError(_key_path(loc), first["msg"]) from None


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
