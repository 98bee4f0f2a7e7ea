"""Settings merge: file < environment < flags, every typo is an error, and every bad value is
one line in the user's terms: the key as written, what was expected, the value, and where it
came from (file, environment, command line), never a Python type name."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from conftest import disksync_cmd, scaled
from disksync.cli.common import read_config_file, settings_from
from disksync.config import (
    PositiveInt,
    ServeSettings,
    load_settings,
    parse_listen,
    parse_start,
)
from disksync.errors import ConfigError

PYTHON_WORDS = ("PathLike", "NoneType", "`", "int object", "str object", "Traceback")


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
        env={"DISKSYNC_ALLOW_PLAINTEXT": "true", "DISKSYNC_RETENTION_MAX_BYTES": "1000"},
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
    with pytest.raises(
        ConfigError, match=f"{var}: expected a finite number|{var}: expected a whole"
    ):
        load_settings(ServeSettings, env={var: value})


def test_frame_cache_bytes_reaches_the_server_and_must_be_positive() -> None:
    from disksync.cli.serve import server_config_from

    settings = load_settings(ServeSettings, file_values={"frame_cache_bytes": 1234})
    assert server_config_from(settings, None).frame_cache_bytes == 1234
    assert server_config_from(load_settings(ServeSettings), None).frame_cache_bytes == (
        8 * 1024 * 1024
    )
    with pytest.raises(ConfigError, match="frame_cache_bytes: expected a whole number > 0, got 0"):
        load_settings(ServeSettings, file_values={"frame_cache_bytes": 0})


@dataclass(frozen=True)
class Every:
    """One field of every kind a settings class uses (``load_settings`` is generic)."""

    path: Path = Path("p")
    count: PositiveInt = 1
    ratio: float = 0.5
    flag: bool = False
    limit: PositiveInt | None = None
    mode: Literal["fast", "safe"] = "fast"
    name: str = "n"
    names: tuple[str, ...] = ()


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("path", 5, "path: expected a path (a string), got 5 (from every.toml)"),
        ("path", "", "path: expected a path (a string), got '' (from every.toml)"),
        ("count", "3", "count: expected a whole number > 0, got '3' (from every.toml)"),
        ("count", 0, "count: expected a whole number > 0, got 0 (from every.toml)"),
        ("count", 1.5, "count: expected a whole number > 0, got 1.5 (from every.toml)"),
        ("ratio", True, "ratio: expected a number, got True (from every.toml)"),
        ("ratio", "0.5", "ratio: expected a number, got '0.5' (from every.toml)"),
        ("flag", "yes", "flag: expected true or false, got 'yes' (from every.toml)"),
        ("flag", 1, "flag: expected true or false, got 1 (from every.toml)"),
        ("limit", -1, "limit: expected a whole number > 0, got -1 (from every.toml)"),
        ("mode", "slow", "mode: expected one of 'fast', 'safe', got 'slow' (from every.toml)"),
        ("name", 5, "name: expected a string, got 5 (from every.toml)"),
        ("name", ["a"], "name: expected a string, got ['a'] (from every.toml)"),
        ("names", "a", "names: expected a list, each a string, got 'a' (from every.toml)"),
        ("names", [1], "names: expected a list, each a string, got [1] (from every.toml)"),
    ],
)
def test_bad_file_values_say_key_expectation_value_and_file(
    key: str, value: object, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(Every, file_values={key: value}, file_name="every.toml")
    assert str(caught.value) == expected
    assert not any(word in expected for word in PYTHON_WORDS)


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        ("DISKSYNC_PATH", "", "expected a path (a string), got ''"),
        ("DISKSYNC_COUNT", "many", "expected a whole number > 0, got 'many'"),
        ("DISKSYNC_COUNT", "-2", "expected a whole number > 0, got '-2'"),
        ("DISKSYNC_RATIO", "half", "expected a number, got 'half'"),
        ("DISKSYNC_FLAG", "maybe", "expected true or false, got 'maybe'"),
        ("DISKSYNC_LIMIT", "lots", "expected a whole number > 0, or empty for none, got 'lots'"),
        ("DISKSYNC_MODE", "slow", "expected one of 'fast', 'safe', got 'slow'"),
    ],
)
def test_bad_env_values_say_variable_expectation_value_and_environment(
    var: str, value: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(Every, env={var: value})
    assert str(caught.value) == f"{var}: {expected} (from the environment)"


def test_good_values_of_every_kind_from_file_and_env() -> None:
    from_file = load_settings(
        Every,
        file_values={
            "path": "/x",
            "count": 3,
            "ratio": 2,  # a TOML integer is a fine number
            "flag": True,
            "limit": 7,
            "mode": "safe",
            "name": "a",
        },
    )
    assert from_file == Every(Path("/x"), 3, 2.0, True, 7, "safe", "a")
    assert load_settings(Every, file_values={"names": ["a", "b"]}).names == ("a", "b")
    from_env = load_settings(
        Every,
        env={
            "DISKSYNC_PATH": "/x",
            "DISKSYNC_COUNT": "3",
            "DISKSYNC_RATIO": "2",
            "DISKSYNC_FLAG": "TRUE",
            "DISKSYNC_LIMIT": "7",
            "DISKSYNC_MODE": "safe",
            "DISKSYNC_NAME": "5",  # a string setting takes any text, digits too
        },
    )
    assert from_env == Every(Path("/x"), 3, 2.0, True, 7, "safe", "5")
    for empty in ("", "none"):
        assert load_settings(Every, env={"DISKSYNC_LIMIT": empty}).limit is None
    assert load_settings(Every, env={"DISKSYNC_FLAG": "0"}).flag is False


def test_bad_flag_values_name_the_flag_and_the_command_line() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(ServeSettings, flags={"max_lag_seqs": "lots"})
    assert str(caught.value) == (
        "--max-lag-seqs: expected a whole number > 0, got 'lots' (from the command line)"
    )


def test_checked_strings_name_their_source() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(ServeSettings, file_values={"start": "oldest"}, file_name="d.toml")
    assert str(caught.value) == (
        "start: expected earliest, latest or a seq >= 0, got 'oldest' (from d.toml)"
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(ServeSettings, env={"DISKSYNC_LISTEN": "localhost"})
    assert str(caught.value) == (
        "DISKSYNC_LISTEN: expected HOST:PORT or [IPV6]:PORT, port 0-65535, got 'localhost'"
        " (from the environment)"
    )


def test_a_key_written_with_dashes_is_named_as_written() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(ServeSettings, file_values={"max-lag-seqs": "x"}, file_name="d.toml")
    assert str(caught.value).startswith("max-lag-seqs: expected a whole number > 0, got 'x'")


def test_unknown_keys_suggest_the_close_one() -> None:
    with pytest.raises(ConfigError, match=r"unknown setting 'lisen' \(did you mean 'listen'\?\)"):
        load_settings(ServeSettings, file_values={"lisen": "x"}, file_name="d.toml")
    with pytest.raises(ConfigError, match="did you mean 'DISKSYNC_LISTEN'"):
        load_settings(ServeSettings, env={"DISKSYNC_LISTN": "x"})


def test_settings_built_in_code_are_checked_too() -> None:
    with pytest.raises(ConfigError, match="max_clients: expected a whole number > 0, got 0$"):
        ServeSettings(max_clients=0)


def test_serve_with_a_wrong_type_in_the_file_is_one_plain_line(tmp_path: Path) -> None:
    cfg = tmp_path / "disksync.toml"
    cfg.write_text("[serve]\ndata_dir = 5\n")
    result = subprocess.run(
        disksync_cmd("serve", "--config", str(cfg), "--state-dir", str(tmp_path / "state")),
        capture_output=True,
        text=True,
        timeout=scaled(30),
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"disksync: configuration error: data_dir: expected a path (a string), got 5 (from {cfg})\n"
    )
    assert not (tmp_path / "state").exists()


def test_a_setting_outside_the_serve_table_is_an_error(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('lisen = "0.0.0.0:1"\n[serve]\nregion = "eu"\n')
    with pytest.raises(ConfigError) as caught:
        read_config_file(cfg, "serve")
    assert str(caught.value) == (
        f"{cfg}: setting 'lisen' is outside every table; with tables in the file, settings go"
        " under one (here [serve])"
    )


def test_an_unknown_table_is_an_error_with_a_suggestion(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[serve]\nregion = "eu"\n[sever]\nlisten = "0.0.0.0:1"\n')
    with pytest.raises(ConfigError) as caught:
        read_config_file(cfg, "serve")
    assert str(caught.value) == (
        f"{cfg}: unknown table [sever] (did you mean [serve]?); known tables: [serve]"
    )
    alone = tmp_path / "alone.toml"  # a flat file's sub-table is a table too, not a setting
    alone.write_text('region = "eu"\n[listen]\nport = 1\n')
    with pytest.raises(ConfigError, match=r"unknown table \[listen\]; known tables: \[serve\]"):
        read_config_file(alone, "serve")


def test_tables_other_commands_read_are_allowed(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[serve]\nregion = "eu"\n[archive]\nbucket = "b"\n')
    tables = frozenset({"serve", "archive"})
    assert read_config_file(cfg, "serve", known_tables=tables) == {"region": "eu"}
    assert read_config_file(cfg, "archive", known_tables=tables) == {"bucket": "b"}
    only_other = tmp_path / "other.toml"
    only_other.write_text('[archive]\nbucket = "b"\n')
    assert read_config_file(only_other, "serve", known_tables=tables) == {}
    not_a_table = tmp_path / "n.toml"
    not_a_table.write_text("serve = 5\n")
    with pytest.raises(ConfigError, match=r"\[serve\] must be a table"):
        read_config_file(not_a_table, "serve")


def test_serve_refuses_a_file_with_a_misspelt_table(tmp_path: Path) -> None:
    cfg = tmp_path / "disksync.toml"
    cfg.write_text('[serve]\nregion = "eu"\n\n[sever]\nlisten = "127.0.0.1:1"\n')
    result = subprocess.run(
        disksync_cmd("serve", "--config", str(cfg), "--state-dir", str(tmp_path / "state")),
        capture_output=True,
        text=True,
        timeout=scaled(30),
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"disksync: configuration error: {cfg}: unknown table [sever] (did you mean [serve]?);"
        " known tables: [serve]\n"
    )
    assert not (tmp_path / "state").exists()
