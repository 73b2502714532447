"""Check digits and structure rules that separate real identifiers from look-alikes.

A pattern alone flags every 16-digit order id as a card and every
"AB12..." code as an IBAN; these checks keep only the numbers that could be real.
"""

from __future__ import annotations

# IBAN length per country (the SWIFT IBAN registry).
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24,
    "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27,
    "GT": 28, "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20,
    "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24,
    "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25,
    "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
    "YE": 30,
}  # fmt: skip


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check every payment card number passes."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def card_valid(candidate: str) -> bool:
    """13 to 19 digits (separators ignored) that pass the Luhn check."""
    digits = candidate.replace(" ", "").replace("-", "")
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def ssn_valid(candidate: str) -> bool:
    """A US SSN `AAA-GG-SSSS` with an area, group and serial the SSA can issue."""
    area, group, serial = candidate.split("-")
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def iban_prefix(candidate: str) -> str | None:
    """The IBAN at the start of `candidate` (spaces allowed between characters), if any.

    The country's registered length decides where the IBAN ends, so text that
    follows it does not spoil the check; the IBAN must end where a word ends.
    """
    length = IBAN_LENGTHS.get(candidate[:2])
    if length is None:
        return None
    compact: list[str] = []
    for index, ch in enumerate(candidate):
        if ch == " ":
            continue
        if not ("0" <= ch <= "9" or "A" <= ch <= "Z"):
            return None
        compact.append(ch)
        if len(compact) == length:
            following = candidate[index + 1 : index + 2]
            if following.isalnum():
                return None
            iban = "".join(compact)
            return iban if iban_checksum_valid(iban) else None
    return None


def iban_checksum_valid(iban: str) -> bool:
    """ISO 13616 mod-97: the rearranged number, letters as 10..35, leaves 1."""
    rearranged = iban[4:] + iban[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1
