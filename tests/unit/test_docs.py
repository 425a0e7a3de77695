"""Every repository path and every satpulse module, class or function the docs name exists."""

from __future__ import annotations

import importlib
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", ROOT / "bench" / "README.md", *(ROOT / "docs").glob("*.md")])
TOP_LEVEL = ("adapters", "bench", "config", "dashboard", "devtools", "docs", "domain", "mappings", "satpulse",
             "schemas", "scripts", "services", "sinks", "streams", "tests")
PACKAGES = ("adapters", "dashboard", "devtools", "domain", "satpulse", "schemas", "sinks", "streams")
# a relative path that starts at one of the top-level directories, e.g. streams/app.py or config/grafana/
_PATH = re.compile(r"(?<![\w./<{-])((?:" + "|".join(TOP_LEVEL) + r")/[\w./*-]*)")
# a dotted name in one of the packages, e.g. streams.app or domain.clean.entity_key
_DOTTED = re.compile(r"(?<![\w./-])((?:" + "|".join(PACKAGES) + r")(?:\.[A-Za-z_]\w*)+)")


def _named_paths(text: str) -> set[str]:
    paths = set()
    for match in _PATH.finditer(text):
        if text[match.end():match.end() + 1] in ("<", "{"):  # a pattern such as fixtures/acme_<case>.json
            continue
        path = match.group(1).rstrip(".,:;)")
        if "*" not in path:
            paths.add(path)
    return paths


def _is_code_reference(dotted: str) -> bool:
    """False for names that only look like code: topics (satpulse.ingest.v1), files (x.py), and tables of the
    ``satpulse`` database (satpulse.feedback_events: a ``satpulse.`` name whose second part is no module)."""
    if re.search(r"\.(v\d+|py|md|yml|yaml|json|avsc)$", dotted):
        return False
    root, second = dotted.split(".")[:2]
    return root != "satpulse" or (ROOT / root / f"{second}.py").exists()


def _resolves(dotted: str) -> bool:
    """True when ``dotted`` is a module, or an attribute path inside the longest importable module prefix."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


def _generated(path: str) -> bool:
    """True for a path the repository ignores (.gitignore): made by a tool on first use, e.g. bench/.venv-quix."""
    return any(subprocess.run(["git", "check-ignore", "--no-index", "-q", candidate], cwd=ROOT).returncode == 0
               for candidate in (path, path.rstrip("/") + "/"))  # a directory pattern matches the directory


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_path_a_doc_names_exists(doc: Path) -> None:
    missing = sorted(p for p in _named_paths(doc.read_text()) if not (ROOT / p).exists() and not _generated(p))
    assert not missing, f"{doc.relative_to(ROOT)} names paths that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_module_and_name_a_doc_names_exists(doc: Path) -> None:
    names = {m.group(1).rstrip(".") for m in _DOTTED.finditer(doc.read_text())}
    missing = sorted(n for n in names if _is_code_reference(n) and not _resolves(n))
    assert not missing, f"{doc.relative_to(ROOT)} names modules or objects that do not exist: {missing}"

# a code reference as the docs write it: `domain/aggregates.py` `rating_agg` (a module path, then a name in it)
_PATH_AND_NAME = re.compile(r"`((?:" + "|".join(PACKAGES) + r")/[\w/]+)\.py` `([A-Za-z_][\w.]*)(?:\(\))?`")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_name_a_doc_places_in_a_module_is_there(doc: Path) -> None:
    names = {f"{m.group(1).replace('/', '.')}.{m.group(2)}" for m in _PATH_AND_NAME.finditer(doc.read_text())}
    missing = sorted(n for n in names if not _resolves(n))
    assert not missing, f"{doc.relative_to(ROOT)} names objects that are not where it says: {missing}"


def test_the_checks_catch_a_stale_path_and_a_stale_name() -> None:
    assert _named_paths("see `streams/clean.py`, and domain/clean.py.") == {"streams/clean.py", "domain/clean.py"}
    assert _named_paths("tests/fixtures/webhooks/acme_<case>.json") == set()
    assert _generated("bench/.venv-quix/bin/python") and not _generated("bench/run.py")
    assert not _resolves("domain.aggregates.FeedbackAgg") and _resolves("domain.aggregates.WindowAgg.merge")
