"""Print the settings table for docs/configuration.md from the declarative settings list.

.venv/bin/python scripts/settings_table.py
"""

from __future__ import annotations

import json

from concierge.config import setting_infos


def main() -> None:
    print("| setting | environment variable | type | default | meaning |")
    print("|---|---|---|---|---|")
    for info in setting_infos():
        default = json.dumps(info.default, default=str) if info.default is not None else "—"
        kind = info.type.replace("|", "or")
        print(f"| `{info.name}` | `{info.env_var}` | {kind} | `{default}` | {info.help} |")


if __name__ == "__main__":
    main()
