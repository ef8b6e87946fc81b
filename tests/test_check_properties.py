"""Property tests of ``wtr check --json``: whatever the plan file holds (arbitrary YAML,
bytes that are not UTF-8, valid plans mutated at random), the command prints exactly one
JSON document, exits 0 or 2, and never shows a traceback."""

from __future__ import annotations

import json
import traceback
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.gitrepo import make_repo, run_wtr
from tests.test_plan_properties import TOKENS, documents, plans
from worktree_runner.cli import cli

ROOT = Path(__file__).resolve().parents[1]
CHECKS = settings(max_examples=60, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow,
                                         HealthCheck.function_scoped_fixture])

VALID_PLAN = """\
version: 1
name: props
max_parallel: 3
agent:
  command: ["python3", "agent.py", "{prompt_file}"]
  timeout: 5m
  env: {MODE: "fast"}
setup: ["true"]
copy: [".env"]
shared: [package.json]
streams:
  db:
    files: ["src/db/**"]
    prompt: "tables"
  api:
    files: ["src/api/**", "tests/api/**"]
    depends_on: [db]
    shared: [package.json]
    agent: {preset: claude, args: ["--model", "x"], stall_timeout: 60}
  ui:
    files: ["src/ui/**", "NOTES.md"]
    conflicts_with: [docs]
    on_failure: stop
  docs:
    files: ["docs/**", "NOTES.md"]
    verify: ["true"]
"""
SAMPLE_PLANS = [VALID_PLAN,
                *(p.read_text() for p in sorted((ROOT / "samples/plans").glob("*.yaml")))]


@pytest.fixture(scope="module")
def checked_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = make_repo(tmp_path_factory.mktemp("props") / "repo", {
        "README.md": "x\n", "src/api/orders.py": "x\n", "src/db/models.py": "x\n",
        "docs/index.md": "x\n", "package.json": "{}\n"})
    return repo.path


def check_json(repo: Path, content: bytes) -> dict[str, Any]:
    """``wtr check --json`` on a plan holding ``content``, in this process (fast)."""
    plan = repo.parent / "plan.yaml"
    plan.write_bytes(content)
    result = CliRunner().invoke(cli, ["check", "--json", "--repo", str(repo), str(plan)])
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        "".join(traceback.format_exception(result.exception)))
    assert result.exit_code in (0, 2), (result.exit_code, result.output)
    doc = json.loads(result.stdout)  # exactly one document: json.loads refuses trailing text
    assert isinstance(doc, dict) and isinstance(doc["valid"], bool)
    assert doc["valid"] == (result.exit_code == 0)
    assert isinstance(doc["errors"], list)
    assert all(isinstance(e["message"], str) and e["message"] for e in doc["errors"])
    if not doc["valid"]:
        assert doc["errors"], doc
    return doc


def encoded(text: str) -> bytes:
    # Lone surrogates cannot be UTF-8; written as such bytes they must still be refused well.
    return text.encode("utf-8", "surrogatepass")


@CHECKS
@given(documents)
def test_any_yaml_document(checked_repo: Path, value: Any) -> None:
    check_json(checked_repo, encoded(yaml.safe_dump(value, allow_unicode=True)))


@CHECKS
@given(plans)
def test_any_plan_shaped_document(checked_repo: Path, document: dict[str, Any]) -> None:
    check_json(checked_repo, encoded(yaml.safe_dump(document, sort_keys=False,
                                                     allow_unicode=True)))


@CHECKS
@given(st.binary(max_size=300) | st.text(max_size=300).map(encoded))
def test_any_bytes(checked_repo: Path, content: bytes) -> None:
    check_json(checked_repo, content)


odd_scalars = st.sampled_from([
    "yes", "null", "~", "[claude]", "{a: 1}", '"\\0"', '"\\ud800"', '"[z-a]"', "/", "-1",
    "1e999", "!!binary aGk=", "*a", "&a x", '"{prompt}"', "'\"{prompt}\"'", "..", "2001-02-03",
    "[/bold]", "0o7", ".inf", '"\\x00x"', "[[[[", "}", "|", ">-"])
mutation = st.tuples(
    st.sampled_from(["insert", "delete", "replace", "duplicate", "swap", "scalar"]),
    st.floats(0, 1), st.floats(0, 1), st.sampled_from(TOKENS) | odd_scalars)


def mutate(text: str, steps: list[tuple[str, float, float, str]]) -> str:
    for kind, at, other, token in steps:
        lines = text.splitlines(keepends=True) or [""]
        i, j = int(at * len(text)), int(other * len(text))
        k, m = int(at * len(lines)) % len(lines), int(other * len(lines)) % len(lines)
        if kind == "insert":
            text = text[:i] + token + text[i:]
        elif kind == "delete":
            text = text[:min(i, j)] + text[max(i, j):][:1] + text[max(i, j) + 1:]
        elif kind == "replace":
            text = text[:i] + token + text[i + len(token):]
        elif kind == "duplicate":
            lines.insert(m, lines[k])
            text = "".join(lines)
        elif kind == "swap":
            lines[k], lines[m] = lines[m], lines[k]
            text = "".join(lines)
        else:  # a value after a key's colon becomes the odd scalar
            key, sep, _ = lines[k].partition(": ")
            if sep:
                lines[k] = f"{key}: {token}\n"
            text = "".join(lines)
    return text


@CHECKS
@given(st.sampled_from(SAMPLE_PLANS), st.lists(mutation, min_size=1, max_size=4))
def test_mutations_of_valid_plans(checked_repo: Path, text: str,
                                  steps: list[tuple[str, float, float, str]]) -> None:
    check_json(checked_repo, encoded(mutate(text, steps)))


def test_the_unmutated_plans_are_valid_here(checked_repo: Path) -> None:
    # Guards the mutation test: it starts from plans that check clean.
    doc = check_json(checked_repo, VALID_PLAN.encode())
    assert doc["valid"] is True, doc["errors"]
    assert doc["pattern_overlaps"] == [] and doc["waves"] == [["db", "ui"], ["api", "docs"]]


@pytest.mark.parametrize("content", [
    b"version: 1\nstreams: {a: {files: ['[z-a]']}}\nagent: {command: [x]}\n",
    b"version: 1\nagent: {preset: [claude]}\nstreams: {a: {files: [x]}}\n",
    b"version: 1\nbase: \"ma\\0in\"\nagent: {command: [x]}\nstreams: {a: {files: [x]}}\n",
    b"\xff\xfe not text",
])
def test_the_real_command_prints_one_document_too(checked_repo: Path, content: bytes) -> None:
    plan = checked_repo.parent / "real.yaml"
    plan.write_bytes(content)
    result = run_wtr("check", "--json", plan, cwd=checked_repo)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    doc = json.loads(result.stdout)
    assert doc["valid"] is False and doc["errors"]
