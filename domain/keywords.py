"""Consent keywords in inbound messages, and free text that reads like a revocation (docs/api.md,
"Consent keywords" and "Review"). Pure: the consent projection calls them, so a `replay` re-reads
every stored text with the keyword configuration of the day. `Keywords.read` answers two
questions in one pass: is the message a keyword (the action), and, when not, does it look like a
request to stop that a person should read (the review; it never changes the consent state)."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

OPT_OUT = "OPT_OUT"
OPT_IN = "OPT_IN"
HELP = "HELP"

# Keyword sets by language (sources: docs/api.md). Written as people type them; they are
# normalised like the messages, so "OPT OUT" is OPTOUT and ARRÊT is ARRET.
LANGUAGES: dict[str, dict[str, tuple[str, ...]]] = {
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
    "fr": {
        OPT_OUT: ("ARRÊT", "STOP"),
        OPT_IN: ("NONARRÊT",),
        HELP: ("AIDE",),
    },
    "es": {
        OPT_OUT: ("ALTO", "PARAR", "BAJA", "CANCELAR", "DETENER", "SALIR", "NO MÁS"),
        OPT_IN: ("VOLVER", "RECIBIR"),
        HELP: ("AYUDA",),
    },
}
DEFAULT_LANGUAGES = ("en", "fr", "es")

# Removed anywhere in an opt-out comparison: spaces, dashes and underscores ("opt - out"),
# line breaks and invisible format characters.
_JOINERS = ("Z", "Pd", "Pc", "Cc", "Cf")
# Stripped at both ends: punctuation, symbols (emoji included), separators, controls.
_EDGES = ("P", "S", "Z", "C")
# The review heuristic reads this many characters of a message: a revocation is short, and a
# long text must not cost its whole length on every replay.
REVIEW_CHARS = 1000


def _bare(text: str) -> str:
    """NFKC (full-width STOP is STOP), case-folded, accents removed (NFKD, then every
    non-spacing mark dropped: ARRÊT is ARRET; emoji variation selectors go too)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return "".join(
        c for c in unicodedata.normalize("NFKD", folded) if unicodedata.category(c) != "Mn"
    )


def _trim(bare: str) -> str:
    start, end = 0, len(bare)
    while start < end and unicodedata.category(bare[start])[0] in _EDGES:
        start += 1
    while end > start and unicodedata.category(bare[end - 1])[0] in _EDGES:
        end -= 1
    return bare[start:end]


def _joined(trimmed: str) -> str:
    return "".join(c for c in trimmed if not unicodedata.category(c).startswith(_JOINERS)).upper()


def _spaced(trimmed: str) -> str:
    out = []
    for c in trimmed:
        category = unicodedata.category(c)
        if category == "Cf":  # invisible: "un\u200bstop" shows as "unstop"
            continue
        if category[0] == "Z" or category == "Cc":
            c = " "
        elif category == "Pd":
            c = "-"
        out.append(c)
    return " ".join("".join(out).split()).upper()


def _tokens(bare: str) -> list[str]:
    """The words the review heuristic reads: apostrophes dropped ("don't" is "dont",
    "m'envoyer" is "menvoyer"), split on anything that is not a letter or digit."""
    bare = bare.replace("'", "").replace("\u2019", "")
    return "".join(c if c.isalnum() else " " for c in bare).split()


def normalise(text: str) -> str:
    """The form a message is compared with the opt-out keywords in: `_bare`, trimmed of
    punctuation, symbols and whitespace at both ends ("Stop.", "!!STOP!!", "«stop»", "stop 🛑"),
    inner spaces, dashes and underscores removed ("opt out", "OPT-OUT", "opt  -  out" are all
    OPTOUT), upper case. Inner punctuation stays: "don't stop" is DON'TSTOP, no keyword.
    Joining words is safe only for opt-outs: it makes "un stop" UNSTOP, an opt-in."""
    return _joined(_trim(_bare(text)))


def spaced(text: str) -> str:
    """The form a message is compared with the opt-in and help keywords in: trimmed like
    `normalise`, but its words kept as written: runs of spaces one space, every dash "-",
    invisible characters dropped. "non arrêt" is NON ARRET, not the opt-in NONARRET, and
    "un-stop" is UN-STOP, not UNSTOP."""
    return _spaced(_trim(_bare(text)))


@dataclass(frozen=True, slots=True)
class Reading:
    """What an inbound message says: a keyword's `action` and the normalised `keyword`, or,
    for a message that is none, the `review` rule by which a person should read it."""

    action: str | None = None
    keyword: str | None = None
    review: str | None = None


NOTHING = Reading()


@dataclass(frozen=True)
class Keywords:
    opt_out: frozenset[str]  # in `normalise` form
    opt_in: frozenset[str]  # in `spaced` form, like help
    help: frozenset[str] = frozenset()
    longest: int = field(init=False, repr=False, compare=False)
    # A raw text longer than this is no keyword (the review still reads it). Generous, because
    # normalising can shorten a text a lot: "STOP" and a row of emoji or exclamation marks,
    # dropped accents and spaces, NFKC compositions.
    limit: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        longest = max(map(len, self.opt_out | self.opt_in | self.help), default=0)
        object.__setattr__(self, "longest", longest)
        object.__setattr__(self, "limit", 8 * longest + 64)

    @classmethod
    def of(
        cls, opt_out: Iterable[str], opt_in: Iterable[str], help: Iterable[str] = ()
    ) -> Keywords:
        def norm(found: Iterable[str], form: Callable[[str], str]) -> frozenset[str]:
            return frozenset(k for k in map(form, found) if k)

        return cls(norm(opt_out, normalise), norm(opt_in, spaced), norm(help, spaced))

    @classmethod
    def build(
        cls,
        languages: Iterable[str] = DEFAULT_LANGUAGES,
        opt_out: Iterable[str] = (),
        opt_in: Iterable[str] | None = None,
        help: Iterable[str] = (),
    ) -> Keywords:
        """The sets of `languages`, plus the extra opt-out and help words given. Opt-in words,
        when given, replace the languages' own: an opt-in is never added behind an operator's
        back."""
        sets = [LANGUAGES[language] for language in languages]
        return cls.of(
            [*(w for s in sets for w in s[OPT_OUT]), *opt_out],
            [w for s in sets for w in s[OPT_IN]] if opt_in is None else opt_in,
            [*(w for s in sets for w in s[HELP]), *help],
        )

    def read(self, text: str | None) -> Reading:
        """The one pass over a message: `_bare` once, then every comparison on that."""
        if not text:
            return NOTHING
        short = len(text) <= self.limit
        bare = _bare(text if short else text[:REVIEW_CHARS])
        tokens = _tokens(bare)
        if short:
            found = self._keyword(bare, tokens)
            if found is not None:
                return found
        rule = looks_like_revocation(tokens, self.opt_out)
        if rule is None and STOP_SIGNS & set(bare):
            rule = "stop sign"
        return Reading(review=rule) if rule else NOTHING

    def _keyword(self, bare: str, tokens: list[str]) -> Reading | None:
        """OPT_OUT when the whole message is one opt-out keyword, or nothing but opt-out
        keywords and courtesy ("STOP STOP", "stop please"); else OPT_IN or HELP when it is one
        such keyword as written. Opt-out first: of two readings, the safe one."""
        trimmed = _trim(bare)
        joined = _joined(trimmed)
        if joined in self.opt_out:
            return Reading(OPT_OUT, joined)
        said = self._opt_outs([t for t in tokens if t not in COURTESY])
        if said:
            return Reading(OPT_OUT, " ".join(said))
        as_written = _spaced(trimmed)
        if as_written in self.opt_in and NOT_CONSENT.isdisjoint(bare):
            return Reading(OPT_IN, as_written)
        if as_written in self.help:
            return Reading(HELP, as_written)
        return None

    def _opt_outs(self, tokens: list[str]) -> list[str] | None:
        """The opt-out keywords that, one after another, are exactly these words ("opt out
        stop" is OPTOUT, STOP), else None."""
        after: dict[int, list[str]] = {len(tokens): []}
        for i in range(len(tokens) - 1, -1, -1):
            joined = ""
            for j in range(i, len(tokens)):
                joined += tokens[j].upper()
                if len(joined) > self.longest:
                    break
                if joined in self.opt_out and j + 1 in after:
                    after[i] = [joined, *after[j + 1]]
                    break
        return after.get(0) if tokens else None


# ---- the review heuristic (its rules and examples: docs/api.md, "Review") ------------------
# It errs towards listing: a human dismisses a false candidate in seconds, while a missed
# revocation is a violation. Mostly English, with the commonest French and Spanish verbs.


def _set(text: str) -> frozenset[str]:
    return frozenset(text.split())


FILLER = _set(
    "please pls plz me my us i we you your to want would like can do how just now right "
    "away asap immediately all it this that these them the messages texts thanks thank ok "
    "okay already again por favor gracias svp merci"
)
# Words that make no opt-out less of one: "STOP please", "stop now, thanks".
COURTESY = _set("please pls plz now thanks thank you thx svp merci por favor gracias")
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
# An opt-in never carries these: a question ("Yes?") is not consent, nor is a stop sign.
NOT_CONSENT = STOP_SIGNS | frozenset("?\u00bf")
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


PHRASE_STARTS: dict[str, list[tuple[str, ...]]] = {}
for _phrase in PHRASES:
    PHRASE_STARTS.setdefault(_phrase[0], []).append(_phrase)


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
    for i, token in enumerate(tokens):
        for phrase in PHRASE_STARTS.get(token, ()):
            if tuple(tokens[i : i + len(phrase)]) == phrase:
                return "phrase"
    upper = [t.upper() for t in tokens]
    for i, token in enumerate(upper):
        if (i and tokens[i - 1] in NEGATIONS) or (
            token == "STOP" and upper[i + 1 : i + 2] == ["BY"]
        ):
            continue
        joined = ""
        for later in upper[i : i + 3]:
            joined += later
            if joined in opt_out:
                return "keyword+other"
    return None


DEFAULT_KEYWORDS = Keywords.build()
