"""Consent keywords as regulators read them, and the review heuristic: pure functions."""

from __future__ import annotations

import pytest

from callback_ledger.config import ConfigError, Settings
from callback_ledger.projections import rules
from callback_ledger.projections.keywords import (
    DEFAULT_KEYWORDS,
    HELP,
    LANGUAGES,
    OPT_IN,
    OPT_OUT,
    Keywords,
    normalise,
    words,
)


@pytest.mark.parametrize(
    ("text", "normalised", "action"),
    [
        ("STOP", "STOP", OPT_OUT),
        ("Stop.", "STOP", OPT_OUT),
        ("!!STOP!!", "STOP", OPT_OUT),
        ("Stop?", "STOP", OPT_OUT),  # a doubtful revocation is honoured
        ("«stop»", "STOP", OPT_OUT),
        ('"Stop"', "STOP", OPT_OUT),
        ("stop 🛑", "STOP", OPT_OUT),
        ("stop‼️", "STOP", OPT_OUT),
        (" \tStop\n", "STOP", OPT_OUT),
        ("stop\u200b", "STOP", OPT_OUT),  # a zero-width space pasted in
        ("\uff33\uff34\uff2f\uff30", "STOP", OPT_OUT),  # full-width STOP
        ("opt out", "OPTOUT", OPT_OUT),
        ("OPT-OUT", "OPTOUT", OPT_OUT),
        ("opt  -  out", "OPTOUT", OPT_OUT),
        ("Opt_Out", "OPTOUT", OPT_OUT),
        ("opt\u2013out", "OPTOUT", OPT_OUT),  # an en dash
        ("optout", "OPTOUT", OPT_OUT),
        ("Stop all", "STOPALL", OPT_OUT),
        ("Revoke", "REVOKE", OPT_OUT),
        ("Arrêt", "ARRET", OPT_OUT),
        ("ARRET", "ARRET", OPT_OUT),
        ("arrêt !", "ARRET", OPT_OUT),
        ("Alto", "ALTO", OPT_OUT),
        ("baja", "BAJA", OPT_OUT),
        ("No más", "NOMAS", OPT_OUT),
        ("START", "START", OPT_IN),
        ("unstop", "UNSTOP", OPT_IN),
        ("Yes!", "YES", OPT_IN),
        ("non arrêt", "NONARRET", OPT_IN),
        ("HELP", "HELP", HELP),
        ("help?", "HELP", HELP),
        ("Info", "INFO", HELP),
        ("aide", "AIDE", HELP),
        ("AYUDA", "AYUDA", HELP),
        ("don't stop", "DON'TSTOP", None),
        ("stop by the shop later", "STOPBYTHESHOPLATER", None),
        ("STOP please", "STOPPLEASE", None),
        ("stop.stop", "STOP.STOP", None),
        ("🛑", "", None),
        ("", "", None),
    ],
)
def test_the_whole_message_normalised_is_the_keyword(
    text: str, normalised: str, action: str | None
) -> None:
    assert normalise(text) == normalised
    assert DEFAULT_KEYWORDS.action(text) == action


def test_no_text_is_no_keyword() -> None:
    assert DEFAULT_KEYWORDS.action(None) is None
    assert DEFAULT_KEYWORDS.review(None) is None


def test_keywords_are_normalised_like_messages() -> None:
    keywords = Keywords.of(["Opt Out", "ARRÊT"], ["oui"], ["Aide-moi"])
    assert keywords.opt_out == {"OPTOUT", "ARRET"}
    assert keywords.action("opt-out") == OPT_OUT
    assert keywords.action("arret") == OPT_OUT
    assert keywords.action("OUI") == OPT_IN
    assert keywords.action("aide moi") == HELP


def test_an_opt_out_wins_over_a_word_in_another_set() -> None:
    keywords = Keywords.build(["en"], opt_out=["yes", "help"])
    assert keywords.action("yes") == OPT_OUT
    assert keywords.action("help") == OPT_OUT


def test_languages_select_the_sets_and_extra_words_add_to_them() -> None:
    english = Keywords.build(["en"])
    assert english.action("arret") is None and english.action("stop") == OPT_OUT
    french = Keywords.build(["fr"])
    assert french.action("stop") == OPT_OUT and french.action("end") is None
    nothing = Keywords.build([], opt_out=["basta"])
    assert nothing.action("basta") == OPT_OUT and nothing.action("stop") is None
    assert Keywords.build(["en", "fr", "es"]) == DEFAULT_KEYWORDS
    assert rules.DEFAULT_KEYWORDS is DEFAULT_KEYWORDS and rules.Keywords is Keywords


def test_every_language_names_its_three_sets() -> None:
    for sets in LANGUAGES.values():
        assert set(sets) == {OPT_OUT, OPT_IN, HELP}
        assert all(normalise(word) for words_ in sets.values() for word in words_)


def test_keyword_configuration_from_the_environment() -> None:
    default = Settings.from_env({})
    assert default.keyword_languages == ("en", "fr", "es")
    assert default.opt_out_keywords == default.opt_in_keywords == default.help_keywords == ()
    settings = Settings.from_env(
        {
            "LEDGER_KEYWORD_LANGUAGES": " EN, es ",
            "LEDGER_OPT_OUT_KEYWORDS": "basta, opt out ,",
            "LEDGER_OPT_IN_KEYWORDS": "si",
            "LEDGER_HELP_KEYWORDS": "socorro",
        }
    )
    assert settings.keyword_languages == ("en", "es")
    assert settings.opt_out_keywords == ("basta", "opt out")
    assert (settings.opt_in_keywords, settings.help_keywords) == (("si",), ("socorro",))
    assert Settings.from_env({"LEDGER_KEYWORD_LANGUAGES": "none"}).keyword_languages == ()
    with pytest.raises(ConfigError, match="LEDGER_KEYWORD_LANGUAGES: unknown de"):
        Settings.from_env({"LEDGER_KEYWORD_LANGUAGES": "en,de"})


# ---- the review heuristic -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("please stop texting me", "stop+contact"),
        ("Stop sending me messages!", "stop+contact"),
        ("STOP CALLING ME", "stop+contact"),
        ("quit spamming me", "stop+contact"),
        ("Arrêtez de m'envoyer des SMS", "stop+contact"),
        ("Dejen de enviarme mensajes", "stop+contact"),
        ("don't text me anymore", "negated+contact"),
        ("Do not contact me again", "negated+contact"),
        ("never message me again", "negated+contact"),
        ("no more texts please", "negated+contact"),
        ("No más mensajes por favor", "negated+contact"),
        ("remove me", "keyword+filler"),
        ("Please remove my number", "remove+me"),
        ("delete me from your list", "remove+me"),
        ("unsubscribe me please", "keyword+filler"),
        ("STOP please", "keyword+filler"),
        ("please stop", "keyword+filler"),
        ("Stop stop stop", "keyword+filler"),
        ("Stop it!", "keyword+filler"),
        ("how do I opt out?", "keyword+filler"),
        ("opt.out", "keyword+filler"),
        ("arrêt svp", "keyword+filler"),
        ("leave me alone", "phrase"),
        ("take me off your list", "phrase"),
        ("Not interested", "phrase"),
        ("désabonnez-moi", "phrase"),
        ("déjame en paz", "phrase"),
        ("🛑", "stop sign"),
        ("⛔⛔", "stop sign"),
    ],
)
def test_free_text_that_reads_like_a_revocation_is_listed(text: str, rule: str) -> None:
    assert DEFAULT_KEYWORDS.action(text) is None
    assert DEFAULT_KEYWORDS.review(text) == rule


@pytest.mark.parametrize(
    "text",
    [
        "don't stop",
        "don't stop the music",
        "don't stop texting me",  # a wish to be texted
        "stop by the shop later",
        "can't wait",
        "thanks!",
        "what time do you close?",
        "please call me tomorrow",
        "No, call me tomorrow",
        "don't forget to text me",
        "take me to the store",
        "cancel my appointment",
        "I have no more money",
        "see you at the end of the day",
        "Yes please",
        "😀",
        "",
        # Keywords are consent facts, not review candidates.
        "STOP",
        "Opt-Out!",
        "HELP",
    ],
)
def test_ordinary_messages_and_keywords_are_not_listed(text: str) -> None:
    assert DEFAULT_KEYWORDS.review(text) is None


def test_the_heuristic_follows_the_configured_opt_out_words() -> None:
    assert DEFAULT_KEYWORDS.review("basta por favor") is None
    assert Keywords.build(opt_out=["basta"]).review("basta por favor") == "keyword+filler"


def test_words_drop_apostrophes_accents_and_punctuation() -> None:
    assert words("Don't STOP—texting, \uff2de!") == ["dont", "stop", "texting", "me"]
    assert words("Arrêtez de m\u2019envoyer") == ["arretez", "de", "menvoyer"]
