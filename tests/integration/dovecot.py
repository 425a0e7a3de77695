"""A throwaway Dovecot IMAP server for tests: Debian's dovecot-imapd (scripts/bootstrap.sh installs it), started
unprivileged with its own config in a temporary directory, plaintext login on a free loopback port, one user from a
passwd-file, mail in a Maildir in the same directory.

Dovecot runs as the current user; when the tests run as root it runs as ``nobody`` instead (its login process
refuses to run as root, and a mail user with UID 0 is refused too). Nothing outside the directory is touched.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.integration.offline import free_port

CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
auth_failure_delay = 0
default_internal_user = {user}
default_internal_group = {group}
default_login_user = {user}
first_valid_uid = 1
mail_location = maildir:{root}/mail/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {root}/passwd
}}
userdb {{
  driver = passwd-file
  args = {root}/passwd
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
"""


@dataclass(frozen=True)
class ImapServer:
    host: str
    port: int
    user: str
    password: str
    root: Path

    @property
    def url(self) -> str:
        return f"imap://{self.host}:{self.port}"

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _greets(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            return s.recv(64).startswith(b"* OK")
    except OSError:
        return False


@contextmanager
def dovecot(user: str = "survey", password: str = "s3cret", ready_within_s: float = 30.0) -> Iterator[ImapServer]:
    """Start Dovecot, wait until it greets, yield the server; stop it and delete its directory afterwards.
    Raises RuntimeError (with Dovecot's log) when the binary is missing or it does not come up."""
    binary = shutil.which("dovecot", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if binary is None:
        raise RuntimeError("dovecot is not installed (Debian package dovecot-imapd; scripts/bootstrap.sh installs it)")
    runner = pwd.getpwnam("nobody") if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
    root = Path(tempfile.mkdtemp(prefix="satpulse-dovecot-"))
    port = free_port()
    for sub in ("run", "state", "mail"):
        (root / sub).mkdir()
    (root / "passwd").write_text(f"{user}:{{PLAIN}}{password}:{runner.pw_uid}:{runner.pw_gid}::{root}/home::\n")
    group = grp.getgrgid(runner.pw_gid).gr_name
    (root / "dovecot.conf").write_text(CONFIG.format(root=root, user=runner.pw_name, group=group, port=port))
    if os.geteuid() == 0:
        for path in (root, *root.rglob("*")):
            os.chown(path, runner.pw_uid, runner.pw_gid)
    switch = {"user": runner.pw_uid, "group": runner.pw_gid, "extra_groups": []} if os.geteuid() == 0 else {}
    process = subprocess.Popen([binary, "-F", "-c", str(root / "dovecot.conf")], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, **switch)
    server = ImapServer("127.0.0.1", port, user, password, root)
    try:
        deadline = time.monotonic() + ready_within_s
        while not _greets(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dovecot did not start (exit {process.poll()}):\n{server.log()}")
            time.sleep(0.05)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(root, ignore_errors=True)
