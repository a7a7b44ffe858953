"""The configuration file (TOML) of ``../shared/contracts/kafka-and-cli.md``, typed and validated.

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
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

ENV_PREFIX = "CCSTREAM_"

Platform = Literal["genesys", "nice"]


class ConfigError(ValueError):
    """Bad configuration; ``key`` is the path of the offending key (``streams[0].url``)."""

    retriable = False

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


class StreamConfig(_Section):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    platform: Platform
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
        if self.client_secret is None and self.client_secret_env is None:
            raise ValueError("one of client_secret_env or client_secret is required")
        if self.client_secret is not None and self.client_secret_env is not None:
            raise ValueError("give client_secret_env or client_secret, not both")
        return self

    def secret(self) -> str:
        """The client secret, read from the environment variable when one is named."""
        if self.client_secret is not None:
            return self.client_secret.get_secret_value()
        assert self.client_secret_env is not None
        value = os.environ.get(self.client_secret_env)
        if not value:
            raise ConfigError(
                f"streams.{self.name}.client_secret_env",
                f"environment variable {self.client_secret_env} is not set",
            )
        return value


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
    metrics: MetricsSettings = MetricsSettings()
    log: LogSettings = LogSettings()
    streams: tuple[StreamConfig, ...] = ()

    @model_validator(mode="after")
    def _unique_stream_names(self) -> Config:
        seen: set[str] = set()
        for stream in self.streams:
            if stream.name in seen:
                raise ValueError(f"stream name {stream.name!r} is used twice")
            seen.add(stream.name)
        return self


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after", "model"):  # pydantic validator markers, not keys
            continue
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
        raise ConfigError(_key_path(tuple(first["loc"])), first["msg"]) from None


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
