"""An evidence bundle for one subject (a channel and a number; format: README, "Evidence"): the
events behind its consent facts and the messages sent to it, chosen on the read side, with their
stored rows and seals (evidence.chain), and what the bundle says of them, DERIVED from those rows
by the projections' own rules (`derive`), on export and again by `verify`. An encrypted store's
bundle carries the data keys of exactly its events; what was erased shows as None, "erased"."""

from __future__ import annotations

import base64
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from domain.identity import normalise
from domain.keywords import DEFAULT_LANGUAGES, Keywords
from evidence import chain
from projections import rules
from projections.consent import erasure_rows, inbound_reading
from projections.log_reader import (
    CONSENT_REPORTED,
    ERASED,
    INBOUND_RECEIVED,
    LoggedEvent,
    decode_state,
)
from projections.messages import _fact as message_fact
from projections.personal import identity_name, open_rows
from projections.read_model import consent, messages
from store import envelope, spellings
from store.backend import Cursor, Database, time_window
from store.ledger import Ledger
from store.vault import KEY_ID_BYTES, NONCE_BYTES, REF_PREFIX, Vault, plaintext

Mismatch = chain.Mismatch
# The keyword configuration of a store with none set (service.settings).
DEFAULT_KEYWORDS = {"languages": list(DEFAULT_LANGUAGES), "opt_out": [], "opt_in": None, "help": []}
# The reference an erasure's event is named by in a bundle (it has no key of its own).
ERASURE_KEY = "erasure"


def consent_facts(
    cur: Cursor,
    channel: str,
    identity: str,
    since: str | None,
    until: str | None,
    vault: Vault | None = None,
) -> list[dict[str, Any]]:
    """The number's consent facts (`identity`: its name) and its contacts' whole-channel ones."""
    window = time_window("t.event_time", since, until)
    sql, params = consent.facts_about(
        "consent_history", consent.HISTORY_COLUMNS, channel, identity,
        " AND ".join(c for c, _ in window), [v for _, v in window],
    )  # fmt: skip
    rows = cur.execute(sql + " ORDER BY event_time, source_ref", params).fetchall()
    return open_rows(vault or plaintext(), [consent.history_view(dict(row)) for row in rows])


def sent_messages(
    cur: Cursor,
    channel: str,
    identity: str,
    since: str | None,
    until: str | None,
    vault: Vault | None = None,
) -> list[dict[str, Any]]:
    """Messages with a report to this channel and number in the window, each timeline only
    those reports. A report's number is not indexed, so this scans the channel's messages:
    acceptable for an export made now and then."""
    window = time_window("first_event_time", None, until)
    window += time_window("last_event_time", since, None)
    bounds = "".join(f" AND {c}" for c, _ in window)
    rows = cur.execute(
        "SELECT * FROM message_status WHERE (channel = ? OR contact_id IN "
        "(SELECT contact_id FROM contact_identities WHERE channel = ? AND identity = ?))"
        f"{bounds} ORDER BY first_event_time, project_id, message_id",
        [channel, channel, identity, *(v for _, v in window)],
    ).fetchall()
    found = []
    for row in rows:
        view = messages.message_view(row, with_timeline=True, vault=vault)
        # The timeline is the reports in order: their names pick the entries.
        names = [r["identity"] for r in rules.expanded_reports(row)]
        view["timeline"] = [
            r for r, name in zip(view["timeline"], names, strict=True)
            if r["channel"] == channel and name == identity
            and (since is None or r["event_time"] >= since)
            and (until is None or r["event_time"] < until)
        ]  # fmt: skip
        if view["timeline"]:
            found.append(view)
    return found


def bundle(
    ledger: Ledger,
    store_db: Database,
    read_db: Database,
    channel: str,
    identity: str,
    since: str | None = None,
    until: str | None = None,
    keywords: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The read side chooses the events (the cited callbacks, an event linking each contact of
    a whole-channel fact to the number, the erasure's event); the rest is `derive`d."""
    channel, identity = channel.upper(), normalise(channel, identity)
    vault = ledger.vault
    name = vault.index(channel, identity)
    with read_db.read() as cur:
        facts = consent_facts(cur, channel, name, since, until, vault)
        sent = sent_messages(cur, channel, name, since, until, vault)
        links = [_link_of(cur, channel, name, f) for f in facts if f["identity"] == ""]
        erasure = cur.execute("SELECT erasure_id FROM erasures WHERE subject = ?", (name,))
        erasure_ids = [row["erasure_id"] for row in erasure.fetchall()]
    chosen: dict[int, chain.StoredEvent] = {}
    for reference in chain.cited({"consent_facts": facts, "messages": sent}):
        row = chain.stored_event(ledger, store_db, reference)
        if row is not None:  # else the check names a cited reference without its event
            chosen[row.notification_id] = row
    for fact, link in zip([f for f in facts if f["identity"] == ""], links, strict=True):
        row = _linking_event(ledger, store_db, channel, name, fact, link)
        if row is not None:
            chosen.setdefault(row.notification_id, row)
    for erasure_id in erasure_ids:
        for row in chain.stream_events(ledger, store_db, UUID(erasure_id))[:1]:
            chosen.setdefault(row.notification_id, row)
    stored = [chosen[n] for n in sorted(chosen)]
    found: dict[str, Any] = {
        "format": chain.FORMAT,
        "version": chain.VERSION,
        "subject": {"channel": channel, "identity": identity, "since": since, "until": until},
        "keywords": dict(keywords or DEFAULT_KEYWORDS),
        "keys": _data_keys(vault, stored),
        "events": [row.as_json() for row in stored],
    }
    # A whole-channel fact no event binds to the number is left out.
    events = [event for event, _ in opened(found)]
    unbound = set(_unlinked(events, _subject_name(events, channel, identity)))
    if unbound:
        stored = [row for row in stored if row.notification_id not in unbound]
        found["keys"] = _data_keys(vault, stored)
        found["events"] = [row.as_json() for row in stored]
    derived = derive(found)
    head, seals = chain.chain_segment(store_db, ledger.events_table, stored)
    return {**found, **derived, "head": head, "seals": seals}


def _data_keys(vault: Vault, stored: Sequence[chain.StoredEvent]) -> dict[str, str]:
    """The data keys of exactly these events (hex id -> base64), those not destroyed."""
    keys: dict[str, str] = {}
    for key_id in envelope.key_ids(row.state for row in stored):
        key = vault.data_key(key_id) if vault.encrypted else None
        if key is not None:
            keys[key_id.hex()] = base64.b64encode(key).decode("ascii")
    return keys


# Messages of a contact read to find one showing it with the number (a plaintext store).
LINK_MESSAGES = 20


def _link_of(
    cur: Cursor, channel: str, name: str, fact: Mapping[str, Any]
) -> tuple[str | None, list[str]]:
    """Where to find an event showing a whole-channel fact's contact with the number: how the
    read side shows the number (encrypted: a reference to that event), and the references of
    the contact's reports on the channel."""
    row = cur.execute(
        "SELECT identity_shown FROM contact_identities WHERE channel = ? AND identity = ? "
        "AND project_id = ? AND contact_id = ?",
        (channel, name, fact["project_id"], fact["contact_id"]),
    ).fetchone()
    rows = cur.execute(
        f"SELECT {', '.join(rules.TIMELINE_COLUMNS)} FROM message_status "
        "WHERE contact_id = ? AND project_id = ? ORDER BY first_event_time LIMIT ?",
        (fact["contact_id"], fact["project_id"], LINK_MESSAGES),
    ).fetchall()
    reports = [r for message in rows for r in rules.expanded_reports(message)]
    references = [r["source_ref"] for r in reports if r["channel"] == channel and r["identity"]]
    return (row["identity_shown"] if row is not None else None), references


def _linking_event(
    ledger: Ledger,
    store_db: Database,
    channel: str,
    name: str,
    fact: Mapping[str, Any],
    where: tuple[str | None, list[str]],
) -> chain.StoredEvent | None:
    """An event naming the number with a whole-channel fact's contact (see `_link_of`)."""
    shown, references = where
    if shown is not None and shown.startswith(REF_PREFIX):
        return chain.event_at(ledger, store_db, int(shown[len(REF_PREFIX) :].partition(".")[0]))
    candidates = chain.stream_events(ledger, store_db, UUID(fact["source_ref"].partition("/")[0]))
    candidates += [row for ref in references if (row := chain.stored_event(ledger, store_db, ref))]
    for row in candidates:
        state = decode_state(row.state, ledger.vault, spellings.read(row.topic))
        named = identity_name(state, ledger.vault) == name and state.get("channel") == channel
        if named and state.get("contact_id") == fact["contact_id"]:
            return row
    return None


# ---- what a bundle says, derived from its events ------------------------------------------


class BundleKeys(Vault):
    """Opens events with the data keys a bundle carries; a missing key reads as erased."""

    def __init__(self, keys: Mapping[bytes, bytes]) -> None:
        super().__init__(None, None)
        self.encrypted = True
        self.given = dict(keys)

    def decrypt(self, blob: bytes) -> bytes | None:
        key_id = blob[:KEY_ID_BYTES]
        key = self.given.get(key_id)
        if key is None:
            return None
        nonce, sealed = (
            blob[KEY_ID_BYTES : KEY_ID_BYTES + NONCE_BYTES],
            blob[KEY_ID_BYTES + NONCE_BYTES :],
        )
        try:
            return AESGCM(key).decrypt(nonce, sealed, key_id)
        except InvalidTag:
            raise Mismatch(f"keys.{key_id.hex()}: it does not open its event") from None


def opened(bundle: Mapping[str, Any]) -> list[tuple[LoggedEvent, int]]:
    """The bundle's events decoded as the projections decode them (with their versions)."""
    try:
        keys = {
            bytes.fromhex(k): base64.b64decode(v, validate=True) for k, v in bundle["keys"].items()
        }
    except ValueError:
        raise Mismatch("keys: not hex key ids and base64 keys") from None
    vault = BundleKeys(keys)
    out = []
    for i, e in enumerate(bundle["events"]):
        state = base64.b64decode(e["state"], validate=True)
        topic = spellings.read(e["topic"])
        try:
            decoded = decode_state(
                state, vault if envelope.is_sealed(state) else plaintext(), topic
            )
        except Mismatch:
            raise
        except Exception as exc:  # sealed bytes that do not decode: say which, never a traceback
            raise Mismatch(f"events[{i}].state: its stored bytes do not decode ({exc})") from None
        out.append((LoggedEvent(int(e["notification_id"]), topic, str(UUID(e["stream"])), decoded),
                    int(e["version"])))  # fmt: skip
    return out


def derive(bundle: Mapping[str, Any]) -> dict[str, Any]:
    """What a bundle says of its events (`subject`, `events`, `consent_facts`, `messages`),
    from its `subject`, `keywords`, `keys` and the events' stored rows alone."""
    subject = bundle["subject"]
    channel = subject["channel"]
    wanted = normalise(channel, subject["identity"])
    since, until = subject.get("since"), subject.get("until")
    try:
        words = Keywords.build(
            bundle["keywords"]["languages"], bundle["keywords"]["opt_out"],
            bundle["keywords"]["opt_in"], bundle["keywords"]["help"],
        )  # fmt: skip
    except (KeyError, TypeError):
        raise Mismatch("keywords: not a keyword configuration") from None
    events = opened(bundle)
    plain = plaintext()
    name = _subject_name([e for e, _ in events], channel, wanted)

    def within(at: str) -> bool:
        return (since is None or at >= since) and (until is None or at < until)

    unlinked = _unlinked([e for e, _ in events], name)
    if unlinked:
        raise Mismatch(
            f"event {unlinked[0]}: a fact for a contact's whole channel, and no event of the "
            "bundle shows that contact with the subject"
        )
    facts: list[dict[str, Any]] = []
    reports: dict[tuple[str, str], list[tuple[dict[str, Any], LoggedEvent]]] = defaultdict(list)
    shown_events: list[dict[str, Any]] = []
    erasure: dict[str, Any] | None = None
    for event, version in events:
        state = event.state
        reference = None
        if event.topic in (CONSENT_REPORTED, INBOUND_RECEIVED):
            reference = f"{event.originator_id}/{state['dedupe_key']}"
            fact = _consent_fact(event, reference, name, words)
            if fact is not None and within(fact["event_time"]):
                facts.append(fact)
        elif event.topic == ERASED:
            reference = f"{event.originator_id}/{ERASURE_KEY}"
            erasure = erasure or _erasure(event, name)
        elif (found := message_fact(event, plain)) is not None:
            key, report = found
            reference = report["source_ref"]
            reports[key].append((report, event))
        else:
            raise Mismatch(f"event {event.notification_id}: not an event a bundle holds")
        shown_events.append(_event_view(bundle["events"][len(shown_events)], event, version,
                                        reference))  # fmt: skip
    facts.sort(key=lambda f: (f["event_time"], f["source_ref"]))
    sent = []
    for (project_id, message_id), items in reports.items():
        merged = rules.merge_reports([], [r for r, _ in items])
        by_reference = {r["source_ref"]: e for r, e in items}
        timeline = [
            _report_view(r, by_reference[r["source_ref"]])
            for r in merged
            if r["channel"] == channel and r["identity"] == name and within(r["at"])
        ]
        if timeline:
            first = merged[0]["at"]
            sent.append((first, {"project_id": project_id, "message_id": message_id,
                                 "timeline": timeline}))  # fmt: skip
    sent.sort(key=lambda m: (m[0], m[1]["project_id"], m[1]["message_id"]))
    return {
        "subject": {
            "channel": channel,
            "identity": wanted,  # as the export writes it: normalised
            "since": since,
            "until": until,
        }
        | ({"erasure": erasure} if erasure else {}),
        "events": shown_events,
        "consent_facts": facts,
        "messages": [m for _, m in sent],
    }


def _subject_name(events: Sequence[LoggedEvent], channel: str, wanted: str) -> str:
    """The name the events know the subject by (encrypted: a blind index); every event naming
    a number must name the subject's, on its channel."""
    plain = plaintext()
    names = set()
    for event in events:
        found = identity_name(event.state, plain)
        if found is None:
            continue
        if event.state.get("channel") != channel:
            raise Mismatch(f"subject.channel: event {event.notification_id} is on another channel")
        identity = event.state.get("identity")
        if isinstance(identity, str) and normalise(channel, identity) != wanted:
            raise Mismatch(f"subject.identity: event {event.notification_id} names another number")
        names.add(found)
    if len(names) > 1:
        raise Mismatch("subject.identity: the events name more than one subject")
    return names.pop() if names else plain.index(channel, wanted)


def _unlinked(events: Sequence[LoggedEvent], name: str) -> list[int]:
    """The whole-channel consent events whose contact no event shows with the subject."""
    plain = plaintext()
    links = set()
    for event in events:
        if identity_name(event.state, plain) == name:
            state = event.state
            links.add((state.get("project_id"), state.get("contact_id"), state.get("channel")))
    return [
        event.notification_id
        for event in events
        if event.topic in (CONSENT_REPORTED, INBOUND_RECEIVED)
        and identity_name(event.state, plain) is None
        and (
            event.state.get("project_id"),
            event.state.get("contact_key"),
            event.state.get("channel"),
        )
        not in links
    ]


def _shown_identity(state: Mapping[str, Any]) -> dict[str, Any]:
    """An event's number as the read side shows it (normalised), or None where erased."""
    identity = state.get("identity")
    if isinstance(identity, str):
        return {"identity": normalise(state.get("channel"), identity).replace("\x00", "\ufffd")}
    return {"identity": None, "erased": True}


def _consent_fact(
    event: LoggedEvent, reference: str, name: str, words: Keywords
) -> dict[str, Any] | None:
    """A consent fact as `audit history` shows it, by the consent projection's rules."""
    state = event.state
    inbound = event.topic == INBOUND_RECEIVED
    own = identity_name(state, plaintext())
    fact = rules.consent_fact(
        state["project_id"],
        state["contact_key"],
        "InboundMessageReceived" if inbound else "ConsentReported",
        state,
        reference,
        inbound_reading(state, words) if inbound else rules.NOTHING,
        own or "",
    )
    if fact is None:
        return None
    if own is not None and own != name:
        raise Mismatch(f"event {event.notification_id}: a fact about another subject")
    return consent.history_view(fact | (_shown_identity(state) if own else {"identity": ""}))


def _report_view(report: Mapping[str, Any], event: LoggedEvent) -> dict[str, Any]:
    """A timeline entry as `/messages/{id}` shows it."""
    return {
        "status": report["status"],
        "channel": report["channel"],
        **_shown_identity(event.state),
        "event_time": report["at"],
        "reason_code": report["reason_code"],
        "reason_sub_code": report["reason_sub_code"],
        "reason_description": report["reason_description"],
        "reference": report["source_ref"],
    }


def _erasure(event: LoggedEvent, name: str) -> dict[str, Any] | None:
    """The subject's erasure as the erasures table holds it."""
    for subject, at, by, reason, scope, *_, forget in erasure_rows(event):
        if subject == name:
            return {"subject": subject, "erased_at": at, "erased_by": by, "reason": reason,
                    "scope": scope, "forget_consent": forget}  # fmt: skip
    raise Mismatch(f"event {event.notification_id}: an erasure of another subject")


def _event_view(
    shown: Mapping[str, Any], event: LoggedEvent, version: int, reference: str
) -> dict[str, Any]:
    """An event's stored row, reference and raw callback (as `/callbacks/{reference}`)."""
    row = chain.StoredEvent(
        event.notification_id, UUID(event.originator_id), version, str(shown["topic"]),
        base64.b64decode(shown["state"]),
    )  # fmt: skip
    received = event.state.get("callback")
    callback = None
    if isinstance(received, dict):
        callback = {
            "reference": reference,
            "event": event.topic.rpartition(":")[2],
            "stream": event.originator_id,
            "version": version,
            "raw": received.get("raw"),
            "received_at": received.get("received_at"),
            "signature_verified": received.get("signature_verified"),
            "headers": received.get("headers"),
        } | ({"erased": True} if received.get("erased") else {})
    return {"reference": reference, **row.as_json(), "callback": callback}


# ---- checking a bundle ------------------------------------------------------------------------


def verify(bundle: Mapping[str, Any]) -> chain.Checked:
    """The chain (evidence.chain.check), then every claim derived again and compared, naming
    the first field that differs."""
    checked = chain.check(bundle)
    _within_window(bundle)
    derived = derive(bundle)
    for part in ("subject", "events", "consent_facts", "messages"):
        compare(part, bundle[part], derived[part])
    return checked


def _within_window(bundle: Mapping[str, Any]) -> None:
    """Every time shown lies in the stated window (else either was edited)."""
    since, until = bundle["subject"].get("since"), bundle["subject"].get("until")
    times = [
        (f"consent_facts[{i}]", f["event_time"]) for i, f in enumerate(bundle["consent_facts"])
    ]
    times += [
        (f"messages[{m}].timeline[{r}]", report["event_time"])
        for m, message in enumerate(bundle["messages"])
        for r, report in enumerate(message["timeline"])
    ]
    for where, at in times:
        if (since is not None and at < since) or (until is not None and at >= until):
            raise Mismatch(f"{where}.event_time: outside the bundle's window (subject.since "
                           f"{since}, subject.until {until})")  # fmt: skip


def compare(path: str, shown: Any, derived: Any) -> None:
    if isinstance(derived, dict):
        if not isinstance(shown, dict):
            raise Mismatch(f"{path}: the bundle shows {_brief(shown)}, not an object")
        for key in [*derived, *(k for k in shown if k not in derived)]:
            if key not in derived:
                raise Mismatch(f"{path}.{key}: its sealed events give no such field")
            if key not in shown:
                raise Mismatch(
                    f"{path}.{key}: missing (its sealed events give {_brief(derived[key])})"
                )
            compare(f"{path}.{key}", shown[key], derived[key])
    elif isinstance(derived, list):
        if not isinstance(shown, list):
            raise Mismatch(f"{path}: the bundle shows {_brief(shown)}, not a list")
        for i, (one, other) in enumerate(zip(shown, derived, strict=False)):
            compare(f"{path}[{i}]", one, other)
        if len(shown) != len(derived):
            raise Mismatch(f"{path}: the bundle shows {len(shown)} entries, its sealed events "
                           f"give {len(derived)}")  # fmt: skip
    elif shown != derived or type(shown) is not type(derived):
        at = 0
        if isinstance(shown, str) and isinstance(derived, str):
            # A long text (a raw body): shown from its first difference.
            pairs = zip(shown, derived, strict=False)
            same = next((i for i, (a, b) in enumerate(pairs) if a != b), len(shown))
            at = max(same - 10, 0)
        raise Mismatch(f"{path}: the bundle shows {_brief(shown, at)}, its sealed events give "
                       f"{_brief(derived, at)}")  # fmt: skip


def _brief(value: Any, start: int = 0) -> str:
    text = repr(value[start:] if start else value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"...{text}" if start else text
