"""Configuration: TOML of the contract, environment overrides, errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccstream import config

MINIMAL = """
[kafka]
bootstrap_servers = "127.0.0.1:9092"

[[streams]]
name = "genesys-main"
platform = "genesys"
url = "wss://api.example.test/api/v2/analytics/events"
token_url = "https://login.example.test/oauth/token"
client_id = "abc"
client_secret_env = "GENESYS_CLIENT_SECRET"
types = ["interaction.routed", "interaction.completed"]
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ccstream.toml"
    path.write_text(text)
    return path


def test_contract_example_loads_with_defaults(tmp_path: Path) -> None:
    """The contract's example file loads; unspecified settings take their defaults."""
    cfg = config.load(_write(tmp_path, MINIMAL), environ={})
    assert cfg.topics.raw == "ccstream.events.raw"
    assert cfg.topics.cursors == "ccstream.cursors"
    assert cfg.streams[0].types == ("interaction.routed", "interaction.completed")
    assert cfg.connector.token_safety_buffer_s == 300.0
    assert cfg.connector.grace_period_s == 12.0
    assert cfg.connector.max_attempts == 8


def test_environment_overrides_file(tmp_path: Path) -> None:
    """CCSTREAM_<SECTION>__<KEY> wins over the file, list items by index."""
    env = {
        "CCSTREAM_KAFKA__BOOTSTRAP_SERVERS": "10.0.0.1:9093",
        "CCSTREAM_CONNECTOR__MAX_ATTEMPTS": "3",
        "CCSTREAM_STREAMS__0__CLIENT_ID": "from-env",
        "UNRELATED": "x",
    }
    cfg = config.load(_write(tmp_path, MINIMAL), environ=env)
    assert cfg.kafka.bootstrap_servers == "10.0.0.1:9093"
    assert cfg.connector.max_attempts == 3
    assert cfg.streams[0].client_id == "from-env"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (MINIMAL + "\n[kafka2]\nx = 1\n", "kafka2"),
        (MINIMAL.replace('platform = "genesys"', 'platform = "avaya"'), "streams[0].platform"),
        (MINIMAL.replace('client_id = "abc"\n', ""), "streams[0].client_id"),
        (MINIMAL.replace("[kafka]", "[kafka]\nlinger_ms = \"soon\""), "kafka.linger_ms"),
        (MINIMAL.replace('types = [', 'typo = 1\ntypes = ['), "streams[0].typo"),
    ],
)
def test_bad_keys_are_rejected_with_their_path(tmp_path: Path, text: str, key: str) -> None:
    """Unknown keys, wrong types and missing required keys name the key's path."""
    with pytest.raises(config.ConfigError) as err:
        config.load(_write(tmp_path, text), environ={})
    assert err.value.key == key


def test_malformed_toml_is_one_clear_error(tmp_path: Path) -> None:
    """A file that is not TOML says so, with the file name."""
    with pytest.raises(config.ConfigError, match="is not valid TOML"):
        config.load(_write(tmp_path, "[kafka\nbootstrap"), environ={})


def test_missing_file_is_one_clear_error(tmp_path: Path) -> None:
    """A path that cannot be read says so."""
    with pytest.raises(config.ConfigError, match="cannot read config file"):
        config.load(tmp_path / "nope.toml", environ={})


def test_duplicate_stream_names_are_rejected() -> None:
    """Stream names are the cursor key, so they must be unique."""
    stream = {"name": "s", "platform": "nice", "url": "ws://h/p", "token_url": "http://h/t",
              "client_id": "c", "client_secret": "x"}
    with pytest.raises(config.ConfigError, match="used twice"):
        config.parse({"streams": [stream, stream]}, environ={})


def test_secret_is_read_from_env_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    """client_secret_env is resolved at use; an inline secret is masked in reprs."""
    inline = config.parse({"streams": [{"name": "s", "platform": "nice", "url": "ws://h/p",
                                        "token_url": "http://h/t", "client_id": "c",
                                        "client_secret": "hunter2"}]}, environ={})
    assert "hunter2" not in repr(inline)
    assert inline.streams[0].secret() == "hunter2"
    from_env = config.parse({"streams": [{"name": "s", "platform": "nice", "url": "ws://h/p",
                                          "token_url": "http://h/t", "client_id": "c",
                                          "client_secret_env": "MY_SECRET"}]}, environ={})
    monkeypatch.delenv("MY_SECRET", raising=False)
    with pytest.raises(config.ConfigError, match="MY_SECRET is not set"):
        from_env.streams[0].secret()
    monkeypatch.setenv("MY_SECRET", "s3cr3t")
    assert from_env.streams[0].secret() == "s3cr3t"
