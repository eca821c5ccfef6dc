"""Channel identities: a phone number spelled any way is one number on the number channels;
any other channel's identity is kept byte for byte. No I/O."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.identity import (
    MAX_DIGITS,
    NUMBER_CHANNELS,
    NotANumber,
    checked,
    digits_of,
    loose,
    normalise,
    unicode_digits_of,
)

# Ways people and programs write the parts of a phone number.
PLUSES = ["+", "\uff0b", "\u207a", "\ufe62", "\u208a"]
SPACES = [" ", "\u00a0", "\u2007", "\u202f", "\u3000", "\u2009", "\t", "\u200b", "\u200e"]
DASHES = ["-", "\u2010", "\u2011", "\u2012", "\u2013", "\u2014", "\u2212", "\ufe63", "\uff0d"]
DOTS = [".", "\uff0e", "\u00b7"]
BRACKETS = [("(", ")"), ("\uff08", "\uff09"), ("[", "]")]
# A digit as ASCII, full-width, or in another script's decimal digits.
DIGIT_FORMS = [lambda d: d, lambda d: chr(0xFF10 + int(d)), lambda d: chr(0x0660 + int(d))]

OTHER_CHANNELS = ["VIBER", "MESSENGER", "INSTAGRAM", "TELEGRAM", "LINE", "WECHAT", "APPLEBC"]
number_channel = st.sampled_from(sorted(NUMBER_CHANNELS)).flatmap(
    lambda c: st.sampled_from([c, c.lower()])
)
digits = st.text(alphabet="0123456789", min_size=1, max_size=MAX_DIGITS)


@st.composite
def spelling(draw: st.DrawFn, number: str) -> str:
    """The number written with a random mix of the variants above."""
    parts: list[str] = [draw(st.sampled_from(["", *SPACES]))]
    parts.append(draw(st.sampled_from(["", "", *PLUSES])))
    bracket = draw(st.sampled_from([None, *BRACKETS]))
    split = draw(st.integers(0, len(number)))
    for i, digit in enumerate(number):
        if bracket and i == 0:
            parts.append(bracket[0])
        if bracket and i == split:
            parts.append(bracket[1])
        parts.append(draw(st.sampled_from(DIGIT_FORMS))(digit))
        parts.append(draw(st.sampled_from(["", "", "", *SPACES, *DASHES, *DOTS])))
    if bracket and split == len(number):
        parts.append(bracket[1])
    parts.append(draw(st.sampled_from(["", *SPACES])))
    return "".join(parts)


@given(st.data(), number_channel, digits)
def test_any_spelling_of_a_number_is_its_digits(
    data: st.DataObject, channel: str, number: str
) -> None:
    written = data.draw(spelling(number))
    assert normalise(channel, written) == number
    assert checked(channel, written) == number
    # With no channel a lookup reads it as a number too.
    assert normalise(None, written) == number


@pytest.mark.parametrize(
    "written",
    [
        "\uff0b46700000009",
        "\u207a46 70 000 00 09",
        "\ufe62(46) 700-000.009",
        "+46\u00a0700\u2013000\u2014009",
        "\uff14\uff16\uff17\uff10\uff10\uff10\uff10\uff10\uff10\uff10\uff19",
        "\u200e+46700000009\u200f",
        "++46700000009",
        " +46 70-000 0009 ",
    ],
)
def test_examples_of_one_number(written: str) -> None:
    assert normalise("SMS", written) == "46700000009"


@given(st.sampled_from(OTHER_CHANNELS), st.text(min_size=1, max_size=60))
def test_other_channels_keep_an_identity_byte_for_byte(channel: str, identity: str) -> None:
    assert normalise(channel, identity) == identity
    assert checked(channel, identity) == identity


@pytest.mark.parametrize(
    ("channel", "identity"),
    [
        ("VIBER", "9KC0p+pi4zPGDO99ACDxoQ=="),
        ("VIBER", "+12345678901=="),
        ("MESSENGER", " +4673-200 1122 "),
        ("TELEGRAM", "-1001234567890"),
        ("INSTAGRAM", "3964920326927846"),
    ],
)
def test_ids_that_look_like_numbers_stay_as_sent(channel: str, identity: str) -> None:
    assert normalise(channel, identity) == identity


@given(
    st.sampled_from([*sorted(NUMBER_CHANNELS), *OTHER_CHANNELS, None]),
    st.text(max_size=40),
)
def test_normalising_twice_changes_nothing(channel: str | None, identity: str) -> None:
    once = normalise(channel, identity)
    assert normalise(channel, once) == once


@pytest.mark.parametrize(
    "identity",
    ["alice", "46 70 abc", "4670+0000", "+", " - ", "1" * (MAX_DIGITS + 1), "4670\x0011"],
)
def test_a_number_channel_refuses_a_question_about_a_non_number(identity: str) -> None:
    with pytest.raises(NotANumber):
        checked("SMS", identity)


def test_a_recorded_non_number_on_a_number_channel_is_kept_as_sent() -> None:
    # A callback is never refused for its spelling: the text is kept (trimmed, as it always was).
    assert normalise("SMS", " 4670\x0011 ") == "4670\x0011"


@given(st.text(alphabet="0123456789+- \t", max_size=30))
def test_numbers_keep_the_names_they_were_stored_under(written: str) -> None:
    """Names in stored events (blind indexes, stream names, dedupe keys) were made with the old
    rule (`loose`): every ASCII spelling it read as a number still gets the same name."""
    old = loose(written)
    if old.isdigit():
        assert normalise("SMS", written) == old


@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=30))
def test_the_ascii_shortcut_agrees_with_the_whole_rule(text: str) -> None:
    assert digits_of(text) == unicode_digits_of(text)


@given(st.text(alphabet="0123456789+-.()[]{} \t\n\x1fa/", max_size=30))
def test_the_ascii_shortcut_agrees_on_number_like_text(text: str) -> None:
    assert digits_of(text) == unicode_digits_of(text)
