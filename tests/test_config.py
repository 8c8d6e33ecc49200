"""Settings: defaults, TOML, environment, validation messages, redaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from concierge.config import Settings, load_settings, redacted
from concierge.errors import ConfigError


def test_defaults_without_any_source() -> None:
    s = load_settings(env={})
    assert s.port == 8000 and s.host == "127.0.0.1"
    assert s.data_dir == Path("data")
    assert s.resolved_database_url.endswith("data/concierge.db")
    assert s.resolved_models_dir == Path("data/models")


def test_precedence_file_then_env_then_overrides(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        'port = 9000\nhost = "0.0.0.0"\n[model_aliases]\n"gpt-4o" = "gemma-3-270m"\n'
        '[[upstreams]]\nname = "vllm"\nbase_url = "http://gpu:8000/v1/"\n'
        'models = ["llama"]\n'
    )
    s = load_settings(config, env={"CONCIERGE_PORT": "9100"}, host="10.0.0.1")
    assert s.port == 9100  # env beats the file
    assert s.host == "10.0.0.1"  # an explicit override beats both
    assert s.model_aliases == {"gpt-4o": "gemma-3-270m"}
    assert s.upstreams[0].base_url == "http://gpu:8000/v1"  # trailing slash removed


def test_config_file_from_environment(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("workers = 3\n")
    assert load_settings(env={"CONCIERGE_CONFIG": str(config)}).workers == 3


def test_json_values_from_environment() -> None:
    env = {
        "CONCIERGE_UPSTREAMS": '[{"name": "o", "base_url": "http://x/v1", "models": ["m"]}]',
        "CONCIERGE_MODEL_FALLBACKS": '{"m": ["gemma-3-270m"]}',
    }
    s = load_settings(env=env)
    assert s.upstreams[0].models == ["m"] and s.model_fallbacks == {"m": ["gemma-3-270m"]}


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"CONCIERGE_PORT": "eighty"}, "port (from CONCIERGE_PORT)"),
        ({"CONCIERGE_PORT": "70000"}, "less than or equal to 65535"),
        ({"CONCIERGE_LOG_LEVEL": "loud"}, "log_level"),
        ({"CONCIERGE_UPSTREAMS": "[{"}, "CONCIERGE_UPSTREAMS: not valid JSON"),
        (
            {"CONCIERGE_UPSTREAMS": '[{"name": "x", "base_url": "ftp://x", "models": ["m"]}]'},
            "http:// or https://",
        ),
        ({"CONCIERGE_UPSTREAMS": '[{"name": "x", "base_url": "http://x"}]'}, "models or embedding"),
        ({"CONCIERGE_ADMIN_KEY": "short"}, "admin_key"),
    ],
)
def test_bad_values_are_named(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env=env)
    assert needle in info.value.message


def test_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("port = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad, env={})
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        load_settings(unknown, env={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml", env={})


def test_redacted_hides_secrets() -> None:
    s = Settings(
        admin_key="sk-cc-supersecretvalue123",
        database_url="postgresql+psycopg://app:hunter2@db/concierge",
        upstreams=[
            {
                "name": "o",
                "base_url": "http://x/v1",
                "models": ["m"],  # type: ignore[list-item]
                "api_key": "upstream-secret",
            }
        ],
    )
    shown = str(redacted(s))
    for secret in ("supersecretvalue", "hunter2", "upstream-secret"):
        assert secret not in shown
    assert "db/concierge" in shown
