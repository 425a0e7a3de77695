"""IMAP poller configuration and its checkpoint file (pure parts; the mailbox itself is tested against a real
Dovecot in tests/integration/test_adapters_imap_kafka.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import SecretStr

from adapters.imap import Checkpoint, Checkpoints, ImapConfig, ImapError
from satpulse.settings import Settings


def settings(tmp_path: Path, **overrides: object) -> Settings:
    base: dict[str, object] = {"work_dir": tmp_path, "imap_url": "imaps://mail.example.com",
                               "imap_user": "surveys", "imap_password": SecretStr("pw")}
    return Settings(**{**base, **overrides})


def test_config_from_settings(tmp_path: Path) -> None:
    config = ImapConfig.from_settings(settings(tmp_path))
    assert (config.host, config.port, config.tls, config.mailboxes) == ("mail.example.com", 993, True, ("INBOX",))
    assert config.state_path == tmp_path / "imap" / "checkpoints.json"
    assert "pw" not in repr(config)  # the password stays a SecretStr
    plain = ImapConfig.from_settings(settings(tmp_path, imap_url="imap://127.0.0.1", imap_processed_keyword=""))
    assert (plain.port, plain.tls, plain.processed_keyword) == (143, False, None)
    assert plain.mailbox_key("Surveys") == "surveys@127.0.0.1:143/Surveys"


@pytest.mark.parametrize(("overrides", "match"), [
    ({"imap_password": None}, "are required"),
    ({"imap_url": "pop3://mail.example.com"}, "imap://host"),
    ({"imap_processed_keyword": "bad keyword"}, "keyword atom"),
    ({"imap_mailboxes": []}, "empty"),
])
def test_config_errors(tmp_path: Path, overrides: dict[str, object], match: str) -> None:
    with pytest.raises(ImapError, match=match):
        ImapConfig.from_settings(settings(tmp_path, **overrides))


def test_checkpoints_survive_a_restart_and_are_written_whole(tmp_path: Path) -> None:
    path = tmp_path / "imap" / "checkpoints.json"
    first = Checkpoints(path)
    assert first.get("a") is None
    first.set("a", Checkpoint(1795540837, 2))
    first.set("b", Checkpoint(7, 40))
    first.set("a", Checkpoint(1795540837, 5))
    again = Checkpoints(path)
    assert (again.get("a"), again.get("b")) == (Checkpoint(1795540837, 5), Checkpoint(7, 40))
    assert json.loads(path.read_text()) == {"a": [1795540837, 5], "b": [7, 40]}
    assert [p.name for p in path.parent.iterdir()] == ["checkpoints.json"]  # no temporary file left behind
