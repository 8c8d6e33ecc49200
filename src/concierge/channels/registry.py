"""The channel types a server knows, from the ``register_channels`` hook."""

from __future__ import annotations

import pluggy

from concierge.channels.base import ChannelType
from concierge.config import Settings
from concierge.errors import InvalidRequest


class ChannelTypes:
    def __init__(self, types: list[ChannelType]) -> None:
        self.types: dict[str, ChannelType] = {}
        for kind in types:
            if kind.name in self.types:
                raise ValueError(f"two channel types are called {kind.name!r}")
            self.types[kind.name] = kind

    @classmethod
    def from_plugins(cls, pm: pluggy.PluginManager, settings: Settings) -> ChannelTypes:
        found: list[ChannelType] = []
        pm.hook.register_channels(register=found.append, settings=settings)
        return cls(found)

    def get(self, name: str) -> ChannelType:
        try:
            return self.types[name]
        except KeyError:
            known = ", ".join(sorted(self.types)) or "none"
            raise InvalidRequest(
                f"unknown channel type {name[:40]!r} (this server has: {known})", param="type"
            ) from None
