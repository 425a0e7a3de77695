"""Phone/IVR surveys, e-mail survey replies, chat transcripts and social mentions -> raw submissions.

Pure parsing functions (record or message -> list of submissions; :class:`ChannelError` for a record that cannot
be read), file readers that yield ``(origin, submissions | error)``, and :func:`emit_outcome`, which hands one
outcome to the emit path (adapters/emit.py); ``satpulse channel KIND FILE...`` and the IMAP poller publish them
(docs/adapters.md#channel-files).

- IVR: post-call survey records (CSV or JSON / JSONL) with DTMF answers: the CSAT key press 1-5 (``*``, ``#``,
  empty or ``T`` = skipped), an optional "was your issue resolved" key (1 yes, 2 no), and call times.
- E-mail: RFC 5322 messages (.eml): the rating from a survey link (``?rating=4``), or a "rating: 4", "4/5",
  "4 out of 5" line in the reply; the comment is the reply text above the quoted part; the thread
  (In-Reply-To / References, or a ``[#1234]`` / ``Ticket 1234`` subject tag) gives the ticket id.
- Chat transcripts (JSON): created, first agent response after the customer's first message, end of chat
  (resolved / closed), and the rating given in the chat widget.
- Social mentions (JSONL, text and no score): feedback with the text as comment and **no rating**; the text is
  scored into ``sentiment`` (-1..1), ``sentiment_label`` and ``sentiment_model``, never into a rating, so it never
  enters CSAT: Chinese text with SnowNLP, anything else with VADER (both models ship inside their packages).
"""

from __future__ import annotations

import csv
import email
import email.policy
import json
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from email.message import EmailMessage
from email.utils import parseaddr, parsedate_to_datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlparse

from adapters.emit import Emitter
from satpulse.deadletter import Origin

Submission = dict[str, Any]


class ChannelError(ValueError):
    """A record that cannot be turned into submissions; the message says why."""


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _drop_empty(fields: Mapping[str, Any]) -> Submission:
    return {k: v for k, v in fields.items() if v is not None and v != ""}


# --- IVR ------------------------------------------------------------------------------------------------------

_SKIPPED_DTMF = {"", "*", "#", "t", "timeout", "none", "-"}


def parse_ivr_record(record: Mapping[str, Any], source: str = "ivr") -> list[Submission]:
    """One post-call survey record. Fields: ``call_id`` (required), ``started_at`` (required), ``answered_at``,
    ``ended_at``, ``agent``, ``queue`` (team), ``caller`` (customer id), ``category``, ``csat_dtmf`` (1-5),
    ``resolved_dtmf`` (1 yes / 2 no), ``survey_at`` (default ``ended_at``). A pressed key outside the scale is
    passed on as it is: the cleaner dead-letters it as ``invalid_rating``."""
    call_id = _text(record.get("call_id"))
    started = _text(record.get("started_at"))
    if call_id is None or started is None:
        raise ChannelError("call_id and started_at are required")
    common = {"source": source, "channel": "phone", "ticket_id": call_id, "agent": _text(record.get("agent")),
              "team": _text(record.get("queue")), "customer_id": _text(record.get("caller")),
              "category": _text(record.get("category"))}
    out = [_drop_empty({"kind": "ticket", "event_id": f"{source}:{call_id}:created", "status": "created",
                        "event_time": started, **common})]
    answered, ended = _text(record.get("answered_at")), _text(record.get("ended_at"))
    if answered:
        out.append(_drop_empty({"kind": "ticket", "event_id": f"{source}:{call_id}:first_response",
                                "status": "first_response", "event_time": answered, **common}))
    resolved_key = (_text(record.get("resolved_dtmf")) or "").lower()
    if ended:
        status = "resolved" if resolved_key == "1" else "closed"
        out.append(_drop_empty({"kind": "ticket", "event_id": f"{source}:{call_id}:{status}", "status": status,
                                "event_time": ended, **common}))
    key = (_text(record.get("csat_dtmf")) or "").lower()
    if key not in _SKIPPED_DTMF:
        when = _text(record.get("survey_at")) or ended or answered or started
        out.append(_drop_empty({"kind": "feedback", "event_id": f"{source}:{call_id}:csat", "event_time": when,
                                "rating_value": key, "rating_scale": "1-5", "rating_id": f"{source}:{call_id}:csat",
                                "comment": _text(record.get("comment")), **common}))
    return out


# --- e-mail ---------------------------------------------------------------------------------------------------

_RATING_LINE = re.compile(r"(?im)^\s*(?:rating|score|csat)\s*[:=]\s*([1-5])\b|^\s*([1-5])\s*(?:/\s*5|out of 5)\b")
_TICKET_IN_SUBJECT = re.compile(r"(?i)(?:\[#|ticket\s*#?|case\s*#?|#)(\d{2,})")
_TICKET_IN_ID = re.compile(r"(?i)(?:ticket|case)[-_.]?(\d+)")
_QUOTE_START = re.compile(r"(?m)^(?:On .{0,200}wrote:|-{2,}\s*Original Message\s*-{2,}|>)")
_LINK = re.compile(r"""https?://[^\s"'<>]+""")


def _body_text(message: EmailMessage) -> tuple[str, str]:
    """(plain text, html) of the message, either may be empty."""
    plain = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    return (plain.get_content() if plain is not None else "", html.get_content() if html is not None else "")


def _rating_from_links(text: str) -> str | None:
    for url in _LINK.findall(text):
        query = parse_qs(urlparse(url.replace("&amp;", "&")).query)
        for name in ("rating", "score", "csat"):
            if query.get(name):
                return str(query[name][0])
    return None


def parse_email(raw: bytes, source: str = "email") -> list[Submission]:
    """A survey reply (RFC 5322). No rating and no reply text: ChannelError."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    message_id = _text(message.get("Message-ID"))
    date = message.get("Date")
    if message_id is None or date is None:
        raise ChannelError("Message-ID and Date are required")
    try:
        when = parsedate_to_datetime(str(date))
    except (TypeError, ValueError):
        raise ChannelError(f"Date {date!r} is not an RFC 5322 date") from None
    plain, html = _body_text(message)
    quote = _QUOTE_START.search(plain)
    reply = (plain[: quote.start()] if quote else plain).strip()
    rating = _rating_from_links(reply) or _rating_from_links(plain or html)
    line = _RATING_LINE.search(reply)
    if rating is None and line is not None:
        rating = line.group(1) or line.group(2)
    comment_lines = [" ".join(_LINK.sub(" ", ln).split()) for ln in reply.splitlines() if not _RATING_LINE.match(ln)]
    comment = "\n".join(ln for ln in comment_lines if ln).strip() or None
    if rating is None and comment is None:
        raise ChannelError("neither a rating nor reply text found")
    thread = [t for t in re.findall(r"<[^>]+>", f"{message.get('References', '')} {message.get('In-Reply-To', '')}")]
    subject = str(message.get("Subject", ""))
    ticket = None
    for candidate in (subject, *thread):
        match = (_TICKET_IN_SUBJECT if candidate is subject else _TICKET_IN_ID).search(candidate)
        if match:
            ticket = match.group(1)
            break
    if ticket is None:
        ticket = thread[0].strip("<>") if thread else message_id.strip("<>")
    version = int(when.timestamp())
    _, sender = parseaddr(str(message.get("From", "")))
    return [_drop_empty({
        "kind": "feedback", "event_id": f"{source}:{message_id.strip('<>')}", "source": source, "channel": "email",
        "event_time": when.isoformat(), "ticket_id": ticket, "customer_id": sender or None,
        "rating_value": rating, "rating_scale": "1-5" if rating is not None else None,
        "rating_id": f"{source}:{ticket}" if rating is not None else None,
        "rating_version": version if rating is not None else None, "comment": comment})]


# --- chat transcripts -----------------------------------------------------------------------------------------

def parse_chat_transcript(transcript: Mapping[str, Any], source: str = "chat") -> list[Submission]:
    """``{id, started_at, ended_at, resolved (bool), agent, team, customer, messages: [{from: customer|agent,
    at, text}], rating: {value, scale (default 1-5), at, comment}}``."""
    chat_id = _text(transcript.get("id"))
    started = transcript.get("started_at")
    if chat_id is None or started in (None, ""):
        raise ChannelError("id and started_at are required")
    messages = transcript.get("messages") or []
    if not isinstance(messages, list):
        raise ChannelError("messages must be a list")
    common = {"source": source, "channel": str(transcript.get("channel") or "chat"), "ticket_id": chat_id,
              "agent": _text(transcript.get("agent")), "team": _text(transcript.get("team")),
              "customer_id": _text(transcript.get("customer")), "category": _text(transcript.get("category"))}
    out = [_drop_empty({"kind": "ticket", "event_id": f"{source}:{chat_id}:created", "status": "created",
                        "event_time": started, **common})]
    customer_spoke = False
    for message in messages:
        if not isinstance(message, dict):
            raise ChannelError("messages[] must be objects")
        author = str(message.get("from", "")).lower()
        if author == "customer":
            customer_spoke = True
        elif author == "agent" and customer_spoke and message.get("at") not in (None, ""):
            out.append(_drop_empty({"kind": "ticket", "event_id": f"{source}:{chat_id}:first_response",
                                    "status": "first_response", "event_time": message["at"], **common}))
            break
    ended = transcript.get("ended_at")
    if ended not in (None, ""):
        status = "resolved" if transcript.get("resolved") else "closed"
        out.append(_drop_empty({"kind": "ticket", "event_id": f"{source}:{chat_id}:{status}", "status": status,
                                "event_time": ended, **common}))
    rating = transcript.get("rating")
    if isinstance(rating, dict) and rating.get("value") not in (None, ""):
        out.append(_drop_empty({
            "kind": "feedback", "event_id": f"{source}:{chat_id}:rating", "event_time": rating.get("at") or ended,
            "rating_value": rating["value"], "rating_scale": str(rating.get("scale") or "1-5"),
            "rating_id": f"{source}:{chat_id}", "comment": _text(rating.get("comment")), **common}))
    return out


# --- social mentions ------------------------------------------------------------------------------------------

class Sentiment(NamedTuple):
    score: float  # -1.0 (negative) .. 1.0 (positive)
    label: str  # positive (score >= 0.05), negative (<= -0.05), neutral
    model: str  # vader | snownlp


# CJK Unified Ideographs (with extension A and the compatibility block); kana marks Japanese, not Chinese
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_KANA = re.compile(r"[\u3040-\u30ff]")
CHINESE_MIN_SHARE = 0.3


def is_chinese(text: str) -> bool:
    """Han characters make up at least 30 % of the letters and there is no kana (Japanese mixes both)."""
    letters = sum(1 for char in text if char.isalpha())
    return bool(letters) and not _KANA.search(text) and len(_HAN.findall(text)) >= CHINESE_MIN_SHARE * letters


@lru_cache(maxsize=1)
def _vader() -> Any:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def _snownlp_positive(text: str) -> float:
    """SnowNLP's probability that the text is positive (0..1). Its first call loads the model shipped in the
    package (about 2 s)."""
    from snownlp import SnowNLP

    return float(SnowNLP(text).sentiments)


def sentiment(text: str) -> Sentiment:
    """Chinese text (:func:`is_chinese`): SnowNLP's positive probability p as ``2p - 1``; anything else: VADER's
    compound score. Both lie in -1..1 and get the same labels (>= 0.05 positive, <= -0.05 negative)."""
    if is_chinese(text):
        score, model = 2.0 * _snownlp_positive(text) - 1.0, "snownlp"
    else:
        score, model = float(_vader().polarity_scores(text)["compound"]), "vader"
    score = min(1.0, max(-1.0, score))
    label = "positive" if score >= 0.05 else "negative" if score <= -0.05 else "neutral"
    return Sentiment(score, label, model)


def parse_social_mention(mention: Mapping[str, Any], source: str = "social") -> list[Submission]:
    """``{id, platform, author, text, created_at, ticket_id?, product?}`` -> one feedback with comment and
    sentiment, without a rating."""
    mention_id, text = _text(mention.get("id")), _text(mention.get("text"))
    created = mention.get("created_at")
    if mention_id is None or text is None or created in (None, ""):
        raise ChannelError("id, text and created_at are required")
    scored = sentiment(text)
    platform = _text(mention.get("platform")) or "social"
    return [_drop_empty({
        "kind": "feedback", "event_id": f"{source}:{platform}:{mention_id}", "source": f"{source}:{platform}",
        "channel": "social", "event_time": created, "ticket_id": _text(mention.get("ticket_id")),
        "customer_id": _text(mention.get("author")), "product": _text(mention.get("product")), "comment": text,
        "sentiment": round(scored.score, 4), "sentiment_label": scored.label, "sentiment_model": scored.model})]


# --- files ----------------------------------------------------------------------------------------------------

Outcome = tuple[str, list[Submission] | None, str | None, bytes]  # origin, submissions, error, original bytes


def _objects(path: Path) -> Iterator[tuple[str, object, bytes]]:
    """(origin, object, original bytes) for each record of a CSV, JSON (list or object) or JSONL file."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            for number, row in enumerate(csv.DictReader(f), start=1):
                yield f"{path}:{number}", row, json.dumps(row).encode()
        return
    data = path.read_bytes()
    if suffix == ".json":
        try:
            value = json.loads(data)
        except ValueError as exc:
            yield f"{path}", exc, data
            return
        for number, item in enumerate(value if isinstance(value, list) else [value], start=1):
            yield f"{path}:{number}", item, json.dumps(item).encode()
        return
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield f"{path}:{number}", json.loads(line), line
        except ValueError as exc:
            yield f"{path}:{number}", exc, line


PARSERS = {"ivr": parse_ivr_record, "chat": parse_chat_transcript, "social": parse_social_mention}


def email_outcome(origin: str, raw: bytes, source: str = "email") -> Outcome:
    """One RFC 5322 message (an .eml file, a message fetched over IMAP) as an outcome."""
    try:
        return origin, parse_email(raw, source), None, raw
    except ChannelError as exc:
        return origin, None, str(exc), raw


def read_channel_file(kind: str, path: Path) -> Iterator[Outcome]:
    """Every record of one file of ``kind`` (ivr, chat, social: CSV/JSON/JSONL; email: one .eml file)."""
    if kind == "email":
        yield email_outcome(str(path), path.read_bytes())
        return
    parse = PARSERS[kind]
    for origin, obj, original in _objects(path):
        if isinstance(obj, Exception):
            yield origin, None, f"not JSON: {obj}", original
            continue
        if not isinstance(obj, dict):
            yield origin, None, f"expected an object, got {type(obj).__name__}", original
            continue
        try:
            yield origin, parse(obj), None, original
        except ChannelError as exc:
            yield origin, None, str(exc), original


def emit_outcome(outcome: Outcome, emitter: Emitter, counts: Counter[str]) -> None:
    """Hand one record's outcome to ``emitter``: its submissions to the ingest topic or, when the record could not
    be read, a dead letter with reason ``unparseable_payload`` and the record's origin. Counts ``records``,
    ``events`` (published) and ``rejected`` (dead letters) in ``counts``. What the emitter's ``send`` raises
    passes through (:class:`adapters.emit.Emitter`)."""
    origin_ref, submissions, error, original = outcome
    origin = Origin(ref=origin_ref)
    counts["records"] += 1
    emitter.received()
    if submissions is None:
        emitter.dead_letter("unparseable_payload", error or "", original, origin)
        counts["rejected"] += 1
        return
    for submission in submissions:
        if emitter.submission(submission, origin, original) is None:
            counts["events"] += 1
        else:
            counts["rejected"] += 1
