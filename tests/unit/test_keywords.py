"""Consent keywords as regulators read them, and the review heuristic: pure functions."""

from __future__ import annotations

import pytest

from domain import keywords as keywords_module
from domain.keywords import (
    DEFAULT_KEYWORDS,
    HELP,
    LANGUAGES,
    NOTHING,
    OPT_IN,
    OPT_OUT,
    REVIEW_CHARS,
    Keywords,
    Reading,
    normalise,
)
from projections import rules
from service.settings import ConfigError, Settings


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
        ("nonarrêt", "NONARRET", OPT_IN),
        ("HELP", "HELP", HELP),
        ("help?", "HELP", HELP),
        ("Info", "INFO", HELP),
        ("aide", "AIDE", HELP),
        ("AYUDA", "AYUDA", HELP),
        ("don't stop", "DON'TSTOP", None),
        ("stop by the shop later", "STOPBYTHESHOPLATER", None),
        ("STOP please", "STOPPLEASE", OPT_OUT),  # opt-out words and courtesy only
        ("stop.stop", "STOP.STOP", OPT_OUT),
        ("Yes, stop", "YES,STOP", None),
        ("🛑", "", None),
        ("", "", None),
    ],
)
def test_the_whole_message_normalised_is_the_keyword(
    text: str, normalised: str, action: str | None
) -> None:
    assert normalise(text) == normalised
    assert DEFAULT_KEYWORDS.read(text).action == action


@pytest.mark.parametrize(
    "text", ["Non arrêt", "non arret", "NON  ARRÊT", "non-arrêt", "un stop", "Un Stop!", "UN-STOP"]
)
def test_joining_words_never_makes_an_opt_in(text: str) -> None:
    # "un stop" is "a stop", "non arrêt" a refusal: joined, they were UNSTOP and NONARRET.
    reading = DEFAULT_KEYWORDS.read(text)
    assert (reading.action, reading.review) == (None, "keyword+other")


def test_no_opt_in_or_help_keyword_matches_split_in_two() -> None:
    for sets in LANGUAGES.values():
        for word in (normalise(w) for w in (*sets[OPT_IN], *sets[HELP])):
            for i in range(1, len(word)):
                for split in (f"{word[:i]} {word[i:]}", f"{word[:i]}-{word[i:]}"):
                    assert DEFAULT_KEYWORDS.read(split).action in (None, OPT_OUT), split


def test_opt_in_and_help_words_match_as_written() -> None:
    keywords = Keywords.build([], opt_in=["UN-STOP", "opt in"], help=["aide moi"])
    assert keywords.opt_in == {"UN-STOP", "OPT IN"}
    assert keywords.read("Un-Stop!") == Reading(OPT_IN, "UN-STOP")
    assert keywords.read("un\u2011stop").action == OPT_IN  # a non-breaking hyphen is a dash
    assert keywords.read("opt  in\n").action == OPT_IN  # spaces collapse to one
    assert keywords.read("aide   moi").action == HELP
    for text in ("unstop", "un stop", "un - stop", "optin", "opt-in", "aidemoi"):
        assert keywords.read(text).action is None, text
    # Joining stays for opt-outs, where a wrong match is the safe error.
    assert Keywords.build([], opt_out=["no more"]).read("no-more").action == OPT_OUT


@pytest.mark.parametrize(
    ("text", "keyword"),
    [
        ("STOP STOP", "STOP STOP"),
        ("stop stop stop", "STOP STOP STOP"),
        ("stop please", "STOP"),
        ("Please STOP!", "STOP"),
        ("Stop, thank you", "STOP"),
        ("STOP! STOP!", "STOP STOP"),
        ("opt out, stop", "OPTOUT STOP"),
        ("arrêt svp", "ARRET"),
        ("No, más", "NOMAS"),
        ("alto por favor", "ALTO"),
        ("stop now", "STOP"),
    ],
)
def test_opt_out_keywords_with_only_courtesy_are_an_opt_out(text: str, keyword: str) -> None:
    assert DEFAULT_KEYWORDS.read(text) == Reading(OPT_OUT, keyword)


@pytest.mark.parametrize("text", ["Yes?", "START?", "¿Volver?", "yes 🛑", "✋ start"])
def test_a_question_or_a_stop_sign_is_no_opt_in(text: str) -> None:
    assert DEFAULT_KEYWORDS.read(text).action is None


def test_every_message_holding_an_opt_out_word_is_an_opt_out_or_listed() -> None:
    samples = [
        f"{before} {keyword} {after}".strip()
        for sets in LANGUAGES.values()
        for keyword in sets[OPT_OUT]
        for before in ("", "yes", "ok,", "start", "help", "un", "non", "the")
        for after in ("", "yes", "start!", "later", "?", "my plan")
    ]
    assert not any(DEFAULT_KEYWORDS.read(t).action == OPT_IN for t in samples)
    silent = [t for t in samples if DEFAULT_KEYWORDS.read(t) == NOTHING]
    assert silent == []
    # The documented exceptions: a negated stop, and the visiting stop.
    assert DEFAULT_KEYWORDS.read("don't stop") == NOTHING
    assert DEFAULT_KEYWORDS.read("stop by the shop later") == NOTHING


# ---- one pass per message, bounded ---------------------------------------------------------


def test_a_message_is_normalised_once(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    bare = keywords_module._bare

    def counting(text: str) -> str:
        seen.append(len(text))
        return bare(text)

    monkeypatch.setattr(keywords_module, "_bare", counting)
    for text in ("STOP", "please stop texting me", "what time do you close?", "Yes"):
        seen.clear()
        DEFAULT_KEYWORDS.read(text)
        assert seen == [len(text)], text
    seen.clear()
    DEFAULT_KEYWORDS.read("STOP " * 20_000)
    assert seen == [REVIEW_CHARS]  # too long for a keyword; the review reads its start


def test_a_long_text_is_no_keyword_but_is_read_for_review() -> None:
    assert DEFAULT_KEYWORDS.limit == 8 * len("UNSUBSCRIBE") + 64
    assert DEFAULT_KEYWORDS.read("STOP" + "!" * 100).action == OPT_OUT
    # Whatever NFKC or trimming would shrink it to, a text past the limit is no keyword...
    padded = "STOP" + " " * DEFAULT_KEYWORDS.limit
    assert DEFAULT_KEYWORDS.read(padded) == Reading(review="keyword+filler")
    # ... and the review reads only the first REVIEW_CHARS characters.
    late = "x" * REVIEW_CHARS + " please stop texting me"
    assert DEFAULT_KEYWORDS.read(late) == NOTHING
    early = "please stop texting me " + "x" * 100_000
    assert DEFAULT_KEYWORDS.read(early).review == "stop+contact"


def test_no_text_is_no_keyword() -> None:
    assert DEFAULT_KEYWORDS.read(None).action is None
    assert DEFAULT_KEYWORDS.read(None).review is None


def test_keywords_are_normalised_like_messages() -> None:
    keywords = Keywords.of(["Opt Out", "ARRÊT"], ["oui"], ["Aide-moi"])
    assert keywords.opt_out == {"OPTOUT", "ARRET"}
    assert keywords.help == {"AIDE-MOI"}  # opt-in and help words as written
    assert keywords.read("opt-out").action == OPT_OUT
    assert keywords.read("arret").action == OPT_OUT
    assert keywords.read("OUI").action == OPT_IN
    assert keywords.read("aide\u2013moi").action == HELP  # any dash is "-"
    assert keywords.read("aide moi").action is None and keywords.read("aidemoi").action is None


def test_an_opt_out_wins_over_a_word_in_another_set() -> None:
    keywords = Keywords.build(["en"], opt_out=["yes", "help"])
    assert keywords.read("yes").action == OPT_OUT
    assert keywords.read("help").action == OPT_OUT


def test_languages_select_the_sets_and_extra_words_add_to_them() -> None:
    english = Keywords.build(["en"])
    assert english.read("arret").action is None and english.read("stop").action == OPT_OUT
    french = Keywords.build(["fr"])
    assert french.read("stop").action == OPT_OUT and french.read("end").action is None
    nothing = Keywords.build([], opt_out=["basta"])
    assert nothing.read("basta").action == OPT_OUT and nothing.read("stop").action is None
    assert Keywords.build(["en", "fr", "es"]) == DEFAULT_KEYWORDS
    assert rules.DEFAULT_KEYWORDS is DEFAULT_KEYWORDS and rules.Keywords is Keywords


def test_every_language_names_its_three_sets() -> None:
    for sets in LANGUAGES.values():
        assert set(sets) == {OPT_OUT, OPT_IN, HELP}
        assert all(normalise(word) for words_ in sets.values() for word in words_)


def test_keyword_configuration_from_the_environment() -> None:
    default = Settings.from_env({})
    assert default.keyword_languages == ("en", "fr", "es")
    assert default.opt_out_keywords == default.help_keywords == ()
    assert default.opt_in_keywords is None  # the languages' own
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


def keywords_of(settings: Settings) -> Keywords:
    """As the runtime builds them."""
    return Keywords.build(
        settings.keyword_languages,
        settings.opt_out_keywords,
        settings.opt_in_keywords,
        settings.help_keywords,
    )


def test_listed_opt_in_words_replace_every_languages_own() -> None:
    # An operator who listed START,UNSTOP to drop YES keeps it dropped, in every language.
    settings = Settings.from_env({"LEDGER_OPT_IN_KEYWORDS": "START,UNSTOP"})
    keywords = keywords_of(settings)
    assert keywords.opt_in == {"START", "UNSTOP"}
    for word in ("yes", "volver", "recibir", "nonarrêt"):
        assert keywords.read(word).action is None, word
    assert keywords.read("start").action == OPT_IN
    # Opt-out and help words still add to the languages' own: the safe direction.
    more = keywords_of(
        Settings.from_env({"LEDGER_OPT_OUT_KEYWORDS": "basta", "LEDGER_HELP_KEYWORDS": "socorro"})
    )
    assert more.read("stop").action == more.read("basta").action == OPT_OUT
    assert more.read("help").action == more.read("socorro").action == HELP
    assert more.opt_in == DEFAULT_KEYWORDS.opt_in
    # "none": no opt-in keyword at all; blank: the languages' own.
    assert keywords_of(Settings.from_env({"LEDGER_OPT_IN_KEYWORDS": " None "})).opt_in == set()
    assert Settings.from_env({"LEDGER_OPT_IN_KEYWORDS": "  "}).opt_in_keywords is None
    with pytest.raises(ConfigError, match="LEDGER_OPT_IN_KEYWORDS is set to ' , ', which holds"):
        Settings.from_env({"LEDGER_OPT_IN_KEYWORDS": " , "})


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
        ("Stop it!", "keyword+filler"),
        ("how do I opt out?", "keyword+filler"),
        ("I want to stop", "keyword+filler"),
        # An opt-out keyword beside other words: a person decides.
        ("Yes, stop", "keyword+other"),
        ("YES STOP", "keyword+other"),
        ("Stop!!! Start", "keyword+other"),
        ("stop, yes", "keyword+other"),
        ("un stop", "keyword+other"),
        ("Non arrêt", "keyword+other"),
        ("UN-STOP", "keyword+other"),
        ("help stop", "keyword+other"),
        ("cancel my appointment", "keyword+other"),  # or a subscription: a person decides
        ("see you at the end of the day", "keyword+other"),
        ("I want to opt out of this", "keyword+other"),
        ("no más dinero", "keyword+other"),
        ("leave me alone", "phrase"),
        ("take me off your list", "phrase"),
        ("Not interested", "phrase"),
        ("désabonnez-moi", "phrase"),
        ("déjame en paz", "phrase"),
        ("🛑", "stop sign"),
        ("⛔⛔", "stop sign"),
        ("yes 🛑", "stop sign"),
    ],
)
def test_free_text_that_reads_like_a_revocation_is_listed(text: str, rule: str) -> None:
    assert DEFAULT_KEYWORDS.read(text).action is None
    assert DEFAULT_KEYWORDS.read(text).review == rule


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
        "I have no more money",
        "Yes please",
        "Yes?",  # no opt-in either: a question is not consent
        "😀",
        "",
        # Keywords are consent facts, not review candidates.
        "STOP",
        "Opt-Out!",
        "HELP",
        "STOP STOP",
        "stop please",
    ],
)
def test_ordinary_messages_and_keywords_are_not_listed(text: str) -> None:
    assert DEFAULT_KEYWORDS.read(text).review is None


def test_the_heuristic_follows_the_configured_opt_out_words() -> None:
    assert DEFAULT_KEYWORDS.read("basta me").review is None
    assert DEFAULT_KEYWORDS.read("basta ya").review is None
    basta = Keywords.build(opt_out=["basta"])
    assert basta.read("basta me").review == "keyword+filler"
    assert basta.read("basta ya").review == "keyword+other"
    assert basta.read("basta por favor").action == OPT_OUT


def test_words_drop_apostrophes_accents_and_punctuation() -> None:
    def words(text: str) -> list[str]:
        return keywords_module._tokens(keywords_module._bare(text))

    assert words("Don't STOP—texting, \uff2de!") == ["dont", "stop", "texting", "me"]
    assert words("Arrêtez de m\u2019envoyer") == ["arretez", "de", "menvoyer"]
