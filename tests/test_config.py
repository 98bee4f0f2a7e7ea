"""Settings merge: file < environment < flags, and every typo is an error."""

from __future__ import annotations

from pathlib import Path

import pytest

from disksync.cli.common import read_config_file, settings_from
from disksync.config import ServeSettings, load_settings, parse_listen, parse_start
from disksync.errors import ConfigError


def test_defaults_are_the_embedded_ones() -> None:
    s = load_settings(ServeSettings)
    assert s.listen == "127.0.0.1:8765"
    assert s.start == "latest"
    assert s.journal_url() == "sqlite:disksync-state/journal.sqlite"
    assert s.max_lag_seqs == 1000
    assert s.max_lag_bytes == 32 * 1024 * 1024


def test_precedence_file_then_env_then_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "disksync.toml"
    cfg.write_text('[serve]\nlisten = "127.0.0.1:1"\nheartbeat-s = 7\nregion = "file"\n')
    env = {"DISKSYNC_LISTEN": "127.0.0.1:2", "DISKSYNC_REGION": "env", "HOME": "/x"}
    s = settings_from(
        ServeSettings,
        config_file=cfg,
        section="serve",
        flags={"listen": "127.0.0.1:3", "region": None},
        env=env,
    )
    assert s.listen == "127.0.0.1:3"  # flag wins
    assert s.region == "env"  # env beats file; a None flag is "not given"
    assert s.heartbeat_s == 7.0  # file value converted to the field's type


def test_unknown_file_key_is_an_error(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[serve]\nlistn = "x"\n')
    with pytest.raises(ConfigError, match="unknown setting 'listn'"):
        settings_from(ServeSettings, config_file=cfg, section="serve", flags={}, env={})


def test_unknown_env_setting_is_an_error_but_client_and_test_vars_are_not() -> None:
    with pytest.raises(ConfigError, match="DISKSYNC_LISTN"):
        load_settings(ServeSettings, env={"DISKSYNC_LISTN": "x"})
    s = load_settings(
        ServeSettings,
        env={"DISKSYNC_API_KEY": "k", "DISKSYNC_TEST_TIMEOUT_SCALE": "3", "OTHER": "1"},
    )
    assert s == ServeSettings()


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("DISKSYNC_MAX_LAG_SEQS", "many"),
        ("DISKSYNC_ALLOW_PLAINTEXT", "maybe"),
        ("DISKSYNC_HEARTBEAT_S", "soon"),
    ],
)
def test_bad_env_values_name_their_variable(var: str, value: str) -> None:
    with pytest.raises(ConfigError, match=var):
        load_settings(ServeSettings, env={var: value})


def test_bool_and_optional_conversion() -> None:
    s = load_settings(
        ServeSettings,
        env={"DISKSYNC_ALLOW_PLAINTEXT": "yes", "DISKSYNC_RETENTION_MAX_BYTES": "1000"},
    )
    assert s.allow_plaintext is True
    assert s.retention_max_bytes == 1000
    s = load_settings(ServeSettings, file_values={"retention_max_bytes": None})
    assert s.retention_max_bytes is None


def test_wrong_toml_types_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_lag_seqs"):
        load_settings(ServeSettings, file_values={"max_lag_seqs": True})
    with pytest.raises(ConfigError, match="listen"):
        load_settings(ServeSettings, file_values={"listen": 8765})


def test_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        read_config_file(tmp_path / "missing.toml", "serve")
    bad = tmp_path / "bad.toml"
    bad.write_text("listen = \n")
    with pytest.raises(ConfigError, match="bad.toml"):
        read_config_file(bad, "serve")
    flat = tmp_path / "flat.toml"
    flat.write_text('listen = "127.0.0.1:9"\n')
    assert read_config_file(flat, "serve") == {"listen": "127.0.0.1:9"}


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:8765") == ("127.0.0.1", 8765)
    assert parse_listen("[::1]:80") == ("::1", 80)
    for bad in ["8765", ":80", "host:port", "h:70000"]:
        with pytest.raises(ConfigError):
            parse_listen(bad)


def test_parse_start() -> None:
    assert parse_start("earliest") == "earliest"
    assert parse_start("latest") == "latest"
    assert parse_start("123") == 123
    for bad in ["-1", "oldest", "1.5"]:
        with pytest.raises(ConfigError):
            parse_start(bad)


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("DISKSYNC_RETENTION_MAX_AGE_S", "inf"),
        ("DISKSYNC_RETENTION_MAX_AGE_S", "nan"),
        ("DISKSYNC_RETENTION_MAX_AGE_S", "-5"),
        ("DISKSYNC_POLL_INTERVAL_S", "inf"),
        ("DISKSYNC_MAX_LAG_SEQS", "0"),
    ],
)
def test_values_that_mean_no_limit_or_no_progress_are_refused(var: str, value: str) -> None:
    with pytest.raises(ConfigError, match="must be"):
        load_settings(ServeSettings, env={var: value})


def test_frame_cache_bytes_reaches_the_server_and_must_be_positive() -> None:
    from disksync.cli.serve import server_config_from

    settings = load_settings(ServeSettings, file_values={"frame_cache_bytes": 1234})
    assert server_config_from(settings, None).frame_cache_bytes == 1234
    assert server_config_from(load_settings(ServeSettings), None).frame_cache_bytes == (
        8 * 1024 * 1024
    )
    with pytest.raises(ConfigError, match="frame-cache-bytes must be a finite number > 0"):
        load_settings(ServeSettings, file_values={"frame_cache_bytes": 0})
