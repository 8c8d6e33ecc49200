"""The built-in personal-data recognisers, registered through the same hook as any plugin's.

No moderation classifier is built in: none that runs offline on a CPU was available to ship
(see docs/governance.md); block lists and patterns work without one, and a plugin can add one
through ``register_moderation_classifiers``.
"""

from __future__ import annotations

from collections.abc import Callable

from concierge.config import Settings
from concierge.governance.pii import Recognizer, builtin_recognizers
from concierge.hookspecs import hookimpl


@hookimpl
def register_pii_recognizers(register: Callable[[Recognizer], None], settings: Settings) -> None:
    """E-mail, payment cards, IBANs, national ids, IP addresses and phone numbers."""
    for recognizer in builtin_recognizers():
        register(recognizer)
