"""Channel identities as the ledger compares them, one rule wherever one is recorded, projected or
looked up. On phone-number channels every spelling of a number (plus signs, spaces, dashes,
dots, brackets, full-width digits) becomes its digits; elsewhere an identity is an opaque id
(a PSID may hold "+", a Telegram chat id start with "-"), kept byte for byte."""

from __future__ import annotations

import unicodedata

# The channels whose identity is the contact's phone number; KAKAOTALKCHAT, VIBER (Viber Bot),
# MESSENGER, INSTAGRAM, TELEGRAM, LINE, WECHAT and APPLEBC use ids of their own.
NUMBER_CHANNELS = frozenset({"SMS", "MMS", "WHATSAPP", "RCS", "VIBERBM", "KAKAOTALK"})

# E.164: at most 15 digits, country code included.
MAX_DIGITS = 15

# What separates a number's digits when people write it, once NFKC has made full-width and
# compatibility forms plain: whitespace, format characters (zero-width spaces, direction marks
# pasted along with a number), dashes (and the minus sign), dots and brackets.
SEPARATOR_CATEGORIES = frozenset({"Zs", "Zl", "Zp", "Cf", "Pd", "Ps", "Pe"})
SEPARATORS = frozenset(".\u00b7\u3002\u2212")


class NotANumber(ValueError):
    """A number channel's identity that does not read as a phone number."""


def is_number_channel(channel: str | None) -> bool:
    return channel is not None and channel.upper() in NUMBER_CHANNELS


# The separators above that are ASCII: most identities are, and are read without NFKC.
ASCII_SEPARATORS = str.maketrans("", "", " \t\n\r\v\f\x1c\x1d\x1e\x1f.-()[]{}")


def digits_of(identity: str) -> str | None:
    """The digits of a phone number however it is spelled, or None when the text is not one
    (anything but digits, separators and leading plus signs, or no digit at all)."""
    if identity.isascii():
        number = identity.translate(ASCII_SEPARATORS).lstrip("+")
        return number if number.isdigit() else None
    return unicode_digits_of(identity)


def unicode_digits_of(identity: str) -> str | None:
    """`digits_of` for any text (the same answer for ASCII, only slower)."""
    kept: list[str] = []
    for char in unicodedata.normalize("NFKC", identity):
        if char.isspace() or char in SEPARATORS:
            continue
        if unicodedata.category(char) in SEPARATOR_CATEGORIES:
            continue
        if char == "+" and not kept:
            continue
        if unicodedata.category(char) != "Nd":
            return None
        kept.append(str(unicodedata.decimal(char)))
    return "".join(kept) or None


def normalise(channel: str | None, identity: str) -> str:
    """The form an identity is stored, named and compared in. On a number channel, and with no
    channel (a lookup across channels): its digits when it reads as a number, else the text
    stripped (a callback is kept as Sinch sent it). On any other channel: the identity."""
    if channel is not None and not is_number_channel(channel):
        return identity
    return digits_of(identity) or identity.strip()


def checked(channel: str | None, identity: str) -> str:
    """`normalise` for a lookup: a number channel's identity that is not a number (or is longer
    than E.164 allows) raises NotANumber rather than being looked up as text nobody stored."""
    if not is_number_channel(channel):
        return normalise(channel, identity)
    digits = digits_of(identity)
    if digits is None or len(digits) > MAX_DIGITS:
        raise NotANumber(f"not a phone number (up to {MAX_DIGITS} digits, '+' and separators)")
    return digits


def loose(value: str) -> str:
    """The older rule (a leading "+", spaces and "-" dropped when the rest is digits): message
    metadata in stored events is named by it, and a lookup must name it the same."""
    candidate = value.strip()
    digits = candidate.lstrip("+").replace(" ", "").replace("-", "")
    return digits if digits.isdigit() else candidate
