"""``satpulse import`` against the real broker: both shipped data sets land on the ingest topic with the expected
number of events per kind, and the rejected events on the dead-letter topic with their reason and origin."""

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
ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
CASES = [
    ("kaggle_support_tickets/customer_support_tickets.csv", "kaggle_support_tickets.yaml",
     {"ticket:first_response": 5650, "ticket:resolved": 1404, "feedback:rating": 2769}, {"negative_duration": 1365}),
    ("pwc_call_centre/call_center_dataset.csv", "pwc_call_centre.yaml",
     {"ticket:created": 5000, "ticket:first_response": 4054, "ticket:resolved": 3646, "ticket:closed": 946,
      "feedback:rating": 4054}, {}),
]


@pytest.mark.parametrize(("data", "mapping", "kinds", "rejected"), CASES, ids=["kaggle", "pwc"])
def test_import_to_kafka(services: None, data: str, mapping: str, kinds: dict[str, int],
                         rejected: dict[str, int]) -> None:
    path = DATA / data
    if not path.exists():
        pytest.skip("shared/data not present")
    namespace = f"it-imp-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "SATPULSE_TOPIC_NAMESPACE": namespace}
    done = subprocess.run([sys.executable, "-m", "satpulse.cli", "import", str(path), "--mapping",
                           str(ROOT / "mappings" / mapping)], env=env, capture_output=True, text=True, timeout=300,
                          check=True)
    assert f"events published {sum(kinds.values())}" in done.stdout
    assert "import [" in done.stderr  # the progress bar
    names = topics.for_namespace(namespace)
    published = [json.loads(v) for v in topic_values(names.ingest)]
    assert Counter(f"{p['kind']}:{p.get('status', 'rating')}" for p in published) == Counter(kinds)
    assert len({p["event_id"] for p in published}) == len(published)
    letters = [codec.decode(v, codec.DEAD_LETTER)[1] for v in topic_values(names.dead_letter)]
    assert Counter(d["reason"] for d in letters) == Counter(rejected)
    assert all(d["stage"] == "import" and d["origin_ref"].startswith(f"{path}:") for d in letters)
