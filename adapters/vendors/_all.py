"""Helpdesk webhook payloads -> raw submissions (docs/ingest-format.md). Pure functions, no I/O.

One function per vendor: ``parse_<vendor>(payload, event=None) -> list[submission]``. A payload the vendor sends
but that carries nothing satpulse measures (a ping, a tag change) gives an empty list; a payload that cannot be
what the vendor sends raises :class:`PayloadError` with the reason (optional parts of the wrong JSON type are
ignored). Any other exception would be a bug here; the service answers it like a PayloadError (400). Field values
are passed on as the vendor writes them (timestamps as ISO text or epoch seconds); the cleaner validates and
normalises them. Event ids are derived from the vendor's own ids, so a vendor's retry produces the same ids and
is deduplicated downstream.

Payload shapes follow the vendors' documentation; the golden payloads in tests/fixtures/webhooks/ are built from
the examples there (tests/fixtures/webhooks/README.md cites each page).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

Submission = dict[str, Any]


class PayloadError(ValueError):
    """The body is not a payload this vendor sends; the message says why (answered with HTTP 400)."""


def _obj(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PayloadError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _opt_obj(parent: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = parent.get(name)
    return value if isinstance(value, dict) else {}


def _opt_list(parent: Mapping[str, Any], name: str) -> list[Any]:
    value = parent.get(name)
    return value if isinstance(value, list) else []


def _required(parent: Mapping[str, Any], name: str, what: str) -> Any:
    value = parent.get(name)
    if value is None or value == "":
        raise PayloadError(f"{what}.{name} is required")
    return value


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _version(*candidates: object) -> int:
    """Edit version of a rating: the epoch seconds of its last modification (newest wins downstream)."""
    for value in candidates:
        if value is None or value == "":
            continue
        if isinstance(value, int | float) and not isinstance(value, bool):
            return int(value if value < 1e11 else value / 1000)
        try:
            parsed = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            continue
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return int(parsed.timestamp())
    return 0


def _submission(**fields: Any) -> Submission:
    """Drop absent fields so that the submission stays small and the cleaner sees 'absent', not 'null'."""
    return {k: v for k, v in fields.items() if v is not None and v != ""}


def _secondary_ratings(answers: list[tuple[str, object, str]]) -> list[dict[str, Any]] | None:
    """Answers to a survey's questions other than its CSAT question, as ``secondary_ratings`` entries
    ``{question_id, rating_value, rating_scale}`` (None when there are none).

    They ride on the CSAT submission and are never a rating of their own: the cleaner normalises them into the
    clean event's ``secondary_answers``, which no window counts (docs/adapters.md, "Secondary survey
    questions")."""
    out = [{"question_id": q, "rating_value": v, "rating_scale": scale} for q, v, scale in answers if v is not None]
    return out or None


# --- Zendesk ------------------------------------------------------------------------------------------------

_ZENDESK_CHANNEL = {"web": "web", "email": "email", "mail": "email", "chat": "chat", "native_messaging": "chat",
                    "voice": "phone", "phone": "phone", "api": "other", "twitter": "social", "facebook": "social",
                    "sms": "sms", "mobile_sdk": "in_app", "whatsapp": "chat", "instagram_dm": "social"}


def _zendesk_rating(rating: Mapping[str, Any], fallback_channel: str | None) -> list[Submission]:
    score = _text(rating.get("score"))
    if score is None:
        raise PayloadError("satisfaction_rating.score is required")
    score = score.lower()
    if score in ("offered", "unoffered"):
        return []  # survey lifecycle, not a rating: nothing to count (docs/adapters.md)
    rating_id = _required(rating, "id", "satisfaction_rating")
    version = _version(rating.get("updated_at"), rating.get("created_at"))
    return [_submission(
        kind="feedback", event_id=f"zendesk:rating:{rating_id}:{version}", source="zendesk",
        channel=fallback_channel or "web", event_time=rating.get("updated_at") or rating.get("created_at"),
        ticket_id=_text(rating.get("ticket_id")), agent=_text(rating.get("assignee_id")),
        team=_text(rating.get("group_id")), customer_id=_text(rating.get("requester_id")),
        rating_value=score, rating_scale="good_bad", rating_id=f"zendesk:{rating_id}", rating_version=version,
        comment=_text(rating.get("comment")), reason=_text(rating.get("reason")))]


# updated CSAT: rating-scale questions offer 2, 3 or 5 options (ratings 1..n); n -> satpulse scale
_ZENDESK_POINTS = {5: "1-5", 3: "1-3"}
_ZENDESK_SUBJECT_CHANNEL = {"ticket": "web", "request": "web", "conversation": "chat"}


def _zendesk_rating_answer(answer: Mapping[str, Any], where: str) -> tuple[object, str]:
    """(rating_value, rating_scale) of a ``rating_scale`` answer. With the question's options (the Show endpoint
    with a locale sends them) the number of options gives the scale: 5 -> ``1-5``, 3 -> ``1-3``, 2 -> good/bad
    from ``rating_category``. Without them the size of the scale is unknown, and ``rating_category`` is read
    as good/bad the way Zendesk reads it for its legacy reports: good -> good, neutral and bad -> bad."""
    rating = answer.get("rating")
    category = (_text(answer.get("rating_category")) or "").lower()
    options = _opt_obj(answer, "question").get("options")
    points = len(options) if isinstance(options, list) else 0
    if points in _ZENDESK_POINTS:
        if rating is None:
            raise PayloadError(f"{where}.rating is required")
        return rating, _ZENDESK_POINTS[points]
    if category not in ("good", "neutral", "bad"):
        raise PayloadError(f"{where}.rating_category must be good, neutral or bad, got {category or None!r}")
    return ("good" if category == "good" else "bad"), "good_bad"


def _zendesk_survey_response(response: Mapping[str, Any]) -> list[Submission]:
    """One CSAT survey response (CSAT Survey Responses API object). The ``rating_scale`` answer whose question
    has ``sub_type: customer_satisfaction`` is the rating; answered ``open_ended`` questions are the comment;
    other rating-scale answers go to ``secondary_ratings``; closed-ended selections (reason option ids) and
    skipped answers are not passed on. A response whose CSAT question was skipped and that has no comment
    gives nothing. Edits keep the rating id; the version is the newest answer's ``updated_at``."""
    response_id = _text(_required(response, "id", "survey_response"))
    answers = response.get("answers")
    if not isinstance(answers, list):
        raise PayloadError("survey_response.answers must be a list")
    csat: dict[str, Any] | None = None
    comments: list[str] = []
    secondary: list[tuple[str, object, str]] = []
    for index, item in enumerate(answers):
        answer = _obj(item, f"survey_response.answers[{index}]")
        kind = answer.get("type")
        question = _opt_obj(answer, "question")
        if kind == "rating_scale":
            if question.get("sub_type", "customer_satisfaction") == "customer_satisfaction" and csat is None:
                csat = answer
            else:
                other = _zendesk_rating_answer(answer, f"survey_response.answers[{index}]")
                secondary.append((str(question.get("id") or question.get("alias")), *other))
        elif kind == "open_ended" and _text(answer.get("value")):
            comments.append(str(answer["value"]).strip())
    comment = "\n".join(comments) or None
    if csat is None and comment is None:
        return []
    subject = next((s for s in _opt_list(response, "subjects") if isinstance(s, dict)), {})
    zrn = str(subject.get("zrn") or next(iter(_opt_list(response, "subject_zrns")), ""))
    zrn_parts = zrn.split(":")  # zen:ticket:99
    subject_type = _text(subject.get("type")) or (zrn_parts[1] if len(zrn_parts) == 3 else "ticket")
    ticket_id = _text(subject.get("id")) or (zrn_parts[2] if len(zrn_parts) == 3 else None)
    times = [a.get("updated_at") or a.get("created_at") for a in answers if isinstance(a, dict)]
    version = max((_version(t) for t in times if t), default=0)
    when = (csat or {}).get("updated_at") or (csat or {}).get("created_at") or max(
        (t for t in times if t), key=_version, default=None)
    value: object = None
    scale: str | None = None
    if csat is not None:
        value, scale = _zendesk_rating_answer(csat, "survey_response.csat_answer")
    return [_submission(
        kind="feedback", event_id=f"zendesk:survey:{response_id}:{version}", source="zendesk",
        channel=_ZENDESK_SUBJECT_CHANNEL.get(str(subject_type).lower(), "web"), event_time=when,
        ticket_id=ticket_id, customer_id=_text(response.get("responder_id")), rating_value=value,
        rating_scale=scale, rating_id=f"zendesk:survey:{response_id}", rating_version=version, comment=comment,
        survey_id=_text(_opt_obj(response, "survey").get("id")) or _text(response.get("survey_id")),
        secondary_ratings=_secondary_ratings(secondary))]


def _zendesk_ticket_status(previous: str | None, current: str) -> str | None:
    current, previous = current.lower(), (previous or "").lower()
    if current == "solved":
        return "resolved"
    if current == "closed":
        return "closed"
    if previous in ("solved", "closed") and current in ("new", "open", "pending", "hold"):
        return "reopened"
    return None


def parse_zendesk(payload: object, event: str | None = None) -> list[Submission]:
    """Zendesk: ticket events (``zen:event-type:ticket.*``, webhook event-type schema), legacy satisfaction
    ratings (CSAT object, as sent by a trigger's JSON body ``{"satisfaction_rating": {...}}`` or an export page
    ``{"satisfaction_ratings": [...]}``; score good/bad, offered/unoffered ignored as survey lifecycle) and CSAT
    survey responses of the updated CSAT (``{"survey_response": {...}}`` or a List Survey Responses page
    ``{"survey_responses": [...]}``; see :func:`_zendesk_survey_response`)."""
    body = _obj(payload, "body")
    if "survey_responses" in body:
        responses = body["survey_responses"]
        if not isinstance(responses, list):
            raise PayloadError("survey_responses must be a list")
        return [s for r in responses for s in _zendesk_survey_response(_obj(r, "survey_responses[]"))]
    if "survey_response" in body:
        return _zendesk_survey_response(_obj(body["survey_response"], "survey_response"))
    if "satisfaction_ratings" in body:
        ratings = body["satisfaction_ratings"]
        if not isinstance(ratings, list):
            raise PayloadError("satisfaction_ratings must be a list")
        return [s for r in ratings for s in _zendesk_rating(_obj(r, "satisfaction_ratings[]"), None)]
    if "satisfaction_rating" in body:
        ticket = _opt_obj(body, "ticket")
        channel = _ZENDESK_CHANNEL.get(str(_opt_obj(ticket, "via").get("channel", "")).lower())
        return _zendesk_rating(_obj(body["satisfaction_rating"], "satisfaction_rating"), channel)
    event_type = _text(body.get("type"))
    if event_type is None or not event_type.startswith("zen:event-type:"):
        raise PayloadError("expected a Zendesk event (type zen:event-type:...) or a satisfaction_rating object")
    if not event_type.startswith("zen:event-type:ticket."):
        return []  # user, organisation, article events: nothing satpulse measures
    detail = _obj(body.get("detail"), "detail")
    change = _opt_obj(body, "event")
    ticket_id = _text(detail.get("id")) or _text(str(body.get("subject", "")).rpartition(":")[2])
    if ticket_id is None:
        raise PayloadError("detail.id (the ticket id) is required")
    name = event_type.removeprefix("zen:event-type:ticket.")
    if name == "created":
        status: str | None = "created"
        when = detail.get("created_at") or body.get("time")
    elif name == "status_changed":
        current, previous = change.get("current"), change.get("previous")
        if isinstance(current, dict):  # some event versions wrap the value: {"current": {"status": "Open"}}
            current = current.get("status")
        if isinstance(previous, dict):
            previous = previous.get("status")
        if _text(current) is None:
            raise PayloadError("event.current (the new status) is required for ticket.status_changed")
        status = _zendesk_ticket_status(_text(previous), str(current))
        when = body.get("time") or detail.get("updated_at")
    else:
        return []
    if status is None:
        return []
    event_id = _required(body, "id", "body")
    return [_submission(
        kind="ticket", event_id=f"zendesk:{event_id}", source="zendesk",
        channel=_ZENDESK_CHANNEL.get(str(_opt_obj(detail, "via").get("channel", "")).lower(), "other"),
        event_time=when, ticket_id=ticket_id, agent=_text(detail.get("assignee_id")),
        team=_text(detail.get("group_id")), customer_id=_text(detail.get("requester_id")), status=status,
        priority=_text(detail.get("priority")))]


# --- Freshdesk ----------------------------------------------------------------------------------------------

_FRESHDESK_SOURCE = {"1": "email", "2": "web", "3": "phone", "7": "chat", "9": "web", "10": "email",
                     "email": "email", "portal": "web", "phone": "phone", "chat": "chat", "feedback widget": "web",
                     "outbound email": "email", "twitter": "social", "facebook": "social", "whatsapp": "chat"}
_FRESHDESK_STATUS = {"resolved": "resolved", "closed": "closed", "4": "resolved", "5": "closed"}


def _freshdesk_rating(rating: Mapping[str, Any]) -> list[Submission]:
    ratings = _obj(rating.get("ratings"), "satisfaction_rating.ratings")
    if "default_question" not in ratings:
        raise PayloadError("satisfaction_rating.ratings.default_question is required")
    rating_id = _required(rating, "id", "satisfaction_rating")
    version = _version(rating.get("updated_at"), rating.get("created_at"))
    extra = _secondary_ratings([(k, v, "freshdesk") for k, v in ratings.items() if k != "default_question"])
    return [_submission(
        kind="feedback", event_id=f"freshdesk:rating:{rating_id}:{version}", source="freshdesk",
        channel=_FRESHDESK_SOURCE.get(str(rating.get("source", "")).lower(), "email"),
        event_time=rating.get("updated_at") or rating.get("created_at"), ticket_id=_text(rating.get("ticket_id")),
        agent=_text(rating.get("agent_id")), team=_text(rating.get("group_id")),
        customer_id=_text(rating.get("user_id")), rating_value=ratings["default_question"],
        rating_scale="freshdesk", rating_id=f"freshdesk:{rating_id}", rating_version=version,
        comment=_text(rating.get("feedback")), survey_id=_text(rating.get("survey_id")),
        secondary_ratings=extra)]


def parse_freshdesk(payload: object, event: str | None = None) -> list[Submission]:
    """Freshdesk: satisfaction ratings (API object ``{id, ticket_id, ratings: {default_question: 103, question_2:
    -102}, feedback, ...}``, bare, wrapped in ``satisfaction_rating`` or a list) and ticket automation webhooks
    (``{"freshdesk_webhook": {ticket_id, ticket_status, ...}}``, the body docs/adapters.md recommends).
    ``default_question`` is the CSAT rating; every other question of the survey goes to ``secondary_ratings``
    on the same submission (scale ``freshdesk``), never into a rating of its own."""
    if isinstance(payload, list):
        return [s for r in payload for s in _freshdesk_rating(_obj(r, "satisfaction_rating"))]
    body = _obj(payload, "body")
    if "satisfaction_rating" in body:
        return _freshdesk_rating(_obj(body["satisfaction_rating"], "satisfaction_rating"))
    if "ratings" in body:
        return _freshdesk_rating(body)
    if "freshdesk_webhook" not in body:
        raise PayloadError("expected a satisfaction rating (ratings.default_question) or a freshdesk_webhook object")
    hook = _obj(body["freshdesk_webhook"], "freshdesk_webhook")
    ticket_id = _text(_required(hook, "ticket_id", "freshdesk_webhook"))
    triggered = (_text(hook.get("triggered_event")) or "").lower()
    status_text = (_text(hook.get("ticket_status")) or "").lower()
    if "created" in triggered:
        status: str | None = "created"
        when = hook.get("ticket_created_at") or hook.get("triggered_at")
    else:
        status = _FRESHDESK_STATUS.get(status_text)
        when = hook.get("ticket_updated_at") or hook.get("triggered_at")
    if status is None:
        return []
    if when is None:
        raise PayloadError("freshdesk_webhook.ticket_updated_at (or triggered_at) is required")
    return [_submission(
        kind="ticket", event_id=f"freshdesk:{ticket_id}:{status}:{_version(when)}", source="freshdesk",
        channel=_FRESHDESK_SOURCE.get(str(hook.get("ticket_source", "")).lower(), "other"), event_time=when,
        ticket_id=ticket_id, agent=_text(hook.get("ticket_agent_email")), team=_text(hook.get("ticket_group_name")),
        category=_text(hook.get("ticket_type")), customer_id=_text(hook.get("ticket_contact_email")),
        status=status, priority=_text(hook.get("ticket_priority")))]


# --- Intercom -----------------------------------------------------------------------------------------------

_INTERCOM_CHANNEL = {"conversation": "chat", "email": "email", "push": "in_app", "facebook": "social",
                     "twitter": "social", "instagram": "social", "whatsapp": "chat", "sms": "sms",
                     "phone_call": "phone"}


def parse_intercom(payload: object, event: str | None = None) -> list[Submission]:
    """Intercom notification events (``type: notification_event``): conversation ratings 1-5 with remark
    (``conversation.rating.added``; editable, newest version wins), created / first admin reply / closed /
    reopened conversations. ``ping`` and other topics give no submissions."""
    body = _obj(payload, "body")
    if body.get("type") != "notification_event":
        raise PayloadError("expected an Intercom notification_event")
    topic = str(_required(body, "topic", "body"))
    if topic == "ping" or not topic.startswith("conversation."):
        return []
    item = _obj(_obj(body.get("data"), "data").get("item"), "data.item")
    conversation_id = _text(_required(item, "id", "data.item"))
    source = _opt_obj(item, "source")
    channel = _INTERCOM_CHANNEL.get(str(source.get("type", "conversation")).lower(), "chat")
    common: dict[str, Any] = {
        "source": "intercom", "channel": channel, "ticket_id": conversation_id,
        "agent": _text(item.get("admin_assignee_id")), "team": _text(item.get("team_assignee_id")),
        "customer_id": _text(_opt_obj(source, "author").get("id")) if source else None,
    }
    notified_at = body.get("created_at")
    if topic == "conversation.rating.added":
        rating = _obj(item.get("conversation_rating"), "data.item.conversation_rating")
        value = rating.get("rating")
        if value is None:
            raise PayloadError("data.item.conversation_rating.rating is required")
        version = _version(rating.get("updated_at"), notified_at, rating.get("created_at"))
        teammate = _opt_obj(rating, "teammate")
        customer = _opt_obj(rating, "contact") or _opt_obj(rating, "customer")
        return [_submission(
            kind="feedback", event_id=f"intercom:rating:{conversation_id}:{version}",
            event_time=rating.get("updated_at") or notified_at or rating.get("created_at"),
            rating_value=value, rating_scale="1-5", rating_id=f"intercom:{conversation_id}", rating_version=version,
            comment=_text(rating.get("remark")),
            **{**common, "agent": _text(teammate.get("id")) or common["agent"],
               "customer_id": _text(customer.get("id")) or common["customer_id"]})]
    statistics = _opt_obj(item, "statistics")
    out: list[Submission] = []
    if topic == "conversation.user.created":
        out.append(_submission(kind="ticket", event_id=f"intercom:{conversation_id}:created", status="created",
                               event_time=item.get("created_at") or notified_at, **common))
    elif topic == "conversation.admin.replied" and statistics.get("first_admin_reply_at"):
        out.append(_submission(kind="ticket", event_id=f"intercom:{conversation_id}:first_response",
                               status="first_response", event_time=statistics["first_admin_reply_at"], **common))
    elif topic == "conversation.admin.closed":
        when = statistics.get("last_close_at") or notified_at
        out.append(_submission(kind="ticket", event_id=f"intercom:{conversation_id}:resolved:{_version(when)}",
                               status="resolved", event_time=when, **common))
    elif topic == "conversation.admin.opened":
        when = item.get("updated_at") or notified_at
        out.append(_submission(kind="ticket", event_id=f"intercom:{conversation_id}:reopened:{_version(when)}",
                               status="reopened", event_time=when, **common))
    return out


# --- Help Scout ---------------------------------------------------------------------------------------------

# webhook labels (Rating object: Great, Okay, Bad) and report codes (1 great, 2 okay, 3 not good) onto the
# helpscout scale of domain/scales.py (great / okay / notgood / 1 / 2 / 3)
_HELPSCOUT_LABEL = {"great": "great", "okay": "okay", "ok": "okay", "bad": "notgood", "not good": "notgood",
                    "notgood": "notgood", "1": "1", "2": "2", "3": "3"}


def _helpscout_rating(rating: Mapping[str, Any], channel: str) -> Submission:
    raw = rating.get("rating")
    label = _HELPSCOUT_LABEL.get(str(raw).strip().lower()) if raw is not None else None
    if label is None:
        raise PayloadError(f"rating {raw!r} is not a Help Scout rating (Great, Okay, Bad / Not Good, 1-3)")
    report = "ratingId" in rating  # report row: id is the conversation, ratingId the rating
    rating_id = _text(rating.get("ratingId")) if report else _text(rating.get("id"))
    if rating_id is None:
        raise PayloadError("rating id is required")
    version = _version(rating.get("modifiedAt"), rating.get("createdAt"), rating.get("ratingCreatedAt"))
    customer = _opt_obj(rating, "customer")
    mailbox = _opt_obj(rating, "mailbox")
    return _submission(
        kind="feedback", event_id=f"helpscout:rating:{rating_id}:{version}", source="helpscout",
        channel=str(rating.get("type") or channel),
        event_time=rating.get("modifiedAt") or rating.get("createdAt") or rating.get("ratingCreatedAt"),
        ticket_id=_text(rating.get("id")) if report else _text(rating.get("ticketId")),
        agent=_text(rating.get("ratingUserId")) or _text(_opt_obj(rating, "user").get("id")),
        team=_text(mailbox.get("name")) or _text(mailbox.get("id")), customer_id=_text(customer.get("id")),
        rating_value=label, rating_scale="helpscout", rating_id=f"helpscout:{rating_id}", rating_version=version,
        comment=_text(rating.get("comments")) or _text(rating.get("ratingComments")))


def parse_helpscout(payload: object, event: str | None = None) -> list[Submission]:
    """Help Scout: ``satisfaction.ratings`` (Rating object; Great/Okay/Bad), report rows (``results`` with
    rating codes 1-3 and ratingId), and conversation events ``convo.created`` / ``convo.status`` (closed ->
    resolved). ``event`` is the X-HelpScout-Event header."""
    body = _obj(payload, "body")
    if "results" in body:  # happiness / user ratings report page
        results = body["results"]
        if not isinstance(results, list):
            raise PayloadError("results must be a list")
        return [_helpscout_rating(_obj(r, "results[]"), "email") for r in results]
    if event == "satisfaction.ratings" or (event is None and "rating" in body):
        return [_helpscout_rating(body, "email")]
    if event not in ("convo.created", "convo.status"):
        return []
    conversation_id = _text(_required(body, "id", "conversation"))
    channel = str(body.get("type") or "email")
    assignee = _opt_obj(body, "assignee")
    customer = _opt_obj(body, "primaryCustomer") or _opt_obj(body, "customer")
    common: dict[str, Any] = {"source": "helpscout", "channel": channel, "ticket_id": conversation_id,
                              "agent": _text(assignee.get("id")), "team": _text(body.get("mailboxId")),
                              "customer_id": _text(customer.get("id"))}
    if event == "convo.created":
        return [_submission(kind="ticket", event_id=f"helpscout:{conversation_id}:created", status="created",
                            event_time=_required(body, "createdAt", "conversation"), **common)]
    if str(body.get("status", "")).lower() == "closed":
        when = body.get("closedAt") or body.get("userUpdatedAt") or body.get("modifiedAt")
        if when is None:
            raise PayloadError("conversation.closedAt is required for a closed conversation")
        return [_submission(kind="ticket", event_id=f"helpscout:{conversation_id}:resolved:{_version(when)}",
                            status="resolved", event_time=when, **common)]
    return []


# --- Chatwoot -----------------------------------------------------------------------------------------------

_CHATWOOT_CHANNEL = {"channel::webwidget": "chat", "channel::email": "email", "channel::whatsapp": "chat",
                     "channel::sms": "sms", "channel::twiliosms": "sms", "channel::facebookpage": "social",
                     "channel::twitterprofile": "social", "channel::instagram": "social", "channel::telegram": "chat",
                     "channel::line": "chat", "channel::api": "other", "channel::voice": "phone"}


def parse_chatwoot(payload: object, event: str | None = None) -> list[Submission]:
    """Chatwoot: CSAT responses (``message_updated`` with ``content_type: input_csat`` and
    ``content_attributes.submitted_values.csat_survey_response = {rating 1-5, feedback_message}``),
    ``conversation_created`` and ``conversation_status_changed`` (resolved; open after resolved -> reopened)."""
    body = _obj(payload, "body")
    name = _text(body.get("event"))
    if name is None:
        raise PayloadError("event is required")
    account = _text(_opt_obj(body, "account").get("id")) or _text(body.get("account_id")) or "0"
    if name in ("message_created", "message_updated"):
        if body.get("content_type") != "input_csat":
            return []
        submitted = _opt_obj(_opt_obj(body, "content_attributes"), "submitted_values")
        response = _opt_obj(submitted, "csat_survey_response")
        if not response:
            return []  # the survey was sent, not answered yet
        rating = response.get("rating")
        if rating is None:
            raise PayloadError("csat_survey_response.rating is required")
        conversation = _opt_obj(body, "conversation")
        message_id = _text(_required(body, "id", "message"))
        version = _version(body.get("updated_at"), body.get("created_at"))
        meta = _opt_obj(conversation, "meta")
        return [_submission(
            kind="feedback", event_id=f"chatwoot:{account}:csat:{message_id}:{version}", source="chatwoot",
            channel=_CHATWOOT_CHANNEL.get(str(conversation.get("channel", "")).lower(), "chat"),
            event_time=body.get("updated_at") or body.get("created_at"),
            ticket_id=_text(conversation.get("display_id")) or _text(conversation.get("id")),
            agent=_text(_opt_obj(meta, "assignee").get("id")),
            customer_id=_text(_opt_obj(body, "contact").get("id")) or _text(_opt_obj(meta, "sender").get("id")),
            rating_value=rating, rating_scale="1-5", rating_id=f"chatwoot:{account}:{message_id}",
            rating_version=version, comment=_text(response.get("feedback_message")))]
    if name not in ("conversation_created", "conversation_status_changed"):
        return []
    conversation_id = _text(_required(body, "id", "conversation"))
    display_id = _text(body.get("display_id")) or conversation_id
    meta = _opt_obj(body, "meta")
    common: dict[str, Any] = {
        "source": "chatwoot", "channel": _CHATWOOT_CHANNEL.get(str(body.get("channel", "")).lower(), "chat"),
        "ticket_id": display_id, "agent": _text(_opt_obj(meta, "assignee").get("id")),
        "customer_id": _text(_opt_obj(meta, "sender").get("id")), "priority": _text(body.get("priority"))}
    timestamp = body.get("timestamp") or body.get("updated_at") or body.get("created_at")
    if name == "conversation_created":
        return [_submission(kind="ticket", event_id=f"chatwoot:{account}:{conversation_id}:created",
                            status="created", event_time=body.get("created_at") or timestamp, **common)]
    status = str(body.get("status", "")).lower()
    previous = None
    for change in _opt_list(body, "changed_attributes"):
        if isinstance(change, dict) and isinstance(change.get("status"), dict):
            previous = str(change["status"].get("previous_value", "")).lower()
    if status == "resolved":
        mapped = "resolved"
    elif status == "open" and previous == "resolved":
        mapped = "reopened"
    else:
        return []
    if timestamp is None:
        raise PayloadError("conversation timestamp is required")
    return [_submission(kind="ticket", event_id=f"chatwoot:{account}:{conversation_id}:{mapped}:{_version(timestamp)}",
                        status=mapped, event_time=timestamp, **common)]


# --- generic ------------------------------------------------------------------------------------------------

def parse_generic(payload: object, event: str | None = None) -> list[Submission]:
    """Our own signed endpoint: one raw submission, a list of them, or ``{"submissions": [...]}``. Only the
    envelope is checked here (objects with an event_id); the cleaner validates the fields."""
    items: object = payload
    if isinstance(payload, dict) and "submissions" in payload:
        items = payload["submissions"]
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list) or not items:
        raise PayloadError("expected a submission object, a non-empty list, or {\"submissions\": [...]}")
    out: list[Submission] = []
    for index, item in enumerate(items):
        submission = _obj(item, f"submissions[{index}]")
        if not _text(submission.get("event_id")):
            raise PayloadError(f"submissions[{index}].event_id is required")
        out.append(dict(submission))
    return out


PARSERS: dict[str, Callable[[object, str | None], list[Submission]]] = {
    "zendesk": parse_zendesk, "freshdesk": parse_freshdesk, "intercom": parse_intercom,
    "helpscout": parse_helpscout, "chatwoot": parse_chatwoot, "generic": parse_generic,
}
