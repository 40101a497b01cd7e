"""
Redaction: built-in patterns for e-mail addresses, phone numbers and card numbers.

Redaction runs on the export thread, on every message text, tool input and error
message, before a record reaches any exporter (the Context API, the SQLite file).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

__all__ = ["PATTERNS", "builtin_redactor", "redact_card_numbers"]

PATTERNS: dict[str, tuple[re.Pattern[str], str]] = {
    "email": (
        re.compile(
            r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
        ),
        "[EMAIL]",
    ),
    # International or local numbers with 7+ digits, separated by spaces, dots,
    # dashes or parentheses; a run of digits alone must be at least 10 long so
    # ordinary numbers (years, amounts, ids) survive.
    "phone": (
        re.compile(
            r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?"
            r"(?:\d{2,4}[ .-]){1,4}\d{2,4}(?![\w])|(?<![\w+])\+?\d{10,15}(?!\w)"
        ),
        "[PHONE]",
    ),
}
_CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def redact_card_numbers(text: str) -> str:
    """Replace 13-19 digit card numbers that pass the Luhn check with ``[CARD]``."""

    def repl(match: re.Match[str]) -> str:
        digits = re.sub(r"[ -]", "", match.group(0))
        return (
            "[CARD]" if 13 <= len(digits) <= 19 and _luhn_ok(digits) else match.group(0)
        )

    return _CARD.sub(repl, text)


def _phone_ok(match: re.Match[str]) -> str:
    digits = sum(ch.isdigit() for ch in match.group(0))
    return "[PHONE]" if 7 <= digits <= 15 else match.group(0)


def builtin_redactor(names: Sequence[str]) -> Callable[[str], str]:
    """
    A redactor applying the built-in patterns *names* ("email", "phone", "card").

    Cards are replaced first (so their digits are not taken for a phone number),
    then e-mail addresses, then phone numbers.

    Raises:
        ValueError: an unknown pattern name.

    .. versionadded:: 0.1.0
    """
    known = {"email", "phone", "card"}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(
            f"redact: unknown pattern(s) {', '.join(map(repr, unknown))}; "
            f"expected some of {sorted(known)}"
        )
    wanted = set(names)

    def redact(text: str) -> str:
        if "card" in wanted:
            text = redact_card_numbers(text)
        if "email" in wanted:
            pattern, token = PATTERNS["email"]
            text = pattern.sub(token, text)
        if "phone" in wanted:
            text = PATTERNS["phone"][0].sub(_phone_ok, text)
        return text

    return redact
