"""Consent keywords in inbound messages, and free text that reads like a revocation. Pure
functions, no I/O: the consent projection calls them, so a `replay` re-reads every stored
inbound text with the keyword configuration of the day.

Two separate questions:

- `Keywords.action`: is the whole message, normalised, one keyword? Then it is a consent fact
  (opt-out, opt-in) or a help request. "don't stop" and "stop by the shop later" are not.
- `Keywords.review`: a message that is not a keyword but looks like a request to stop ("please
  stop texting me", "remove me") is listed for a human. The FCC's 2025 rule asks that any
  reasonable way of revoking consent be honoured; no word list can decide that, so the
  heuristic only picks what a person should read, and never changes the consent state.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

OPT_OUT = "OPT_OUT"
OPT_IN = "OPT_IN"
HELP = "HELP"

# Keyword sets by language (sources in README.md, "Consent keywords"). Written as people type
# them; they are normalised like the messages, so "OPT OUT" is OPTOUT and ARRÊT is ARRET.
LANGUAGES: dict[str, dict[str, tuple[str, ...]]] = {
    # CTIA and the FCC's 2025 revocation rule (stop, quit, end, revoke, opt out, cancel,
    # unsubscribe); STOPALL, REMOVE and UNSUB as carriers and aggregators accept them.
    "en": {
        OPT_OUT: (
            "STOP",
            "STOPALL",
            "UNSUBSCRIBE",
            "UNSUB",
            "CANCEL",
            "END",
            "QUIT",
            "OPT OUT",
            "REVOKE",
            "REMOVE",
        ),
        OPT_IN: ("START", "UNSTOP", "YES"),
        HELP: ("HELP", "INFO"),
    },
    # CWTA (Canada): ARRET and AIDE are mandatory beside STOP and HELP; in France the universal
    # opt-out is STOP. NONARRET undoes ARRET on US/Canadian toll-free numbers.
    "fr": {
        OPT_OUT: ("ARRÊT", "STOP"),
        OPT_IN: ("NONARRÊT",),
        HELP: ("AIDE",),
    },
    # US Spanish-language short codes: ALTO and AYUDA; BAJA and CANCELAR (MMA guidance);
    # DETENER / SALIR and VOLVER / RECIBIR are Sinch consent management's Spanish defaults;
    # PARAR; "no más" is the FCC commentary's own example of a revocation in Spanish.
    "es": {
        OPT_OUT: ("ALTO", "PARAR", "BAJA", "CANCELAR", "DETENER", "SALIR", "NO MÁS"),
        OPT_IN: ("VOLVER", "RECIBIR"),
        HELP: ("AYUDA",),
    },
}
DEFAULT_LANGUAGES = ("en", "fr", "es")

# Removed anywhere in a keyword comparison: spaces, dashes and underscores ("opt - out"),
# line breaks and invisible format characters.
_JOINERS = ("Z", "Pd", "Pc", "Cc", "Cf")
# Stripped at both ends: punctuation, symbols (emoji included), separators, controls.
_EDGES = ("P", "S", "Z", "C")


def _bare(text: str) -> str:
    """NFKC (full-width STOP is STOP), case-folded, accents removed (NFKD, then every
    non-spacing mark dropped: ARRÊT is ARRET; emoji variation selectors go too)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return "".join(
        c for c in unicodedata.normalize("NFKD", folded) if unicodedata.category(c) != "Mn"
    )


def normalise(text: str) -> str:
    """The form a message is compared in: `_bare`, trimmed of punctuation, symbols and
    whitespace at both ends ("Stop.", "!!STOP!!", "«stop»", "stop 🛑"), inner spaces, dashes and
    underscores removed ("opt out", "OPT-OUT", "opt  -  out" are all OPTOUT), upper case.
    Inner punctuation stays: "don't stop" is DON'TSTOP, no keyword."""
    bare = _bare(text)
    start, end = 0, len(bare)
    while start < end and unicodedata.category(bare[start])[0] in _EDGES:
        start += 1
    while end > start and unicodedata.category(bare[end - 1])[0] in _EDGES:
        end -= 1
    inner = bare[start:end]
    return "".join(c for c in inner if not unicodedata.category(c).startswith(_JOINERS)).upper()


def words(text: str) -> list[str]:
    """The words of a message for the review heuristic: `_bare`, apostrophes dropped ("don't"
    is "dont", "m'envoyer" is "menvoyer"), split on anything that is not a letter or digit."""
    bare = _bare(text).replace("'", "").replace("\u2019", "")
    return "".join(c if c.isalnum() else " " for c in bare).split()


@dataclass(frozen=True)
class Keywords:
    opt_out: frozenset[str]
    opt_in: frozenset[str]
    help: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls, opt_out: Iterable[str], opt_in: Iterable[str], help: Iterable[str] = ()
    ) -> Keywords:
        def norm(found: Iterable[str]) -> frozenset[str]:
            return frozenset(k for k in map(normalise, found) if k)

        return cls(norm(opt_out), norm(opt_in), norm(help))

    @classmethod
    def build(
        cls,
        languages: Iterable[str] = DEFAULT_LANGUAGES,
        opt_out: Iterable[str] = (),
        opt_in: Iterable[str] = (),
        help: Iterable[str] = (),
    ) -> Keywords:
        """The sets of `languages`, plus the extra words given."""
        sets = [LANGUAGES[language] for language in languages]
        return cls.of(
            [*(w for s in sets for w in s[OPT_OUT]), *opt_out],
            [*(w for s in sets for w in s[OPT_IN]), *opt_in],
            [*(w for s in sets for w in s[HELP]), *help],
        )

    def action(self, text: str | None) -> str | None:
        """OPT_OUT, OPT_IN or HELP when the whole message, normalised, is one keyword. A word in
        several sets counts as an opt-out first (the safe reading), then as an opt-in."""
        if not text:
            return None
        word = normalise(text)
        if word in self.opt_out:
            return OPT_OUT
        if word in self.opt_in:
            return OPT_IN
        if word in self.help:
            return HELP
        return None

    def review(self, text: str | None) -> str | None:
        """For a message that is not a keyword: the name of the rule by which it reads like a
        request to stop, else None. See `looks_like_revocation`."""
        if not text or self.action(text) is not None:
            return None
        if not normalise(text) and STOP_SIGNS & set(text):
            return "stop sign"
        return looks_like_revocation(words(text), self.opt_out)


# ---- the review heuristic -------------------------------------------------------------------
#
# A message is listed for review when one of these rules holds over its words (`words`):
#
#   keyword+filler    an opt-out keyword with only filler words around it: "unsubscribe me
#                     please", "STOP NOW", "please stop", "how do I opt out", "stop stop"
#   stop+contact      a verb of stopping, not negated, then within four words a word of
#                     contacting: "please stop texting me", "stop sending me messages",
#                     "arrêtez de m'envoyer des sms", "dejen de enviarme mensajes"
#   negated+contact   a negation, then within two words a word of contacting: "don't text me
#                     anymore", "do not contact me", "never message me again", "no more texts"
#   remove+me         a verb of removal right before me/my/us: "remove me", "delete my number"
#   stop sign         nothing but symbols, one of them a stop sign or a raised hand: "🛑"
#   phrase            a fixed phrase: "leave me alone", "take me off", "opt me out", "not
#                     interested", "lose my number", and their French and Spanish kin
#
# What it leaves out on purpose: "don't stop" (a negated stop is not a request to stop, and
# "dont" is no filler), "stop by the shop later" (no contact word, and "by the shop later" is no
# filler), "can't wait", "thanks!", "what time do you close?". It errs towards listing: a
# human dismisses a false candidate in seconds, while a missed revocation is a violation.
# It is mostly English, with the commonest French and Spanish verbs; extend the sets below.


def _set(text: str) -> frozenset[str]:
    return frozenset(text.split())


FILLER = _set(
    "please pls plz me my us i we you your to want would like can do how just now right "
    "away asap immediately all it this that these them the messages texts thanks thank ok "
    "okay already again por favor gracias svp merci"
)
STOP_VERBS = _set("stop quit cease arrete arretez arreter deja dejen deje dejar paren pare parar")
CONTACT_WORDS = _set(
    "text texts texting txt txting message messages messaging msg msgs sms contact contacting "
    "call calls calling email emails emailing send sending spam spamming bother bothering "
    "write writing mensaje mensajes llamar llamadas enviar enviarme escribir textos envoyer "
    "menvoyer ecrire mecrire appeler mappeler contacter"
)
NEGATIONS = _set("dont not never")
MORE = _set("more mas")  # "no more", "no más"
REMOVE_VERBS = _set("remove delete erase unsubscribe unsub")
ME = _set("me my us")
STOP_SIGNS = frozenset("\U0001f6d1\u26d4\U0001f6ab\u270b")  # 🛑 ⛔ 🚫 ✋
PHRASES = (
    ("leave", "me", "alone"),
    ("take", "me", "off"),
    ("opt", "me", "out"),
    ("count", "me", "out"),
    ("not", "interested"),
    ("lose", "my", "number"),
    ("laissez", "moi", "tranquille"),
    ("desabonnez", "moi"),
    ("desabonner",),
    ("desinscrire",),
    ("dejame", "en", "paz"),
    ("dejenme", "en", "paz"),
    ("darme", "de", "baja"),
    ("dame", "de", "baja"),
)


def looks_like_revocation(tokens: list[str], opt_out: frozenset[str]) -> str | None:
    """The heuristic above, over a message's words (lower case) and the normalised opt-out
    keywords (upper case); the first rule that holds, or None."""
    if not tokens:
        return None
    rest = [t.upper() for t in tokens if t not in FILLER]
    if rest and ("".join(rest) in opt_out or all(t in opt_out for t in rest)):
        return "keyword+filler"
    for i, token in enumerate(tokens):
        before = tokens[i - 1] if i else ""
        after = tokens[i + 1] if i + 1 < len(tokens) else ""
        if (
            token in STOP_VERBS
            and before not in NEGATIONS
            and CONTACT_WORDS & set(tokens[i + 1 : i + 5])
        ):
            return "stop+contact"
        negation = token in NEGATIONS or (token in MORE and before == "no")
        # "don't stop texting me" is no request to stop: the negation is of the stopping.
        if negation and after not in STOP_VERBS and CONTACT_WORDS & set(tokens[i + 1 : i + 3]):
            return "negated+contact"
        if token in REMOVE_VERBS and after in ME:
            return "remove+me"
    for phrase in PHRASES:
        n = len(phrase)
        if any(tuple(tokens[i : i + n]) == phrase for i in range(len(tokens) - n + 1)):
            return "phrase"
    return None


DEFAULT_KEYWORDS = Keywords.build()
