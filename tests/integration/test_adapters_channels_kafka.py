"""``satpulse channel`` against the real broker: IVR, e-mail, chat and social fixtures land on the ingest topic;
unreadable records on the dead-letter topic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest

from satpulse import codec, topics
from tests.integration.offline import topic_values

pytestmark = pytest.mark.integration
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "channels"


def test_channel_files_to_kafka(services: None) -> None:
    namespace = f"it-ch-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "SATPULSE_TOPIC_NAMESPACE": namespace, "SATPULSE_REDACT_PERSONAL_DATA": "true",
           "SATPULSE_PSEUDONYMISATION_KEY": "it-key"}
    runs = [("ivr", ["ivr_surveys.csv"]), ("email", ["survey_reply_link.eml", "survey_reply_text.eml"]),
            ("chat", ["chat_transcripts.json"]), ("social", ["social_mentions.jsonl"])]
    for kind, files in runs:
        subprocess.run([sys.executable, "-m", "satpulse.cli", "channel", kind, *[str(FIXTURES / f) for f in files]],
                       env=env, check=True, capture_output=True, text=True, timeout=120)
    names = topics.for_namespace(namespace)
    published = [json.loads(v) for v in topic_values(names.ingest)]
    assert Counter(p["source"].split(":")[0] for p in published) == {"ivr": 13, "email": 2, "chat": 6, "social": 3}
    email = next(p for p in published if p["event_id"] == "email:reply-2@mail.example.org")
    assert email["comment"].endswith("Call me on [phone].") and len(email["customer_id"]) == 64  # redacted, keyed
    letters = [codec.decode(v, codec.DEAD_LETTER)[1] for v in topic_values(names.dead_letter)]
    assert len(letters) == 4 and {d["stage"] for d in letters} == {"channel-ivr", "channel-chat", "channel-social"}
