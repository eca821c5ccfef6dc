"""The rules that make current state independent of arrival order. Pure functions, no I/O.

Every projected row is a function of a *set* of facts and every merge below is a join
(commutative, associative, idempotent), so any permutation or duplication of the same callbacks
yields the same rows. Times are fixed-width ISO-8601 UTC text: text order is time order."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from domain import followup, ids
from domain import keywords as keywords_module
from domain.identity import normalise
from domain.keywords import DEFAULT_KEYWORDS, NOTHING, Keywords, Reading

__all__ = ["DEFAULT_KEYWORDS", "NOTHING", "Keywords", "Reading"]

SUBMITTED = "SUBMITTED"

# A late QUEUED_ON_CHANNEL never moves a READ message back; evidence of delivery (on a fallback
# channel after SWITCHING_CHANNEL, say) beats a failure.
STATUS_RANK: dict[str, int] = {
    SUBMITTED: 0,  # a MESSAGE_SUBMIT notification: handed to a channel
    "QUEUED_ON_CHANNEL": 1,
    "SWITCHING_CHANNEL": 2,
    "FAILED": 3,
    "DELIVERED": 4,
    "READ": 5,
}

OPTED_IN = "OPTED_IN"
OPTED_OUT = "OPTED_OUT"


def iso(value: str) -> str:
    """Any ISO-8601 time as 'YYYY-MM-DDTHH:MM:SS.ffffffZ' in UTC."""
    if len(value) == 32 and value.endswith("+00:00") and value[19] == ".":
        return value[:26] + "Z"  # what the event store holds: no parsing needed
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    utc = parsed.astimezone(UTC)
    # The year by hand: strftime writes years below 1000 with fewer digits, out of text order.
    return f"{utc.year:04d}-{utc:%m-%dT%H:%M:%S.%f}Z"


def stored_time(value: Any) -> str | None:
    """A time as the library stores it ({"_type_": "datetime_iso", "_data_": ...}) or text."""
    if isinstance(value, dict):
        value = value.get("_data_")
    return iso(value) if isinstance(value, str) and value else None


def effective_time(state: Mapping[str, Any]) -> str:
    """The provider's event_time, else its accepted_time (accept_time), else our arrival."""
    for key in ("event_time", "accepted_time", "accept_time"):
        found = stored_time(state.get(key))
        if found:
            return found
    return iso(state["callback"]["received_at"])


# ---- messages -------------------------------------------------------------------------------


def report_fact(state: Mapping[str, Any], source_ref: str) -> dict[str, Any]:
    """The part of a DeliveryReported event the message projections need."""
    reason = state.get("reason") or {}
    return {
        "status": state["status"],
        "channel": state.get("channel"),
        "identity": state.get("identity"),
        "at": effective_time(state),
        "reason_code": reason.get("code"),
        "reason_sub_code": reason.get("sub_code"),
        "reason_description": reason.get("description"),
        "contact_id": state.get("contact_id"),
        "conversation_id": state.get("conversation_id"),
        "metadata": state.get("metadata"),
        "app_id": state.get("app_id"),
        "source_ref": source_ref,
    }


def _order(fact: Mapping[str, Any]) -> tuple[str, str, str]:
    return (fact["at"], fact["channel"] or "", fact["status"])


def merge_reports(
    known: Iterable[Mapping[str, Any]], new: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The union of two report sets, one per (channel, status), in event-time order. Where the
    same report appears twice the earlier wins, so the result is independent of arrival."""
    by_key: dict[tuple[str, str], dict[str, Any]] = {}
    for fact in [*known, *new]:
        key = (fact["channel"] or "", fact["status"])
        if key not in by_key or _order(fact) < _order(by_key[key]):
            by_key[key] = dict(fact)
    return sorted(by_key.values(), key=_order)


def _firsts(reports: list[dict[str, Any]]) -> tuple[dict[str, str], dict[str, Any]]:
    """The first time of each status, and the first non-empty value of each carried field."""
    first_at: dict[str, str] = {}
    values: dict[str, Any] = {}
    for r in reports:
        first_at.setdefault(r["status"], r["at"])
        for field in CARRIED:
            if field not in values and r.get(field):
                values[field] = r[field]
    return first_at, values


CARRIED = ("app_id", "conversation_id", "contact_id", "metadata")


def submission_fact(state: Mapping[str, Any], source_ref: str) -> dict[str, Any]:
    """A Submitted event (or a MESSAGE_SUBMIT body's fields) as a report of status SUBMITTED."""
    return report_fact({**state, "status": SUBMITTED, "reason": None}, source_ref)


def message_row(
    project_id: str,
    message_id: str,
    reports: list[dict[str, Any]],
    next_actions: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The current state of one message from its reports (sorted, as merge_reports gives)."""
    first_at, carried = _firsts(reports)
    ranked = [r for r in reports if r["status"] in STATUS_RANK]
    top = max(ranked, key=lambda r: (STATUS_RANK[r["status"]], *_order(r)), default=None)
    failures = [r for r in reports if r["status"] in ("FAILED", "SWITCHING_CHANNEL")]
    failure = max(failures, key=lambda r: (r["status"] == "FAILED", *_order(r)), default=None)
    delivered_on = {r["channel"] for r in reports if r["status"] in ("DELIVERED", "READ")}
    contradicted = sorted(
        {r["channel"] or "" for r in reports if r["status"] == "FAILED"} & delivered_on
    )
    status = top["status"] if top else reports[-1]["status"]
    action, _ = followup.next_action(
        status,
        failure["reason_code"] if failure else None,
        failure["reason_sub_code"] if failure else None,
        next_actions,
    )
    return {
        "project_id": project_id,
        "message_id": message_id,
        "app_id": carried.get("app_id"),
        "conversation_id": carried.get("conversation_id"),
        "contact_id": carried.get("contact_id"),
        # Unknown future statuses are kept in the timeline but do not rank.
        "status": status,
        "channel": (top or reports[-1])["channel"],
        "queued_at": first_at.get("QUEUED_ON_CHANNEL"),
        "delivered_at": first_at.get("DELIVERED"),
        "read_at": first_at.get("READ"),
        "submitted_at": first_at.get(SUBMITTED),
        "failed_at": first_at.get("FAILED"),
        "reason_code": failure["reason_code"] if failure else None,
        "reason_sub_code": failure["reason_sub_code"] if failure else None,
        "reason_description": failure["reason_description"] if failure else None,
        "switched_from": ",".join(
            sorted({r["channel"] or "" for r in reports if r["status"] == "SWITCHING_CHANNEL"})
        )
        or None,
        "metadata": carried.get("metadata"),
        "first_event_time": reports[0]["at"],
        "last_event_time": reports[-1]["at"],
        "report_count": len(reports),
        # None for "none": most messages need nothing, and an index then holds only the rest.
        "next_action": None if action == followup.NONE else action,
        "anomaly": (
            "FAILED and delivered on the same channel: " + ",".join(contradicted)
            if contradicted
            else None
        ),
    }


# ---- the stored timeline (message_status.reports) --------------------------------------------

# A stored report leaves out what its row says already: a carried field equal to the row's
# column, null reason fields, a source_ref naming its own stream and natural key, a channel or
# identity equal to the report before it (the first: the row's channel and only identity), and
# a time its row's column for the status holds (STATUS_TIME); a known status is one letter
# under CODE_KEY (else the name in full under "status"). `expanded_reports` puts them back.
REASON_FIELDS = ("reason_code", "reason_sub_code", "reason_description")
REPEATED = ("channel", "identity")
CODE_KEY = "s"
STATUS_CODE = {
    "QUEUED_ON_CHANNEL": "Q",
    "DELIVERED": "D",
    "READ": "R",
    "FAILED": "F",
    "SWITCHING_CHANNEL": "W",
    SUBMITTED: "S",
}
CODE_STATUS = {code: status for status, code in STATUS_CODE.items()}
STATUS_TIME = {
    "QUEUED_ON_CHANNEL": "queued_at",
    "DELIVERED": "delivered_at",
    "READ": "read_at",
    SUBMITTED: "submitted_at",
    "FAILED": "failed_at",
}
# What a reader of the stored timeline selects with it: the columns `expanded_reports` reads.
TIMELINE_COLUMNS = (
    "project_id",
    "message_id",
    "reports",
    "channel",
    "identities_shown",
    *CARRIED,
    *STATUS_TIME.values(),
)


def _stream_of(row: Mapping[str, Any]) -> str:
    return str(ids.message_id(row["project_id"], row["message_id"]))


def _own_ref(stream: str, fact: Mapping[str, Any]) -> str:
    return f"{stream}/{fact['channel'] or ''}|{fact['status']}"


def only_identity(row: Mapping[str, Any]) -> str | None:
    """The one identity the row's identities_shown names (None: none, or several)."""
    text = row["identities_shown"]
    if not text:
        return None
    names = orjson.loads(text)
    return next(iter(names)) if isinstance(names, dict) and len(names) == 1 else None


def compact_reports(
    row: Mapping[str, Any], reports: list[dict[str, Any]], stream: str | None = None
) -> str:
    """The JSON stored in message_status.reports for a row (its identities_shown set) and its
    full reports. `stream`: the message's stream id, when the caller has it."""
    # A reference is left out when a reader can make it again: the stream is the one the row's
    # names give (domain.ids).
    derived = _stream_of(row)
    stream = stream or derived
    derivable = stream == derived
    previous: Mapping[str, Any] = {"channel": row["channel"], "identity": only_identity(row)}
    out: list[dict[str, Any]] = []
    for fact in reports:
        status = fact["status"]
        code = STATUS_CODE.get(status)
        kept: dict[str, Any] = {CODE_KEY: code} if code else {"status": status}
        if row.get(STATUS_TIME.get(status, "")) != fact["at"]:
            kept["at"] = fact["at"]
        for field in REPEATED:
            if fact[field] != previous[field]:
                kept[field] = fact[field]
        previous = fact
        for field in REASON_FIELDS:
            if fact[field] is not None:
                kept[field] = fact[field]
        for field in CARRIED:
            if fact[field] != row[field]:
                kept[field] = fact[field]
        if not derivable or fact["source_ref"] != _own_ref(stream, fact):
            kept["source_ref"] = fact["source_ref"]
        out.append(kept)
    if all(report.keys() == {CODE_KEY} for report in out):
        # Nothing but known statuses: their letters as one JSON string ("QDR": most messages).
        return orjson.dumps("".join(r[CODE_KEY] for r in out)).decode()
    return orjson.dumps(out).decode()


def stored_reports(text: str) -> list[dict[str, Any]]:
    """A row's `reports` as stored: a JSON list, or a string of letters (known statuses)."""
    stored = orjson.loads(text)
    if isinstance(stored, str):
        return [{CODE_KEY: letter} for letter in stored]
    return list(stored)


def expanded_reports(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The full reports of a message_status row (its `reports` and the columns they lean on)."""
    stored = stored_reports(row["reports"])
    stream = _stream_of(row)
    first = {"channel": row["channel"], "identity": None}
    if stored and "identity" not in stored[0]:  # left out: the row's only identity
        first["identity"] = only_identity(row)
    out: list[dict[str, Any]] = []
    for kept in stored:
        status = CODE_STATUS[kept[CODE_KEY]] if CODE_KEY in kept else kept["status"]
        fact: dict[str, Any] = {"status": status}
        previous = out[-1] if out else first
        for field in REPEATED:
            fact[field] = kept[field] if field in kept else previous[field]
        if "at" in kept:
            fact["at"] = kept["at"]
        else:
            fact["at"] = row[STATUS_TIME[status]] if status in STATUS_TIME else None
        for field in REASON_FIELDS:
            fact[field] = kept.get(field)
        for field in CARRIED:
            fact[field] = kept[field] if field in kept else row[field]
        fact["source_ref"] = kept.get("source_ref") or _own_ref(stream, fact)
        out.append(fact)
    return out


def read_confirmation(
    project_id: str, message_id: str, reports: list[dict[str, Any]]
) -> dict[str, Any] | None:
    reads = [r for r in reports if r["status"] == "READ"]
    if not reads:
        return None
    first = min(reads, key=_order)
    return {
        "project_id": project_id,
        "message_id": message_id,
        "contact_id": next((r["contact_id"] for r in reports if r.get("contact_id")), None),
        "channel": first["channel"],
        "identity": first["identity"],
        "read_at": first["at"],
    }


# ---- consent --------------------------------------------------------------------------------


# A HELP keyword is history without effect: it changes no state.
KEYWORD_EFFECT = {keywords_module.OPT_OUT: OPTED_OUT, keywords_module.OPT_IN: OPTED_IN}


def consent_fact(
    project_id: str,
    contact_key: str,
    kind: str,
    state: Mapping[str, Any],
    source_ref: str,
    reading: Reading = NOTHING,
    name: str | None = None,
) -> dict[str, Any] | None:
    """A consent_history row for a ConsentReported or InboundMessageReceived event (with what
    `Keywords.read` made of its text), or None when the inbound message is not a keyword.
    `name`: the identity's name in the read tables, when not the normalised identity."""
    if name is None:
        name = normalise(state["channel"], state["identity"]) if state.get("identity") else ""
    common = {
        "project_id": project_id,
        "contact_id": contact_key,
        "channel": state["channel"],
        # "" for a notification naming no number: consent for the contact's whole channel.
        "identity": name,
        "event_time": effective_time(state),
        "accepted_time": stored_time(state.get("accepted_time")),
        "source_ref": source_ref,
    }
    if kind == "ConsentReported":
        status = state["status"]
        kind_of_effect = OPTED_IN if status.startswith("OPT_IN") else OPTED_OUT
        return {
            **common,
            "fact": status,
            "effect": kind_of_effect if status.endswith("_SUCCEEDED") else None,
            "source_kind": state["kind"],
            "keyword": None,
            "request_id": state.get("request_id"),
            "inbound_message_id": None,
        }
    if reading.action is None:
        return None
    return {
        **common,
        "fact": f"KEYWORD_{reading.action}",
        "effect": KEYWORD_EFFECT.get(reading.action),
        "source_kind": "KEYWORD",
        "keyword": reading.keyword,
        "request_id": None,
        "inbound_message_id": state["message_id"],
    }


def consent_row(fact: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "project_id": fact["project_id"],
        "contact_id": fact["contact_id"],
        "channel": fact["channel"],
        "identity": fact["identity"],
        "identity_shown": fact.get("identity_shown"),
        "state": fact["effect"],
        "since": fact["event_time"],
        "source_kind": fact["source_kind"],
        "source_ref": fact["source_ref"],
        "is_opt_out": int(fact["effect"] == OPTED_OUT),
    }


def merge_consent(
    current: Mapping[str, Any] | None, candidate: Mapping[str, Any]
) -> Mapping[str, Any]:
    """The row that stands after `candidate` meets `current`: the latest event_time wins, then
    an opt-out, then the source's natural key, so even a full tie is decided alike."""
    if current is None:
        return candidate
    return candidate if _deciding(candidate) > _deciding(current) else current


def _deciding(row: Mapping[str, Any]) -> tuple[str, bool, str]:
    return (row["since"], bool(row["is_opt_out"]), row["source_ref"])


def merged_times(merges: Mapping[tuple[str, str], str]) -> dict[tuple[str, str], str]:
    """For merges (two contacts -> the time a merge named both), every two contacts they join,
    each way, with the time they became one: the earliest at which a chain of merges joined
    them, each chain counting from its latest merge. Independent of the merges' order."""
    group: dict[str, set[str]] = {}
    times: dict[tuple[str, str], str] = {}
    for (a, b), at in sorted(merges.items(), key=lambda item: (item[1], item[0])):
        first, second = group.setdefault(a, {a}), group.setdefault(b, {b})
        if first is second:
            continue
        for x in first:
            for y in second:
                times[x, y] = times[y, x] = at
        joined = first | second
        for contact in joined:
            group[contact] = joined
    return times
