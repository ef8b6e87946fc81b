"""The run report, rendered by a real headless browser (Debian's chromium)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.browser import Dom, Element, chromium_or_skip, dump_dom, png_size, screenshot
from tests.gitrepo import Repo, run_wtr
from tests.runhelp import agent_plan

HOSTILE_AGENT = Path(__file__).resolve().parent / "agents" / "hostile_agent.py"
INJECTED = ("<script>document.title='pwned'</script>"
            "\"><img src=x onerror=\"document.body.setAttribute('data-pwned','1')\">")


@pytest.fixture(scope="module")
def chromium() -> str:
    return chromium_or_skip("the report")


def _rows(dom: Dom) -> dict[str, Element]:
    svg = next(e for e in dom.find_all("svg") if "tl" in e.classes)
    return {row.attrs["data-stream"]: row for row in svg.find_all("g", "row")}


def _hostile_plan() -> dict:
    return agent_plan(
        {
            "db": {"files": ["src/db/**"], "agent": {"retries": 1},
                   "env": {"AGENT_WRITE": "src/db/models.py=MODELS = [1]",
                           "AGENT_FAIL_ATTEMPTS": "1", "AGENT_RECORD": "{rec}"}},
            "api": {"files": ["src/api/**"], "depends_on": ["db"],
                    "env": {"AGENT_WRITE": "src/api/orders.py=ORDERS = [1]"}},
            "ui": {"files": ["src/ui/**"], "conflicts_with": ["api"],
                   "description": f"the view {INJECTED}",
                   "prompt": f"Make the view. {INJECTED}",
                   "agent": {"command": [sys.executable, str(HOSTILE_AGENT)]}},
            "docs": {"files": ["docs/**"], "env": {"AGENT_EXIT": "3"}},
            "readme": {"files": ["README.md"], "depends_on": ["docs"]},
        })


def _run_hostile(repo: Repo, tmp_path: Path) -> Path:
    rec = tmp_path / "rec"
    rec.mkdir()
    text = json.dumps(_hostile_plan()).replace("{rec}", str(rec))
    env = {"WTR_RETRY_BACKOFF": "0.5"}
    result = run_wtr("run", repo.write_plan(json.loads(text)), cwd=repo.path, env=env)
    assert result.returncode == 1, result.stderr
    merged = run_wtr("merge", cwd=repo.path)
    assert merged.returncode == 0, merged.stderr
    return rec


def test_report_in_a_real_browser(repo: Repo, tmp_path: Path, chromium: str) -> None:
    _run_hostile(repo, tmp_path)
    status = run_wtr("status", "--json", cwd=repo.path).json()
    kept = repo.path / ".git" / "worktree-runner" / "runs" / status["run"] / "report.html"
    assert kept.exists(), "the merge that landed did not write the report"
    out = tmp_path / "out" / "report.html"
    result = run_wtr("report", "-o", out, cwd=repo.path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out) and out.exists()

    html, _ = dump_dom(chromium, out)
    dom = Dom(html)
    title = next(e for e in dom.find_all("title") if e.parent and e.parent.tag == "head")
    assert title.all_text().startswith(f"wtr run {status['run']}")
    # Nothing injected ran or became an element.
    assert "pwned" not in title.all_text()
    assert not [e for e in dom.find_all() if "data-pwned" in e.attrs]
    assert dom.find_all("img") == [] and dom.find_all("script") == []
    assert not [e for e in dom.find_all() if "onerror" in e.attrs]
    ui = dom.by_id("stream-ui")
    assert ui is not None
    text = ui.all_text()
    assert text.count(INJECTED) >= 4  # description, report, progress, prompt, as text
    assert "\"><img src=x onerror=alert(1)><script>x<script>.txt" in text
    # One timeline row per stream, in plan order; the critical path marked.
    rows = _rows(dom)
    assert list(rows) == ["db", "api", "ui", "docs", "readme"]
    critical = [name for name, row in rows.items() if "critical" in row.classes]
    assert critical == ["db", "api", "ui"]  # ui waits for api: conflicts_with
    labels = {n: r.find_all("text", "label")[0].all_text() for n, r in rows.items()}
    assert [n for n, label in labels.items() if "★" in label] == critical
    # Retries as separate bars: db failed once, then succeeded.
    attempts = rows["db"].find_all("g", "attempt")
    assert [(a.attrs["data-attempt"], a.attrs["data-outcome"]) for a in attempts] == [
        ("1", "exit_code"), ("2", "ok")]
    bars = [a.find_all("rect")[0] for a in attempts]
    assert float(bars[1].attrs["x"]) >= float(bars[0].attrs["x"]) + float(bars[0].attrs["width"])
    assert [a.attrs["data-outcome"] for a in rows["docs"].find_all("g", "attempt")] == [
        "exit_code"]
    assert rows["readme"].find_all("g", "attempt") == []
    assert rows["readme"].find_all("rect", "blocked")
    # ui waited for api (conflicts_with): its row starts with a wait.
    assert rows["ui"].find_all("rect", "wait") or rows["ui"].find_all("rect", "queue")
    # The merge: who landed, who was left out and why.
    outcomes = {tr.attrs["data-stream"]: tr.attrs["data-outcome"]
                for tr in dom.find_all("tr") if "data-outcome" in tr.attrs}
    assert outcomes == {"db": "landed", "api": "landed", "ui": "landed",
                        "docs": "left out", "readme": "left out"}
    why = {tr.attrs["data-stream"]: tr.find_all("td")[-1].all_text()
           for tr in dom.find_all("tr") if tr.attrs.get("data-outcome") == "left out"}
    assert "docs" in why["readme"] and why["docs"]
    landed = dom.by_id("landed-commits")
    assert landed is not None and len(landed.all_text().splitlines()) == 3
    graph = next(e for e in dom.find_all("svg") if "dg" in e.classes)
    assert len(graph.find_all("g", "box")) == 5
    assert len(graph.find_all("path", "dep")) == 2 and len(graph.find_all("path", "conflict")) == 1

    png = tmp_path / "report.png"
    screenshot(chromium, out, png, (1280, 1800))
    assert png_size(png) == (1280, 1800)
    assert 20_000 < png.stat().st_size < 5_000_000


def test_report_of_a_run_in_progress_reloads_itself(repo: Repo, tmp_path: Path,
                                                    chromium: str) -> None:
    plan = agent_plan({"db": {"files": ["src/db/**"], "env": {"AGENT_SLEEP": "30"}},
                       "api": {"files": ["src/api/**"], "depends_on": ["db"]}})
    runner = subprocess.Popen([sys.executable, "-m", "worktree_runner", "run",
                               str(repo.write_plan(plan))], cwd=repo.path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            doc = run_wtr("status", "--json", cwd=repo.path)
            if doc.returncode == 0 and doc.json()["streams"][0]["status"] == "running":
                break
            time.sleep(0.5)
        out = tmp_path / "live.html"
        assert run_wtr("report", "-o", out, cwd=repo.path).returncode == 0
    finally:
        runner.terminate()
        runner.wait(timeout=60)
    dom = Dom(dump_dom(chromium, out)[0])
    refresh = [m for m in dom.find_all("meta") if m.attrs.get("http-equiv") == "refresh"]
    assert refresh and int(refresh[0].attrs["content"]) <= 10
    assert dom.by_id("in-progress") is not None
    rows = _rows(dom)
    assert [a.attrs["data-outcome"] for a in rows["db"].find_all("g", "attempt")] == ["running"]
    assert rows["api"].find_all("rect", "wait")
    assert "running" in (dom.by_id("run-state") or Element("x", {}, None)).all_text()
    # Stopped: the report kept in the run's folder says so, and no longer reloads.
    kept = Path(doc.json()["repo"]) / ".git" / "worktree-runner" / "runs" / doc.json()["run"]
    final = Dom((kept / "report.html").read_text())
    assert not [m for m in final.find_all("meta") if m.attrs.get("http-equiv") == "refresh"]
    assert final.by_id("interrupted") is not None


def test_a_report_that_cannot_be_written_does_not_break_run_or_merge(repo: Repo) -> None:
    # The agent takes the report's place in the run's folder with a folder of its own.
    block = 'rm -f "$WTR_STATE_DIR/report.html"; mkdir -p "$WTR_STATE_DIR/report.html"; '
    plan = agent_plan({"db": {"files": ["src/db/**"], "agent": {
        "command": block + "echo 'MODELS = [2]' > src/db/models.py"}}})
    result = run_wtr("run", repo.write_plan(plan), cwd=repo.path)
    assert result.returncode == 0, result.stderr
    merged = run_wtr("merge", cwd=repo.path)
    assert merged.returncode == 0, merged.stderr
    run_dir = repo.path / ".git" / "worktree-runner" / "runs" / "plan-1"
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert [e["kind"] for e in events].count("report.failed") >= 2  # run end, merge landed
    assert repo.git("show", "main:src/db/models.py") == "MODELS = [2]"
    assert (run_dir / "report.html").is_dir()
    # Asked for explicitly, the same failure is an error (not a traceback).
    failed = run_wtr("report", cwd=repo.path)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert "could not write the report" in failed.stderr


def test_report_without_a_run_is_a_clear_error(repo: Repo) -> None:
    result = run_wtr("report", cwd=repo.path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.startswith("wtr: ")
