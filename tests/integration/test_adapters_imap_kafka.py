"""E-mail survey replies polled from a real IMAP server (a throwaway Dovecot, tests/integration/dovecot.py) onto the
real broker: new messages are published once, unreadable ones dead-lettered, and neither a restart, a lost
checkpoint file nor a disabled keyword republishes anything; a changed UIDVALIDITY voids the checkpoint."""

from __future__ import annotations

import imaplib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from adapters.imap import Checkpoint, Checkpoints, ImapConfig, ImapError, connect, poll_once
from adapters.privacy import PrivacyPolicy
from adapters.publisher import Publisher, ensure_topics
from satpulse import codec, topics
from satpulse.settings import Settings, get_settings
from tests.integration.dovecot import ImapServer, dovecot
from tests.integration.offline import topic_values

pytestmark = pytest.mark.integration
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "channels"
BROKEN = b"From: x@example.com\r\nSubject: no ids\r\n\r\nRating: 3\r\n"  # no Message-ID / Date: dead letter
FOURTH = (b"Message-ID: <reply-4@mail.example.net>\r\nDate: Thu, 05 Mar 2026 09:00:00 +0000\r\n"
          b"From: dan@example.net\r\nSubject: Re: [#48300] How did we do?\r\n\r\nRating: 5\r\nSuper fast.\r\n")
KEYWORD = "$SatpulseProcessed"


@pytest.fixture(scope="module")
def imap_server() -> Iterator[ImapServer]:
    try:
        with dovecot() as server:
            yield server
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


def append(server: ImapServer, *messages: bytes) -> None:
    client = imaplib.IMAP4(server.host, server.port)
    client.login(server.user, server.password)
    for message in messages:
        assert client.append("INBOX", None, None, message)[0] == "OK"
    client.logout()


def flags(server: ImapServer) -> dict[int, str]:
    client = imaplib.IMAP4(server.host, server.port)
    client.login(server.user, server.password)
    client.select("INBOX", readonly=True)
    _, data = client.uid("FETCH", "1:*", "(FLAGS)")
    client.logout()
    out = {}
    for line in data:
        assert isinstance(line, bytes)
        uid = int(line.split(b"UID ")[1].split()[0].rstrip(b")"))
        out[uid] = line.decode()
    return out


def test_imap_mailbox_to_kafka(services: None, imap_server: ImapServer, tmp_path: Path) -> None:
    namespace = f"it-imap-{uuid.uuid4().hex[:8]}"
    names = topics.for_namespace(namespace)
    ensure_topics(get_settings(), names.all())
    env = {**os.environ, "SATPULSE_TOPIC_NAMESPACE": namespace, "SATPULSE_WORK_DIR": str(tmp_path),
           "SATPULSE_IMAP_URL": imap_server.url, "SATPULSE_IMAP_USER": imap_server.user,
           "SATPULSE_IMAP_PASSWORD": imap_server.password}
    append(imap_server, (FIXTURES / "survey_reply_link.eml").read_bytes(), BROKEN)

    # 1. the CLI, once: one reply published, the unreadable message dead-lettered, both flagged, \Seen untouched
    done = subprocess.run([sys.executable, "-m", "satpulse.cli", "channel", "imap", "--once"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "messages 2, events 1, rejected 1" in done.stderr
    [reply] = [json.loads(v) for v in topic_values(names.ingest)]
    assert (reply["event_id"], reply["rating_value"], reply["ticket_id"]) == (
        "email:reply-1@mail.example.com", "4", "48213")
    [letter] = [codec.decode(v, codec.DEAD_LETTER)[1] for v in topic_values(names.dead_letter)]
    assert letter["stage"] == "channel-imap" and letter["payload"] == BROKEN
    assert letter["origin_ref"].startswith(f"imap://{imap_server.user}@127.0.0.1:{imap_server.port}/INBOX;")
    assert letter["origin_ref"].endswith("/;UID=2")
    state_file = tmp_path / "imap" / "checkpoints.json"
    [(key, (validity, last_uid))] = json.loads(state_file.read_text()).items()
    assert last_uid == 2 and key.endswith("/INBOX")
    assert all(KEYWORD in f and "\\Seen" not in f for f in flags(imap_server).values())

    # the remaining polls in-process, with the same settings, publishing to this test's topics
    settings = Settings(work_dir=tmp_path, imap_url=imap_server.url, imap_user=imap_server.user,
                        imap_password=SecretStr(imap_server.password))
    redirect = {topics.INGEST: names.ingest, topics.DEAD_LETTER: names.dead_letter}

    def poll(**overrides: object) -> dict[str, int]:
        config = ImapConfig.from_settings(settings.model_copy(update=overrides))
        with Publisher(settings) as publisher:
            counts = poll_once(config, Checkpoints(config.state_path),
                               lambda topic, k, v: publisher.send(redirect[topic], k, v), publisher.flush,
                               PrivacyPolicy())
        return dict(counts)

    # 2. checkpoint file lost: the keyword alone keeps messages 1-2 from being republished
    state_file.unlink()
    append(imap_server, (FIXTURES / "survey_reply_text.eml").read_bytes())
    assert poll() == {"records": 1, "events": 1}
    # 3. keyword switched off: the checkpoint alone skips UIDs 1-3
    append(imap_server, FOURTH)
    assert poll(imap_processed_keyword="") == {"records": 1, "events": 1}
    assert KEYWORD not in flags(imap_server)[4]
    assert poll(imap_processed_keyword="") == {}  # a restart with nothing new publishes nothing
    ids = sorted(json.loads(v)["event_id"] for v in topic_values(names.ingest))
    assert ids == ["email:reply-1@mail.example.com", "email:reply-2@mail.example.org",
                   "email:reply-4@mail.example.net"]

    # 4. a checkpoint from another UIDVALIDITY means nothing: without the keyword every message is read again
    Checkpoints(state_file).set(key, Checkpoint(validity + 1, 99))
    assert poll(imap_processed_keyword="") == {"records": 4, "events": 3, "rejected": 1}
    assert Checkpoints(state_file).get(key) == Checkpoint(validity, 4)
    assert len(topic_values(names.ingest)) == 6  # at-least-once: downstream deduplicates the same event ids


def test_imap_login_refused(imap_server: ImapServer, tmp_path: Path) -> None:
    settings = Settings(work_dir=tmp_path, imap_url=imap_server.url, imap_user=imap_server.user,
                        imap_password=SecretStr("wrong"))
    with pytest.raises(ImapError, match="login as survey refused"):
        connect(ImapConfig.from_settings(settings))
