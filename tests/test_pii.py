"""Personal-data detection: each recogniser on the cases it must and must not find, the
labelled sets as a regression floor, masking, log redaction, and the plugin hook."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from concierge.config import Settings
from concierge.governance.logs import LogRedactor
from concierge.governance.pii import Detector, Pseudonyms, Span, StreamRestorer
from concierge.governance.service import Governance
from concierge.hookspecs import hookimpl
from concierge.plugins import plugin_manager
from concierge.store import Database

DATA = Path(__file__).parent.parent / "benchmarks" / "data"
detector = Detector()


def found(text: str) -> list[tuple[str, str]]:
    return [(s.type, s.text) for s in detector.find(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to ana.lopez@example.es today", [("email", "ana.lopez@example.es")]),
        ("我的邮箱是li.wei@example.com，谢谢", [("email", "li.wei@example.com")]),
        ("call +44 20 7946 0958", [("phone", "+44 20 7946 0958")]),
        ("Rufen Sie 030 901820 an", [("phone", "030 901820")]),
        ("card 4539 1488 0343 6467 please", [("card", "4539 1488 0343 6467")]),
        ("IBAN DE89 3704 0044 0532 0130 00", [("iban", "DE89 3704 0044 0532 0130 00")]),
        (
            "from 203.0.113.7 and 2001:db8::8a2e:370:7334",
            [("ip", "203.0.113.7"), ("ip", "2001:db8::8a2e:370:7334")],
        ),
        ("Mi DNI es 12345678Z", [("national_id", "12345678Z")]),
        ("CPF 529.982.247-25", [("national_id", "529.982.247-25")]),
        ("SSN 536-22-1234", [("national_id", "536-22-1234")]),
        ("身份证 11010519491231002X", [("national_id", "11010519491231002X")]),
        # Hard negatives: look-alikes that are not personal data.
        ("order 4539 1488 0343 6468", []),  # Luhn fails
        ("IBAN DE88 3704 0044 0532 0130 00", []),  # mod-97 fails
        ("Bestellnummer 916174299057", []),  # digits, no word for a phone
        ("version 1.2.3.4 is out", []),
        ("delivered 02-11-2026", []),
        ("test card 4111 1111 1111 1111", []),
        ("reference 2341 2341 2346 on the parcel", []),
    ],
)
def test_recognisers(text: str, expected: list[tuple[str, str]]) -> None:
    assert found(text) == expected


def test_masking_keeps_the_text_readable() -> None:
    text = "Mail jane@example.com or call +1 415 555 0132, card 4539-1488-0343-6467."
    masked, counts = detector.redact(text)
    assert masked == "Mail [EMAIL] or call [PHONE], card [CARD]."
    assert counts == {"email": 1, "phone": 1, "card": 1}
    only_mail, _ = detector.redact(text, ["email"])
    assert only_mail.startswith("Mail [EMAIL] or call +1 415")


@pytest.mark.parametrize("name", ["pii_cases.jsonl", "pii_heldout.jsonl"])
def test_the_labelled_sets_stay_above_the_floor(name: str) -> None:
    """benchmarks/README.md has the full table; this keeps it from regressing."""
    tp = fp = fn = 0
    for line in (DATA / name).read_text().splitlines():
        item = json.loads(line)
        expected = {(e["type"], e["value"]) for e in item["entities"]}
        got = set(found(item["text"]))
        tp, fp, fn = tp + len(got & expected), fp + len(got - expected), fn + len(expected - got)
    assert tp / (tp + fp) >= 0.94 and tp / (tp + fn) >= 0.97, (tp, fp, fn)


def test_logs_never_carry_personal_data(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("concierge.pii-test")
    handler = logging.Handler()
    records: list[logging.LogRecord] = []
    handler.emit = records.append  # type: ignore[method-assign]
    handler.addFilter(LogRedactor(detector))
    logger.addHandler(handler)
    try:
        logger.warning("user %s wrote from %s", "jane@example.com", "198.51.100.4")
        logger.warning("nothing personal %d", 42)
        logger.warning("listening on http://%s:8000 and [::1]:8000", "127.0.0.1")
    finally:
        logger.removeHandler(handler)
    assert records[0].getMessage() == "user [EMAIL] wrote from [IP]"
    assert records[1].getMessage() == "nothing personal 42"
    # Loopback and unspecified addresses point at no one: they stay.
    assert records[2].getMessage() == "listening on http://127.0.0.1:8000 and [::1]:8000"


class MemberIds:
    """A business's own identifier, added through the plugin hook."""

    name = "member"
    entities = ("member_id",)

    def find(self, text: str) -> list[Span]:
        at = text.find("ACME-")
        return [Span(at, at + 11, "member_id", text[at : at + 11])] if at >= 0 else []


class Plugin:
    @hookimpl
    def register_pii_recognizers(self, register, settings):  # type: ignore[no-untyped-def]
        register(MemberIds())


def test_recognisers_plug_in_through_the_hook(tmp_path: Path) -> None:
    pm = plugin_manager([Plugin()], entry_points=False)
    db = Database(f"sqlite:///{tmp_path}/x.db", pooled=False)
    try:
        governance = Governance(db, pm, Settings(data_dir=tmp_path))
        masked, counts = governance.detector.redact("member ACME-123456 at a@example.com")
    finally:
        db.close()
    assert masked == "member [MEMBER_ID] at [EMAIL]"
    assert counts == {"member_id": 1, "email": 1}


def test_pseudonyms_round_trip_even_when_a_stream_splits_them() -> None:
    names = Pseudonyms(detector)
    masked = names.mask("mail a@example.com, then b@example.com, again a@example.com")
    assert masked == "mail [EMAIL_1], then [EMAIL_2], again [EMAIL_1]"
    stream = StreamRestorer(names)
    pieces = ["Writing to [EMA", "IL_2] and [", "EMAIL_1]", " now [not a placeholder"]
    shown = "".join(stream.feed(p) for p in pieces) + stream.flush()
    assert shown == "Writing to b@example.com and a@example.com now [not a placeholder"
    assert names.restore_json({"to": ["[EMAIL_1]"], "n": 3}) == {"to": ["a@example.com"], "n": 3}


def test_access_logs_keep_their_shape() -> None:
    """uvicorn's access formatter unpacks the record's arguments: they stay a tuple."""
    from uvicorn.logging import AccessFormatter

    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("203.0.113.9:51234", "GET", "/v1/models?email=a@example.com", "1.1", 200),
        None,
    )
    assert LogRedactor(detector).filter(record)
    line = AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s').format(record)
    assert line == '[IP]:51234 - "GET /v1/models?email=[EMAIL] HTTP/1.1" 200 OK'
