"""The labelled personal-data test set: how ``benchmarks/data/pii_cases.jsonl`` was made.

Messages as customers write them to a support assistant, in eleven locales, each with the
personal data it contains (type and exact text), and hard negatives: order and tracking
numbers, prices, dates, version strings, ISBNs, card-like numbers with a wrong check digit,
IBAN-like strings that fail mod-97, short codes. Identifiers are synthetic: random digits with
valid check digits (computed with python-stdnum's published algorithms), phone numbers in each
region's valid ranges (checked with libphonenumber), e-mail addresses at example domains.

    python benchmarks/pii_dataset.py > benchmarks/data/pii_cases.jsonl

The output is fixed by the seed; the file in the repository is what the benchmark reads.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Callable
from typing import Any

import phonenumbers
from stdnum import iban, luhn, verhoeff
from stdnum.br import cpf
from stdnum.cn import ric
from stdnum.es import dni
from stdnum.fr import nir
from stdnum.nl import bsn
from stdnum.us import ssn

rng = random.Random(20261123)
Case = dict[str, Any]


def digits(n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


# -- generators of valid identifiers ---------------------------------------------------------


def card(prefix: str, length: int = 16, sep: str = " ") -> str:
    body = prefix + digits(length - len(prefix) - 1)
    number = body + luhn.calc_check_digit(body)
    if sep and length == 16:
        return sep.join(number[i : i + 4] for i in range(0, 16, 4))
    if sep and length == 15:  # Amex groups 4-6-5
        return f"{number[:4]}{sep}{number[4:10]}{sep}{number[10:]}"
    return number


def bad_card() -> str:
    good = card("4").replace(" ", "")
    last = str((int(good[-1]) + 3) % 10)
    return " ".join((good[:-1] + last)[i : i + 4] for i in range(0, 16, 4))


IBAN_BBAN = {
    "DE": lambda: digits(18),
    "FR": lambda: (
        digits(10) + "".join(rng.choice("ABCDEFGHJK0123456789") for _ in range(11)) + digits(2)
    ),
    "GB": lambda: "NWBK" + digits(14),
    "AT": lambda: digits(16),
    "IT": lambda: "X" + digits(10) + digits(12),
    "NL": lambda: "ABNA" + digits(10),
}


def make_iban(country: str, grouped: bool = True) -> str:
    bban = IBAN_BBAN[country]()
    check = iban.calc_check_digits(country + "00" + bban)
    value = country + check + bban
    return " ".join(value[i : i + 4] for i in range(0, len(value), 4)) if grouped else value


def bad_iban(country: str = "DE") -> str:
    good = make_iban(country, grouped=False)
    wrong = good[:2] + f"{(int(good[2:4]) + 11) % 97:02d}" + good[4:]
    return " ".join(wrong[i : i + 4] for i in range(0, len(wrong), 4))


def phone(region: str, international: bool) -> str:
    example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    national = str(example.national_number)
    for _ in range(200):
        candidate = national[:-4] + digits(4)
        number = phonenumbers.parse(candidate, region)
        if phonenumbers.is_valid_number(number):
            kind = (
                phonenumbers.PhoneNumberFormat.INTERNATIONAL
                if international
                else phonenumbers.PhoneNumberFormat.NATIONAL
            )
            return phonenumbers.format_number(number, kind)
    raise RuntimeError(f"no valid number for {region}")


def us_ssn() -> str:
    while True:
        value = f"{rng.randint(100, 665)}-{digits(2)}-{digits(4)}"
        if ssn.is_valid(value) and value[4:6] != "00" and value[7:] != "0000":
            return value


def es_dni() -> str:
    body = digits(8)
    return body + dni.calc_check_digit(body)


def br_cpf() -> str:
    body = digits(9)
    full = body + cpf._calc_check_digits(body)
    return f"{full[:3]}.{full[3:6]}.{full[6:9]}-{full[9:]}"


def cn_ric() -> str:
    body = (
        "110105"
        + f"{rng.randint(1960, 2004)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
        + digits(3)
    )
    return body + ric.calc_check_digit(body + "0")  # it reads the first 17 of 18


def in_aadhaar() -> str:
    body = str(rng.randint(2, 9)) + digits(10)
    full = body + verhoeff.calc_check_digit(body)
    return f"{full[:4]} {full[4:8]} {full[8:]}"


def fr_nir() -> str:
    body = f"{rng.choice('12')}{rng.randint(50, 99)}{rng.randint(1, 12):02d}75{digits(6)}"
    full = body + nir.calc_check_digits(body)
    return f"{full[0]} {full[1:3]} {full[3:5]} {full[5:7]} {full[7:10]} {full[10:13]} {full[13:]}"


def nl_bsn() -> str:
    while True:  # the eleven-test: about one random number in eleven passes
        value = str(rng.randint(1, 9)) + digits(8)
        if bsn.is_valid(value):
            return value


def gb_nino() -> str:
    first = rng.choice("ABCEGHJKLMNPRSTWXYZ")
    second = rng.choice("ABCEGHJKLMNPRSTWXYZ")
    if first + second in ("BG", "GB", "KN", "NK", "NT", "TN", "ZZ"):
        return gb_nino()
    d = digits(6)
    return f"{first}{second} {d[:2]} {d[2:4]} {d[4:]} {rng.choice('ABCD')}"


def email(name: str) -> str:
    number = rng.randint(1, 99)
    domain = rng.choice(["example.com", "example.org", "mail.example.net"])
    return f"{name}{number}@{domain}"


def ipv4() -> str:
    return (
        f"{rng.randint(11, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    )


def ipv6() -> str:
    return "2001:db8:" + ":".join(f"{rng.randint(0, 65535):x}" for _ in range(6))


# -- the cases -------------------------------------------------------------------------------


def case(locale: str, template: str, **values: tuple[str, str]) -> Case:
    """``template`` with {name} slots filled by (type, value) pairs; a type of "" marks a
    hard negative (text that must not be found)."""
    text = template.format(**{k: v for k, (_t, v) in values.items()})
    entities = [{"type": t, "value": v} for t, v in values.values() if t]
    return {"locale": locale, "text": text, "entities": entities}


def build() -> list[Case]:
    cases: list[Case] = []
    add = cases.append
    people = ["jane.doe", "mkowalski", "li.wei", "a.rossi", "jdupont", "sofia_garcia", "tanaka.h"]
    regions = {
        "en-US": "US",
        "en-GB": "GB",
        "de-DE": "DE",
        "fr-FR": "FR",
        "es-ES": "ES",
        "it-IT": "IT",
        "nl-NL": "NL",
        "pt-BR": "BR",
        "zh-CN": "CN",
        "en-IN": "IN",
        "ja-JP": "JP",
    }
    phrases: dict[str, list[str]] = {
        "en-US": ["You can reach me at {p}.", "Call me back on {p} after 5pm.", "My cell is {p}"],
        "en-GB": ["Ring me on {p} please.", "My mobile number is {p}.", "Text {p} when it ships"],
        "de-DE": [
            "Rufen Sie mich unter {p} an.",
            "Meine Handynummer: {p}",
            "Erreichbar unter {p}.",
        ],
        "fr-FR": ["Appelez-moi au {p}.", "Mon portable : {p}", "Vous pouvez me joindre au {p}."],
        "es-ES": ["Llámeme al {p}.", "Mi móvil es {p}", "Pueden contactarme en el {p}."],
        "it-IT": ["Chiamatemi al {p}.", "Il mio cellulare è {p}", "Sono raggiungibile al {p}."],
        "nl-NL": ["Bel me op {p}.", "Mijn mobiele nummer is {p}", "U kunt me bereiken op {p}."],
        "pt-BR": ["Me liga no {p}.", "Meu celular é {p}", "Pode me chamar no WhatsApp {p}."],
        "zh-CN": ["请拨打我的手机{p}。", "我的电话是 {p}", "联系电话：{p}"],
        "en-IN": ["Please call me on {p}.", "My mobile no. is {p}", "WhatsApp me at {p}"],
        "ja-JP": ["電話番号は{p}です。", "携帯：{p}", "{p}までご連絡ください。"],
    }
    for _round in range(2):  # each template twice, with other values
        for locale, region in regions.items():
            for i, phrase in enumerate(phrases[locale]):
                add(
                    case(
                        locale, phrase.replace("{p}", "{a}"), a=("phone", phone(region, i % 2 == 1))
                    )
                )

        mails = [
            ("en-US", "Please send the invoice to {a}, thanks!"),
            ("en-GB", "My email address is {a} - the old one no longer works."),
            ("de-DE", "Bitte schicken Sie die Rechnung an {a}."),
            ("fr-FR", "Mon adresse e-mail : {a}"),
            ("es-ES", "Escríbanme a {a} por favor"),
            ("it-IT", "La mia email è {a}."),
            ("nl-NL", "Mail de bevestiging naar <{a}>."),
            ("pt-BR", "Meu e-mail é {a}"),
            ("zh-CN", "我的邮箱是{a}，谢谢"),
            ("ja-JP", "メールアドレスは {a} です"),
            ("en-IN", "Kindly mail the receipt to {a}"),
            ("en-US", "cc {a} and {b} on the refund please"),
        ]
        for locale, template in mails:
            values = {"a": ("email", email(rng.choice(people)))}
            if "{b}" in template:
                values["b"] = ("email", email(rng.choice(people)))
            add(case(locale, template, **values))

        card_templates = [
            ("en-US", "Charge my Visa {a} instead.", "4"),
            ("en-GB", "The card ending was wrong, full number {a}", "5"),
            ("de-DE", "Meine Kreditkartennummer lautet {a}.", "5"),
            ("fr-FR", "Numéro de carte : {a}", "4"),
            ("es-ES", "Mi tarjeta es la {a}", "4"),
            ("it-IT", "Carta n. {a}, scadenza 09/28", "5"),
            ("nl-NL", "Kaartnummer {a}", "25"),
            ("pt-BR", "Cartão {a} validade 11/27", "4"),
            ("zh-CN", "我的银行卡号是 {a}", "62"),
            ("en-IN", "Card no {a} was charged twice", "6"),
            ("ja-JP", "カード番号：{a}", "35"),
            ("en-US", "Amex {a} please", "37"),
        ]
        for locale, template, prefix in card_templates:
            length = 15 if prefix == "37" else 16
            sep = rng.choice([" ", "-", ""]) if length == 16 else " "
            add(case(locale, template, a=("card", card(prefix, length, sep))))

        iban_templates = [
            ("de-DE", "Bitte überweisen Sie die Erstattung auf {a}.", "DE"),
            ("fr-FR", "Mon IBAN est {a}", "FR"),
            ("en-GB", "Refund to IBAN {a} please", "GB"),
            ("de-DE", "Konto (Österreich): {a}", "AT"),
            ("it-IT", "IBAN: {a}", "IT"),
            ("nl-NL", "Rekeningnummer {a} t.n.v. J. de Vries", "NL"),
            ("de-DE", "IBAN {a} (ohne Leerzeichen)", "DE"),
            ("fr-FR", "Virement sur {a} merci", "FR"),
        ]
        for n, (locale, template, country) in enumerate(iban_templates):
            add(case(locale, template, a=("iban", make_iban(country, grouped=n % 3 != 1))))

        id_templates: list[tuple[str, str, Callable[[], str]]] = [
            ("en-US", "My SSN is {a} if you need it for the form.", us_ssn),
            ("en-US", "social security number {a}", us_ssn),
            ("en-GB", "National Insurance number {a}", gb_nino),
            ("en-GB", "my NI no. is {a}", gb_nino),
            ("es-ES", "Mi DNI es {a}", es_dni),
            ("es-ES", "DNI {a}, a nombre de Sofía García", es_dni),
            ("pt-BR", "Meu CPF: {a}", br_cpf),
            ("pt-BR", "CPF {a} para a nota fiscal", br_cpf),
            ("zh-CN", "身份证号 {a}", cn_ric),
            ("zh-CN", "我的身份证号码是{a}", cn_ric),
            ("en-IN", "My Aadhaar number is {a}", in_aadhaar),
            ("en-IN", "aadhar {a} for KYC", in_aadhaar),
            ("nl-NL", "Mijn BSN is {a}", nl_bsn),
            ("nl-NL", "burgerservicenummer {a}", nl_bsn),
            ("it-IT", "Codice fiscale RSSMRA85T10A562S", lambda: "RSSMRA85T10A562S"),
            ("fr-FR", "Numéro de sécurité sociale : {a}", fr_nir),
        ]
        for locale, template, make in id_templates:
            if "{a}" in template:
                add(case(locale, template, a=("national_id", make())))
            else:
                value = make()
                add(
                    {
                        "locale": locale,
                        "text": template,
                        "entities": [{"type": "national_id", "value": value}],
                    }
                )

        ip_templates = [
            ("en-US", "The login came from {a}, not me!", ipv4),
            ("en-GB", "My router's public address is {a}", ipv4),
            ("de-DE", "Zugriff von IP {a} gesperrt?", ipv4),
            ("fr-FR", "Connexion depuis {a} hier soir", ipv4),
            ("en-US", "IPv6 {a} is blocked on your site", ipv6),
            ("nl-NL", "Mijn IP-adres: {a}", ipv4),
        ]
        for locale, template, make in ip_templates:
            add(case(locale, template, a=("ip", make())))

        # Several kinds in one message.
        for locale, region in list(regions.items())[:8]:
            add(
                case(
                    locale,
                    "Name: Alex. Email {a}. Phone {b}. Card {c}.",
                    a=("email", email(rng.choice(people))),
                    b=("phone", phone(region, True)),
                    c=("card", card("4")),
                )
            )
        add(
            case(
                "de-DE",
                "Kontakt: {a}, Tel. {b}, IBAN {c}",
                a=("email", email("mueller")),
                b=("phone", phone("DE", False)),
                c=("iban", make_iban("DE")),
            )
        )

    # Hard negatives: numbers and strings that look like personal data and are not.
    negatives = [
        ("en-US", "My order number is {n}, placed yesterday.", lambda: digits(10)),
        (
            "en-US",
            "Tracking: 1Z{n}",
            lambda: "".join(rng.choice("0123456789ABCDEF") for _ in range(16)),
        ),
        ("en-GB", "Order #{n} still hasn't arrived", lambda: digits(8)),
        ("de-DE", "Bestellnummer {n}", lambda: digits(12)),
        ("fr-FR", "Commande n° {n} du 12/03/2026", lambda: digits(9)),
        ("en-US", "The jacket was $1,249.99 and I paid {n}", lambda: "$1,312.45"),
        (
            "en-US",
            "I'm on app version {n}",
            lambda: (
                f"{rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}.{rng.randint(0, 99)}"
            ),
        ),
        (
            "en-GB",
            "Firmware v{n} keeps crashing",
            lambda: (
                f"{rng.randint(1, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}"
            ),
        ),
        ("en-US", "ISBN {n}", lambda: "978-3-16-148410-0"),
        ("en-US", "Card-like but wrong: {n}", bad_card),
        ("de-DE", "Falsche IBAN: {n}", lambda: bad_iban("DE")),
        ("fr-FR", "IBAN incorrect {n}", lambda: bad_iban("FR")),
        ("en-US", "Delivered on 2026-11-03 at 14:22:05", lambda: ""),
        ("en-US", "Text STOP to {n} to unsubscribe", lambda: str(rng.randint(10000, 99999))),
        ("es-ES", "Referencia del pedido {n}", lambda: digits(8)),
        ("pt-BR", "Pedido {n} com 3 itens", lambda: digits(11)),
        ("zh-CN", "订单号：{n}", lambda: digits(18)),
        ("ja-JP", "注文番号 {n}", lambda: digits(12)),
        ("en-IN", "Invoice {n} dated 02-11-2026", lambda: "INV-" + digits(12)),
        ("nl-NL", "Zending {n} is vertraagd", lambda: "3S" + digits(12)),
        ("it-IT", "Codice sconto {n}", lambda: "AUTUNNO" + digits(2)),
        ("en-US", "The product SKU is {n}", lambda: digits(13)),
        (
            "en-US",
            "Serial number {n}",
            lambda: digits(4) + "-" + digits(4) + "-" + digits(4) + "-" + digits(4),
        ),
        ("en-GB", "Room 4.2.1.7 on the fourth floor", lambda: ""),
        ("en-US", "Email support@ is not a full address", lambda: ""),
        ("en-US", "Reach us @acme_outfitters on social", lambda: ""),
        ("de-DE", "Größe 42, Farbe 0815, Artikel {n}", lambda: digits(7)),
        ("en-US", "Call 911 if it's urgent, otherwise 311", lambda: ""),
        ("en-US", "My postcode is {n}", lambda: digits(5)),
        ("en-GB", "Postcode SW1A 1AA", lambda: ""),
        ("fr-FR", "Le 06/11/2026 à 10h30", lambda: ""),
        ("en-US", "Temperature was -12.5 to 3.25 degrees", lambda: ""),
        ("en-US", "Coordinates 48.8584, 2.2945", lambda: ""),
        ("en-IN", "PNR {n}", lambda: digits(10)),
        (
            "en-US",
            "Gift card code {n}",
            lambda: "-".join(
                "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(4))
                for _ in range(4)
            ),
        ),
        ("en-US", "ticket {n}", lambda: "JIRA-" + digits(5)),
        ("es-ES", "Mi talla es 38 y el modelo {n}", lambda: digits(6)),
        (
            "en-US",
            "The error code was 0x{n}",
            lambda: "".join(rng.choice("0123456789ABCDEF") for _ in range(8)),
        ),
        ("en-US", "Quantity 1234567890123 is obviously a typo", lambda: ""),
        (
            "en-US",
            "Build {n}",
            lambda: ".".join(
                str(rng.randint(10, 99) if i == 0 else rng.randint(0, 255)) for i in range(4)
            ),
        ),
    ]
    for locale, template, make in negatives:
        for _ in range(2):
            value = make()
            text = template.replace("{n}", value) if "{n}" in template else template
            add({"locale": locale, "text": text, "entities": [], "negative": True})
    return cases


def main() -> None:
    built = build()
    seen = set()
    for item in built:
        if item["text"] in seen:
            continue
        seen.add(item["text"])
        sys.stdout.write(json.dumps(item, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
