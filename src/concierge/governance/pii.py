"""Personal data in text: found, and masked where the policy says so.

Recognisers, each for one or more entity types:

- ``email``: addresses (the usual local@domain.tld shape);
- ``phone``: phone numbers through Google's libphonenumber (``phonenumbers``): international
  numbers anywhere, national ones in the configured regions; only numbers valid for their
  region count;
- ``card``: payment card numbers: 13-19 digits (spaces or dashes allowed) with a known issuer
  prefix and a valid Luhn check digit;
- ``iban``: IBANs checked with ``python-stdnum`` (country length and mod-97);
- ``ip``: IPv4 and IPv6 addresses (parsed by :mod:`ipaddress`), but loopback and unspecified
  ones, which point at no one;
- ``national_id``: US SSN, UK National Insurance number, French NIR, Spanish DNI/NIE, Italian
  codice fiscale, Brazilian CPF, Chinese resident id, Indian Aadhaar, Dutch BSN and German
  tax id, each validated with ``python-stdnum``; the bare-digit ones (BSN, tax id, Aadhaar)
  only next to a word that names them, since any 9-12 digits would otherwise match.

More recognisers (an NER model for names and addresses, say) plug in through the
``register_pii_recognizers`` hook; the built-in ones go through the same hook.

:func:`redact` replaces each finding with its type in brackets (``[EMAIL]``): the text stays
readable and a model can still tell that the user gave an address.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import phonenumbers
from stdnum import iban, luhn
from stdnum.br import cpf
from stdnum.cn import ric
from stdnum.de import idnr
from stdnum.es import dni, nie
from stdnum.fr import nir
from stdnum.in_ import aadhaar
from stdnum.it import codicefiscale
from stdnum.nl import bsn
from stdnum.us import ssn

DEFAULT_REGIONS = ("US", "GB", "FR", "DE", "ES", "IT", "NL", "IN", "CN", "BR")
_DIGIT = re.compile(r"\d").search  # every built-in kind but e-mail has a digit
_NEAR = 40  # how far before a number the word that names it may be (characters)


@dataclass(frozen=True, order=True)
class Span:
    start: int
    end: int
    type: str
    text: str


class Recognizer(Protocol):
    """Finds one or more kinds of personal data in a text."""

    name: str
    entities: tuple[str, ...]

    def find(self, text: str) -> Iterable[Span]: ...


# -- the built-in recognisers ----------------------------------------------------------------

# ASCII boundaries: in Chinese or Japanese text an address follows a letter directly.
_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)


class EmailRecognizer:
    name = "email"
    entities: tuple[str, ...] = ("email",)

    def find(self, text: str) -> Iterable[Span]:
        if "@" not in text:
            return
        for m in _EMAIL.finditer(text):
            yield Span(m.start(), m.end(), "email", m.group())


# Words that introduce a phone number, in the supported locales.
_PHONE_WORDS = re.compile(
    r"phone|call|ring|reach|text|mobile|cell|tel\b|tel\.|whats ?app|sms|contact|"
    r"telefon|handy|ruf|erreichbar|portable|appel|joindre|t[ée]l[ée]phone|m[óo]vil|llam|"
    r"celular|liga|cellulare|chiama|raggiungibile|bel |mobiel|"
    r"电话|手机|致电|拨打|電話|携帯|連絡",
    re.IGNORECASE,
)
_DATE = re.compile(r"^\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}$")
# A stretch that could hold a phone number: digits and the separators numbers are written with.
_PHONE_RUN = re.compile(r"(?:\+|\(\+?)?\d[\d \t\-./()\u00a0]{4,}\d\)?")
_DOTTED_QUAD = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")


class PhoneRecognizer:
    """Numbers valid in their region (libphonenumber). A bare run of digits (no ``+``, space,
    dash or bracket) is only a phone number next to a word that says so: otherwise order,
    tracking and reference numbers would be."""

    name = "phone"
    entities: tuple[str, ...] = ("phone",)

    def __init__(self, regions: Sequence[str] = DEFAULT_REGIONS) -> None:
        self.regions = tuple(regions)

    def find(self, text: str) -> Iterable[Span]:
        # libphonenumber's matcher is slow (milliseconds per region over a long text): run it
        # only over runs of digits and separators long enough to be a phone number.
        seen: set[tuple[int, int]] = set()
        for candidate in _PHONE_RUN.finditer(text):
            if sum(c.isdigit() for c in candidate.group()) < 6:
                continue
            offset = candidate.start()
            piece = candidate.group()
            for region in self.regions:
                matcher = phonenumbers.PhoneNumberMatcher(
                    piece, region, leniency=phonenumbers.Leniency.VALID
                )
                for match in matcher:
                    start, end = offset + match.start, offset + match.end
                    raw = match.raw_string
                    if (start, end) in seen or _DATE.match(raw) or _DOTTED_QUAD.match(raw):
                        continue
                    if raw.isdigit() and not _PHONE_WORDS.search(
                        text[max(0, start - _NEAR) : start]
                    ):
                        continue
                    seen.add((start, end))
                    yield Span(start, end, "phone", raw)


_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
# Major schemes' prefixes (Visa, Mastercard, Amex, Discover, UnionPay, JCB, Diners).
_ISSUER = re.compile(r"^(?:4|5[1-5]|2[2-7]|3[47]|3[0689]|35|6011|64[4-9]|65|62)")
_GROUPED = re.compile(r"^\d{4}([ -])\d{4,6}\1\d{4,5}(?:\1\d{1,4})?$")
_CARD_WORDS = re.compile(
    r"card|visa|master|amex|maestro|karte|carte|tarjeta|carta|cart[ãa]o|kaart|卡|カード",
    re.IGNORECASE,
)


class CardRecognizer:
    name = "card"
    entities: tuple[str, ...] = ("card",)

    def find(self, text: str) -> Iterable[Span]:
        if not _DIGIT(text):
            return
        for m in _CARD.finditer(text):
            digits = re.sub(r"[ -]", "", m.group())
            # Runs of one or two digits (4111 1111 1111 1111, the well-known test number)
            # are nobody's card.
            # One random number in ten passes the Luhn check, so a number also needs a
            # scheme's prefix, the grouping cards are written in, or a word saying it is one.
            if not (13 <= len(digits) <= 19 and len(set(digits)) > 2 and luhn.is_valid(digits)):
                continue
            value = m.group()
            if (
                _ISSUER.match(digits)
                or (_GROUPED.match(value) and digits[0] in "23456")
                or _CARD_WORDS.search(text[max(0, m.start() - _NEAR) : m.start()])
            ):
                yield Span(m.start(), m.end(), "card", value)


_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])")


class IbanRecognizer:
    name = "iban"
    entities: tuple[str, ...] = ("iban",)

    def find(self, text: str) -> Iterable[Span]:
        if not _DIGIT(text):
            return
        for m in _IBAN.finditer(text):
            candidate = m.group()
            # The pattern may run into the next word; shrink until it validates.
            while len(candidate.replace(" ", "")) >= 15:
                if iban.is_valid(candidate):
                    yield Span(m.start(), m.start() + len(candidate), "iban", candidate)
                    break
                candidate = candidate[:-1].rstrip()


_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
_VERSION_WORD = re.compile(
    r"(?:\bv|version|release|build|firmware|room|floor|section|chapter|§)\s*$", re.IGNORECASE
)


class IpRecognizer:
    name = "ip"
    entities: tuple[str, ...] = ("ip",)

    def find(self, text: str) -> Iterable[Span]:
        if not _DIGIT(text):
            return
        for m in _IPV4.finditer(text):
            if _VERSION_WORD.search(text[max(0, m.start() - 12) : m.start()]):
                continue
            try:
                address = ipaddress.IPv4Address(m.group())
            except ValueError:
                continue
            if _someones(address):
                yield Span(m.start(), m.end(), "ip", m.group())
        for m in _IPV6.finditer(text):
            value = m.group()
            if value.count(":") < 2 or not any(c.isalnum() for c in value):
                continue
            try:
                address6 = ipaddress.IPv6Address(value)
            except ValueError:
                continue
            if _someones(address6):
                yield Span(m.start(), m.end(), "ip", value)


def _someones(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Loopback (127.0.0.1, ::1) and unspecified (0.0.0.0, ::) addresses point at no one:
    "Uvicorn running on http://127.0.0.1:8000" stays readable in the log."""
    return not (address.is_loopback or address.is_unspecified)


@dataclass(frozen=True)
class _IdRule:
    pattern: re.Pattern[str]
    valid: Callable[[str], bool]
    context: re.Pattern[str] | None = None  # a word that must be near (bare digit runs)


_NINO = re.compile(
    r"(?<![A-Za-z0-9])(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]"
    r" ?\d{2} ?\d{2} ?\d{2} ?[A-D](?![A-Za-z0-9])"
)
_ID_RULES: tuple[_IdRule, ...] = (
    _IdRule(re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])"), ssn.is_valid),
    _IdRule(
        re.compile(r"(?<!\d)\d{9}(?!\d)"),
        ssn.is_valid,
        re.compile(r"\b(?:ssn|social security)\b", re.IGNORECASE),
    ),
    _IdRule(_NINO, lambda v: True),
    _IdRule(
        re.compile(
            r"(?<![\dA-Za-z])[12] ?\d{2} ?\d{2} ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3} ?\d{2}(?!\d)"
        ),
        nir.is_valid,
    ),
    _IdRule(re.compile(r"(?<![\dA-Za-z])\d{8}-?[A-Za-z](?![A-Za-z\d])"), dni.is_valid),
    _IdRule(re.compile(r"(?<![\dA-Za-z])[XYZxyz]-?\d{7}-?[A-Za-z](?![A-Za-z\d])"), nie.is_valid),
    _IdRule(
        re.compile(
            r"(?<![A-Za-z0-9])[A-Za-z]{6}\d{2}[A-Za-z]\d{2}[A-Za-z]\d{3}[A-Za-z](?![A-Za-z0-9])"
        ),
        codicefiscale.is_valid,
    ),
    _IdRule(re.compile(r"(?<![\d.])\d{3}\.\d{3}\.\d{3}-\d{2}(?![\d-])"), cpf.is_valid),
    _IdRule(re.compile(r"(?<![\dA-Za-z])\d{17}[\dXx](?![\dA-Za-z])"), ric.is_valid),
    _IdRule(
        re.compile(r"(?<!\d)[2-9]\d{3} ?\d{4} ?\d{4}(?!\d)"),
        aadhaar.is_valid,
        re.compile(r"\b(?:aadhaa?r|uidai)\b|आधार", re.IGNORECASE),
    ),
    _IdRule(
        re.compile(r"(?<![\d.])\d{4}\.?\d{2}\.?\d{3}(?![\d.])"),
        bsn.is_valid,
        re.compile(r"\b(?:bsn|burgerservicenummer|sofi)\b", re.IGNORECASE),
    ),
    _IdRule(
        re.compile(r"(?<!\d)\d{2} ?\d{3} ?\d{3} ?\d{3}(?!\d)"),
        idnr.is_valid,
        re.compile(r"steuer-?id|steueridentifikationsnummer|\bidnr\b|tax id", re.IGNORECASE),
    ),
)


class NationalIdRecognizer:
    name = "national_id"
    entities: tuple[str, ...] = ("national_id",)

    def find(self, text: str) -> Iterable[Span]:
        if not _DIGIT(text):
            return
        for rule in _ID_RULES:
            for m in rule.pattern.finditer(text):
                if rule.context is not None and not rule.context.search(
                    text[max(0, m.start() - _NEAR) : m.start()]
                ):
                    continue
                if rule.valid(m.group()):
                    yield Span(m.start(), m.end(), "national_id", m.group())


def builtin_recognizers() -> list[Recognizer]:
    return [
        EmailRecognizer(),
        CardRecognizer(),
        IbanRecognizer(),
        NationalIdRecognizer(),
        IpRecognizer(),
        PhoneRecognizer(),
    ]


# -- finding and masking ---------------------------------------------------------------------


class Detector:
    """All registered recognisers; overlapping findings resolve to the longest (the earlier
    recogniser on a tie, so a card number is not also a phone number)."""

    def __init__(self, recognizers: Sequence[Recognizer] | None = None) -> None:
        self.recognizers = list(recognizers if recognizers is not None else builtin_recognizers())

    def find(self, text: str, entities: Iterable[str] | None = None) -> list[Span]:
        wanted = set(entities) if entities is not None else None
        found: list[tuple[int, Span]] = []
        for rank, recognizer in enumerate(self.recognizers):
            if wanted is not None and not wanted.intersection(recognizer.entities):
                continue
            for span in recognizer.find(text):
                if wanted is None or span.type in wanted:
                    found.append((rank, span))
        found.sort(key=lambda item: (-(item[1].end - item[1].start), item[0], item[1].start))
        kept: list[Span] = []
        for _, span in found:
            if all(span.end <= k.start or span.start >= k.end for k in kept):
                kept.append(span)
        return sorted(kept)

    def redact(
        self, text: str, entities: Iterable[str] | None = None
    ) -> tuple[str, dict[str, int]]:
        """``text`` with findings masked, and how many of each type were masked."""
        spans = self.find(text, entities)
        if not spans:
            return text, {}
        counts: dict[str, int] = {}
        out: list[str] = []
        position = 0
        for span in spans:
            out.append(text[position : span.start])
            out.append(f"[{span.type.upper()}]")
            counts[span.type] = counts.get(span.type, 0) + 1
            position = span.end
        out.append(text[position:])
        return "".join(out), counts


_PLACEHOLDER = re.compile(r"\[([A-Z][A-Z_]*_\d+)\]")


class Pseudonyms:
    """Reversible masking for one reply: each value found becomes a numbered placeholder
    (``[EMAIL_1]``), the same value the same placeholder. What goes to an external model is
    masked; what comes back (the answer, a tool call's arguments) is restored here, so the
    user and the business's tools see the real values and the model never did."""

    def __init__(self, detector: Detector, entities: Iterable[str] | None = None) -> None:
        self.detector = detector
        self.entities = list(entities) if entities is not None else None
        self.values: dict[str, str] = {}
        self._names: dict[tuple[str, str], str] = {}
        self._counts: dict[str, int] = {}

    def mask(self, text: str) -> str:
        spans = self.detector.find(text, self.entities)
        if not spans:
            return text
        out: list[str] = []
        position = 0
        for span in spans:
            key = (span.type, span.text)
            name = self._names.get(key)
            if name is None:
                number = self._counts[span.type] = self._counts.get(span.type, 0) + 1
                name = f"{span.type.upper()}_{number}"
                self._names[key] = name
                self.values[name] = span.text
            out += [text[position : span.start], f"[{name}]"]
            position = span.end
        out.append(text[position:])
        return "".join(out)

    def restore(self, text: str) -> str:
        if not self.values or "[" not in text:
            return text
        return _PLACEHOLDER.sub(lambda m: self.values.get(m.group(1), m.group(0)), text)

    def restore_json(self, value: Any) -> Any:
        """Placeholders restored inside parsed JSON (a tool call's arguments)."""
        if isinstance(value, str):
            return self.restore(value)
        if isinstance(value, list):
            return [self.restore_json(v) for v in value]
        if isinstance(value, dict):
            return {k: self.restore_json(v) for k, v in value.items()}
        return value


class StreamRestorer:
    """Restores placeholders in streamed text, holding back a piece that may be the start of
    one (``[EMA`` ... ``IL_1]``) until it is complete."""

    HOLD = 32

    def __init__(self, names: Pseudonyms) -> None:
        self.names = names
        self.pending = ""

    def feed(self, text: str) -> str:
        buffered = self.pending + text
        cut = buffered.rfind("[")
        if cut >= 0 and "]" not in buffered[cut:] and len(buffered) - cut < self.HOLD:
            self.pending = buffered[cut:]
            buffered = buffered[:cut]
        else:
            self.pending = ""
        return self.names.restore(buffered)

    def flush(self) -> str:
        rest, self.pending = self.pending, ""
        return self.names.restore(rest)
