"""``concierge channels``: connect a channel from the command line, secrets kept out of sight."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SECRET = "telegram-secret-token-0123456789"
TOKEN = "123456:ABC-cli_token"


def test_channels_are_managed_from_the_command_line(cli: Any, tmp_path: Path) -> None:
    cli("demo", "seed")
    secrets = tmp_path / "telegram.json"
    secrets.write_text(json.dumps({"bot_token": TOKEN, "secret_token": SECRET}))
    made = cli(
        "channels", "create", "--org", "acme", "--type", "telegram",
        "--assistant", "acme-support", "--config-file", str(secrets),
        "--set", "messages_per_second=5", "--no-connect",
    )  # fmt: skip
    shown = json.loads(made.stdout)
    assert shown["config"]["bot_token"] == "********"
    assert shown["config"]["messages_per_second"] == 5
    assert shown["webhook_url"].endswith(f"/channels/{shown['id']}/webhook")
    assert TOKEN not in made.stdout and SECRET not in made.stdout

    listed = cli("channels", "list", "--org", "acme").stdout
    assert shown["id"] in listed
    types = cli("channels", "types").stdout
    assert "whatsapp" in types and "bot_token*" in types

    disabled = json.loads(cli("channels", "update", shown["id"], "--disable").stdout)
    assert disabled["status"] == "disabled"
    assert disabled["config"]["messages_per_second"] == 5
    assert "resealed the secrets of 1 channel" in cli("channels", "reseal").stdout
    assert json.loads(cli("channels", "show", shown["id"]).stdout)["id"] == shown["id"]
    assert "id" in cli("channels", "events", shown["id"]).stdout
    assert "id" in cli("channels", "messages", shown["id"]).stdout

    bad = cli("channels", "create", "--org", "acme", "--type", "fax", "--assistant",
              "acme-support", "--no-connect", ok=False)  # fmt: skip
    assert bad.returncode == 2 and "unknown channel type" in bad.stderr
    short = cli("channels", "create", "--org", "acme", "--type", "telegram", "--assistant",
                "acme-support", "--set", "bot_token=1:x", "--no-connect", ok=False)  # fmt: skip
    assert short.returncode == 2 and "secret_token" in short.stderr

    cli("channels", "delete", shown["id"], "--yes")
    missing = cli("channels", "show", shown["id"], ok=False)
    assert missing.returncode == 2 and "not found" in missing.stderr
