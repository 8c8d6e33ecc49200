"""The built-in messaging channels, registered through the ``register_channels`` hook like any
plugin's: WhatsApp Cloud API, Messenger, Instagram and Telegram."""

from __future__ import annotations

from collections.abc import Callable

from concierge.channels.base import ChannelType
from concierge.channels.messenger import Instagram, Messenger
from concierge.channels.telegram import Telegram
from concierge.channels.whatsapp import WhatsApp
from concierge.config import Settings
from concierge.hookspecs import hookimpl


@hookimpl
def register_channels(register: Callable[[ChannelType], None], settings: Settings) -> None:
    """WhatsApp, Messenger, Instagram and Telegram."""
    for kind in (WhatsApp(), Messenger(), Instagram(), Telegram()):
        register(kind)
