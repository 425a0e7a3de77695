"""E-mail survey replies from an IMAP mailbox, polled on an interval (``satpulse channel imap``).

Each poll, per configured mailbox: SELECT it, read its UIDVALIDITY, search the UIDs above the checkpoint that do
not carry the processed keyword, fetch each message with ``BODY.PEEK[]`` (the \\Seen flag is left alone), run it
through the .eml parser (adapters/channels.py) and hand the submissions -- or a dead letter -- to the publisher.
Once the publisher has flushed (the broker acknowledged everything), the checkpoint ``(UIDVALIDITY, highest
UID)`` is written, then the processed keyword is added to the messages. So a restart republishes nothing:

- the checkpoint file (``{work_dir}/imap/checkpoints.json``, written atomically) skips every UID at or below the
  last one published while the mailbox keeps its UIDVALIDITY;
- the keyword (``$SatpulseProcessed`` by default) skips messages processed before, also when the checkpoint is
  lost or the server changed UIDVALIDITY (which voids every UID: the mailbox is then searched from UID 1).

A crash after the flush but before the checkpoint republishes that poll's messages: their event ids derive from
the Message-ID, so downstream deduplication drops them (at-least-once, never lost). Blocking throughout (imaplib,
Kafka flush, file writes).
"""

from __future__ import annotations

import imaplib
import json
import logging
import os
import re
import signal
import ssl
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from pydantic import SecretStr

from adapters.channels import email_outcome, emit_outcome
from adapters.emit import Emitter, IngestEncoder, Send
from adapters.privacy import PrivacyPolicy
from satpulse.settings import Settings

log = logging.getLogger(__name__)
STAGE = "channel-imap"
_FETCH_UID = re.compile(rb"\bUID (\d+)")
_KEYWORD = re.compile(r"\$?[A-Za-z0-9_.\-]+")


class ImapError(RuntimeError):
    """The mailbox cannot be read: bad configuration, login refused, or a command the server refused."""


@dataclass(frozen=True)
class ImapConfig:
    host: str
    port: int
    tls: bool
    user: str
    password: SecretStr
    mailboxes: tuple[str, ...]
    processed_keyword: str | None
    timeout_s: float
    state_path: Path

    @classmethod
    def from_settings(cls, settings: Settings) -> ImapConfig:
        """Raises ImapError naming what is missing or malformed."""
        if not settings.imap_url or not settings.imap_user or settings.imap_password is None:
            raise ImapError("SATPULSE_IMAP_URL, SATPULSE_IMAP_USER and SATPULSE_IMAP_PASSWORD are required")
        url = urlsplit(settings.imap_url)
        if url.scheme not in ("imap", "imaps") or not url.hostname:
            raise ImapError(f"imap_url must be imap://host[:port] or imaps://host[:port], got {settings.imap_url!r}")
        keyword = settings.imap_processed_keyword or None
        if keyword is not None and not _KEYWORD.fullmatch(keyword):
            raise ImapError(f"imap_processed_keyword {keyword!r} is not an IMAP keyword atom")
        if not settings.imap_mailboxes:
            raise ImapError("imap_mailboxes is empty")
        return cls(host=url.hostname, port=url.port or (993 if url.scheme == "imaps" else 143),
                   tls=url.scheme == "imaps", user=settings.imap_user, password=settings.imap_password,
                   mailboxes=tuple(settings.imap_mailboxes), processed_keyword=keyword,
                   timeout_s=settings.imap_timeout_seconds, state_path=settings.work_dir / "imap" / "checkpoints.json")

    def mailbox_key(self, mailbox: str) -> str:
        return f"{self.user}@{self.host}:{self.port}/{mailbox}"


class Checkpoint(NamedTuple):
    uidvalidity: int
    last_uid: int


class Checkpoints:
    """Last published UID per mailbox with that mailbox's UIDVALIDITY, in one JSON file. :meth:`set` rewrites the
    file atomically (temporary file, fsync, rename): after a crash it holds the old or the new state."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._state: dict[str, list[int]] = json.loads(path.read_text()) if path.exists() else {}

    def get(self, key: str) -> Checkpoint | None:
        entry = self._state.get(key)
        return None if entry is None else Checkpoint(int(entry[0]), int(entry[1]))

    def set(self, key: str, checkpoint: Checkpoint) -> None:
        self._state[key] = [checkpoint.uidvalidity, checkpoint.last_uid]
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._path.parent, prefix=".checkpoints.")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self._state, f, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _check(result: tuple[str, list[Any]], what: str) -> list[Any]:
    status, data = result
    if status != "OK":
        raise ImapError(f"{what} refused: {data!r}")
    return data


def _quote(mailbox: str) -> str:
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'


def connect(config: ImapConfig) -> imaplib.IMAP4:
    """Open and log in (IMAP4 or IMAP4_SSL with certificate checks). Raises ImapError or OSError."""
    client: imaplib.IMAP4
    if config.tls:
        client = imaplib.IMAP4_SSL(config.host, config.port, ssl_context=ssl.create_default_context(),
                                   timeout=config.timeout_s)
    else:
        client = imaplib.IMAP4(config.host, config.port, timeout=config.timeout_s)
    try:
        client.login(config.user, config.password.get_secret_value())
    except imaplib.IMAP4.error as exc:
        client.shutdown()
        raise ImapError(f"login as {config.user} refused: {exc}") from None
    return client


class Mailbox(NamedTuple):
    uidvalidity: int
    start_after: int  # UIDs at or below this were published under this UIDVALIDITY
    uids: list[int]  # to process, ascending


def scan(client: imaplib.IMAP4, mailbox: str, checkpoint: Checkpoint | None, keyword: str | None,
         readonly: bool) -> Mailbox:
    """SELECT (or EXAMINE when ``readonly``) the mailbox and list the UIDs still to process."""
    _check(client.select(_quote(mailbox), readonly=readonly), f"SELECT {mailbox}")
    _, validity = client.response("UIDVALIDITY")
    if not validity or validity[0] is None:
        raise ImapError(f"{mailbox}: the server sent no UIDVALIDITY")
    uidvalidity = int(validity[-1])
    start_after = checkpoint.last_uid if checkpoint and checkpoint.uidvalidity == uidvalidity else 0
    criteria = [f"UID {start_after + 1}:*"] + (["UNKEYWORD", keyword] if keyword else [])
    data = _check(client.uid("SEARCH", *criteria), f"SEARCH {mailbox}")
    found: bytes = data[0] if data and isinstance(data[0], bytes) else b""
    uids = sorted(int(u) for u in found.split() if int(u) > start_after)  # n:* always matches the top UID
    return Mailbox(uidvalidity, start_after, uids)


def fetch(client: imaplib.IMAP4, uid: int) -> bytes | None:
    """The whole message, without setting \\Seen; None when it was expunged meanwhile."""
    data = _check(client.uid("FETCH", str(uid), "(BODY.PEEK[])"), f"FETCH {uid}")
    for part in data:
        if isinstance(part, tuple) and _FETCH_UID.search(part[0]) and isinstance(part[1], bytes):
            return part[1]
    return None


def _flag(client: imaplib.IMAP4, key: str, uids: list[int], keyword: str, chunk: int = 500) -> None:
    """Add ``keyword`` to ``uids`` (in chunks: servers limit the command length). A refusal (a read-only mailbox, no
    custom keywords allowed) is logged: the checkpoint alone then keeps the messages from being republished."""
    for start in range(0, len(uids), chunk):
        status, detail = client.uid("STORE", ",".join(map(str, uids[start:start + chunk])), "+FLAGS.SILENT",
                                    f"({keyword})")
        if status != "OK":
            log.warning("%s: could not set %s: %r", key, keyword, detail)
            return


def poll_once(config: ImapConfig, checkpoints: Checkpoints, send: Send, flush: Callable[[], None],
              privacy: PrivacyPolicy, dry_run: bool = False) -> Counter[str]:
    """One pass over every mailbox: publish new messages, then (unless ``dry_run``) checkpoint and flag them.
    Counts ``records``, ``events``, ``rejected``. Raises ImapError, OSError, imaplib errors, PublishError."""
    counts: Counter[str] = Counter()
    emitter = Emitter(STAGE, send, IngestEncoder(privacy))
    client = connect(config)
    try:
        for mailbox in config.mailboxes:
            key = config.mailbox_key(mailbox)
            state = scan(client, mailbox, checkpoints.get(key), config.processed_keyword, readonly=dry_run)
            if not state.uids:
                continue
            origin = f"imap://{key};UIDVALIDITY={state.uidvalidity}/;UID="  # RFC 5092 message URL
            for uid in state.uids:
                raw = fetch(client, uid)
                if raw is not None:
                    emit_outcome(email_outcome(f"{origin}{uid}", raw), emitter, counts)
            flush()  # raises unless the broker acknowledged everything: then nothing below happens
            if dry_run:
                continue
            checkpoints.set(key, Checkpoint(state.uidvalidity, max(state.uids[-1], state.start_after)))
            if config.processed_keyword:
                _flag(client, key, state.uids, config.processed_keyword)
    finally:
        client.logout()  # not CLOSE: that would expunge messages others marked \Deleted
    return counts


def poll_forever(config: ImapConfig, checkpoints: Checkpoints, send: Send, flush: Callable[[], None],
                 privacy: PrivacyPolicy, interval_s: float, stop: threading.Event) -> Iterator[Counter[str]]:
    """:func:`poll_once` every ``interval_s`` until ``stop`` is set; yields each poll's counts. A poll that fails
    on the network or the server is logged and retried at the next interval; a publish failure propagates."""
    while not stop.is_set():
        try:
            yield poll_once(config, checkpoints, send, flush, privacy)
        except (ImapError, OSError, imaplib.IMAP4.error) as exc:
            log.warning("IMAP poll of %s:%s failed: %s; retrying in %.0f s", config.host, config.port, exc,
                        interval_s)
        stop.wait(interval_s)


def run_imap(settings: Settings, once: bool, dry_run: bool) -> int:
    """``satpulse channel imap [--once] [--dry-run]``: poll every ``imap_poll_seconds`` until SIGINT/SIGTERM (or
    once). ``--dry-run`` prints the submissions as JSON lines on stdout and publishes, flags and checkpoints
    nothing. A summary per poll that found messages goes to stderr. Returns the exit code: 2 when ``--once``
    cannot read the mailbox."""
    from adapters.publisher import Publisher, ensure_topics
    from satpulse import topics

    try:
        config = ImapConfig.from_settings(settings)
    except ImapError as exc:
        print(f"satpulse channel imap: {exc}", file=sys.stderr)
        return 2
    checkpoints = Checkpoints(config.state_path)
    privacy = PrivacyPolicy(settings.redact_personal_data, settings.pseudonymisation_key)

    def report(counts: Counter[str]) -> None:
        print(f"imap: messages {counts['records']}, events {counts['events']}, rejected {counts['rejected']}",
              file=sys.stderr)

    try:
        if dry_run:
            def show(topic: str, key: bytes | None, value: bytes) -> None:
                if topic == topics.INGEST:
                    sys.stdout.write(value.decode() + "\n")
            report(poll_once(config, checkpoints, show, lambda: None, privacy, dry_run=True))
            return 0
        ensure_topics(settings)
        with Publisher(settings) as publisher:
            if once:
                report(poll_once(config, checkpoints, publisher.send, publisher.flush, privacy))
                return 0
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            for counts in poll_forever(config, checkpoints, publisher.send, publisher.flush, privacy,
                                       settings.imap_poll_seconds, stop):
                if counts["records"]:
                    report(counts)
    except (ImapError, OSError, imaplib.IMAP4.error) as exc:
        print(f"satpulse channel imap: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0
