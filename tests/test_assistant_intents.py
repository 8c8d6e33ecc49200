"""The requests the platform answers itself: an explicit request for a person."""

from __future__ import annotations

import pytest

from concierge.assistants.intents import wants_human


@pytest.mark.parametrize(
    "text",
    [
        "I want to talk to a person",
        "Can I speak to a human?",
        "connect me with an agent please",
        "real person please",
        "human please",
        "Let me talk to someone",
        "put me through to someone",
        "Ich möchte mit einem Menschen sprechen",
        "je veux parler à un conseiller",
        "quiero hablar con una persona",
        "转人工",
        "help me contacting an agent",
        "I need assistance talking to a person",
    ],
)
def test_explicit_requests_for_a_person(text: str) -> None:
    assert wants_human(text)


@pytest.mark.parametrize(
    "text",
    [
        "How long does shipping take?",
        "Is this jacket good for people who hike?",
        "Can a person return sale items?",
        "talk about returns",
        "I am a real hiker",
        "what human resources do you have",
        "Can I contact you about my order?",
        "I was talking about the blue jacket",
        "",
    ],
)
def test_other_messages_go_to_the_model(text: str) -> None:
    assert not wants_human(text)
