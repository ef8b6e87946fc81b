"""Budgets: an agent past its stream's budget, or past the run's, is stopped while it runs
(its usage read live from its output), its stream fails with kind ``budget``; once the
run's budget is spent no stream starts; raising it lets ``wtr resume`` go on. Spend is
shown per stream and in total, in ``status --json`` and the status text."""

from __future__ import annotations

from pathlib import Path

from tests.gitrepo import Repo, run_wtr
from tests.runhelp import agent_plan, records, status, stream_of
from worktree_runner.presets import PRESETS


def _run(repo: Repo, plan: dict, *options: str) -> int:
    result = run_wtr("run", repo.write_plan(plan), *options, cwd=repo.path)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode


def test_an_agent_past_its_budget_is_stopped_while_it_runs(repo: Repo, tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    rec.mkdir()
    plan = agent_plan({
        # 101 tokens a line, a line every 0.2 s for 20 s: stopped long before the end
        "api": {"files": ["src/api/**"], "budget": {"tokens": 500},
                "agent": {"retries": 2},
                "env": {"AGENT_RECORD": str(rec), "AGENT_SPEND": "100,100,0.001",
                        "AGENT_WRITE": "src/api/orders.py=ORDERS = [1]"}},
        # says what it cost only at its end, and exits 0: failed when the attempt ends
        "db": {"files": ["src/db/**"], "budget": {"usd": 0.5},
               "env": {"AGENT_SPEND": "10,1,0.75", "AGENT_WRITE": "src/db/models.py=M = 1"}},
        "ui": {"files": ["src/ui/**"], "env": {"AGENT_SPEND": "10,3,0.01",
                                               "AGENT_WRITE": "src/ui/view.py=V = 1"}},
    })
    assert _run(repo, plan) == 1
    doc = status(repo)
    api, db, ui = (stream_of(doc, n) for n in ("api", "db", "ui"))
    assert api["failure"]["kind"] == "budget"
    assert "tokens of 500, its stream's budget" in api["failure"]["message"]
    assert "'wtr retry api --budget-usd X'" in api["failure"]["message"]
    assert 500 < api["usage"]["input_tokens"] + api["usage"]["output_tokens"] < 2000
    assert api["attempts"] == 1  # a budget failure is not retried
    assert len(records(rec, "api")) == 1 and not records(rec, "api", "end")  # stopped
    assert api["budget"] == {"usd": None, "tokens": 500}
    assert db["failure"]["kind"] == "budget" and "$0.75 of $0.50" in db["failure"]["message"]
    assert db["exit_code"] == 0
    assert ui["status"] == "succeeded" and ui["budget"] is None
    assert doc["usage"]["cost_usd"] == api["usage"]["cost_usd"] + 0.75 + 0.03
    assert doc["budget"] is None
    text = run_wtr("status", cwd=repo.path).stdout
    assert "spend: " in text and "api: " in text and "(budget 500 tokens)" in text
    assert "db: 10 input tokens, 1 output tokens, $0.75, 1 turns (budget $0.50)" in text
    page = tmp_path / "report.html"
    assert run_wtr("report", "-o", page, cwd=repo.path).returncode == 0
    assert "<dt>budget</dt><dd>500 tokens</dd>" in page.read_text()
    # Not raised, a retry stops at once; raised, it runs to its end.
    assert run_wtr("retry", "db", cwd=repo.path).returncode == 1
    assert stream_of(status(repo), "db")["attempts"] == 1  # no agent started
    raised = run_wtr("retry", "db", "--budget-usd", "5", cwd=repo.path)
    assert raised.returncode == 1 and "Traceback" not in raised.stderr  # (api still failed)
    db = stream_of(status(repo), "db")
    assert db["status"] == "succeeded" and db["budget"] == {"usd": 5.0, "tokens": None}
    assert db["usage"]["cost_usd"] == 1.5  # both attempts count


def test_the_run_budget_stops_every_agent_and_starts_no_stream_until_raised(
        repo: Repo, tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    rec.mkdir()
    spend = {"AGENT_RECORD": str(rec), "AGENT_SPEND": "100,15,0.01"}  # 1,515 tokens each
    plan = agent_plan({
        "api": {"files": ["src/api/**"], "env": {**spend, "AGENT_WRITE": "src/api/a.py=A"}},
        "db": {"files": ["src/db/**"], "env": {**spend, "AGENT_WRITE": "src/db/d.py=D"}},
        "ui": {"files": ["src/ui/**"], "env": {**spend, "AGENT_WRITE": "src/ui/u.py=U"}},
        "docs": {"files": ["docs/**"], "depends_on": ["ui"],
                 "env": {**spend, "AGENT_WRITE": "docs/d.md=D"}},
    }, max_parallel=2, budget={"tokens": 1000})
    assert _run(repo, plan) == 1
    doc = status(repo)
    assert doc["budget"] == {"usd": None, "tokens": 1000}
    for name in ("api", "db", "ui"):
        failure = stream_of(doc, name)["failure"]
        assert failure["kind"] == "budget", (name, failure)
        assert "the run's budget is spent" in failure["message"]
        assert "--budget-usd" in failure["message"]
    assert stream_of(doc, "docs")["status"] == "blocked"
    # Two ran and were stopped; the third came after the budget was spent: no agent ran.
    ran = [name for name in ("api", "db", "ui") if records(rec, name)]
    assert len(ran) == 2 and not [name for name in ran if records(rec, name, "end")]
    idle = stream_of(doc, ({"api", "db", "ui"} - set(ran)).pop())
    assert idle["worktree"] is None and idle["usage"] is None
    spent = doc["usage"]["input_tokens"] + doc["usage"]["output_tokens"]
    assert 1000 < spent < 2500
    # Raised, the run goes on: the failed streams again, then what waited on them.
    resumed = run_wtr("resume", "--retry-failed", "--budget-tokens", "100000", cwd=repo.path)
    assert resumed.returncode == 0, resumed.stderr
    doc = status(repo)
    assert doc["budget"] == {"usd": None, "tokens": 100000}
    assert all(s["status"] == "succeeded" for s in doc["streams"])
    assert doc["usage"]["input_tokens"] + doc["usage"]["output_tokens"] > spent + 4 * 1500


def test_budgets_are_checked_in_the_plan(repo: Repo) -> None:
    for budget, expected in (({"usd": 1, "token": 5}, "streams.api.budget.token: unknown key "
                                                      "(did you mean 'tokens'?)"),
                             ({"usd": -1}, "streams.api.budget.usd: must be an amount"),
                             ({"tokens": 0.5}, "streams.api.budget.tokens: must be a whole"),
                             ({}, "streams.api.budget: give 'usd', 'tokens' or both"),
                             (5, "streams.api.budget: 'budget' ({usd: X, tokens: N}) must be")):
        plan = agent_plan({"api": {"files": ["src/api/**"], "budget": budget}})
        result = run_wtr("check", repo.write_plan(plan), cwd=repo.path)
        assert result.returncode == 2 and expected in result.stderr, (budget, result.stderr)
    plan = agent_plan({"api": {"files": ["src/api/**"]}}, budget={"dollars": 3})
    result = run_wtr("check", repo.write_plan(plan), cwd=repo.path)
    assert result.returncode == 2 and "budget.dollars: unknown key" in result.stderr


def test_check_warns_that_on_dask_the_run_budget_misses_what_runs_beside(repo: Repo) -> None:
    streams = {"api": {"files": ["src/api/**"]}}
    dask = {"kind": "dask", "scheduler": "local:2", "remote": str(repo.path)}
    warned = run_wtr("check", repo.write_plan(agent_plan(streams, executor=dask,
                                                         budget={"usd": 5})), cwd=repo.path)
    assert warned.returncode == 0, warned.stderr
    assert "the run's 'budget' with the Dask executor" in warned.stdout + warned.stderr
    quiet = run_wtr("check", repo.write_plan(agent_plan(streams, executor=dask)),
                    cwd=repo.path)
    assert "budget" not in quiet.stdout + quiet.stderr


def test_claude_reports_usage_as_it_goes_and_its_result_at_the_end() -> None:
    claude = PRESETS["claude"]
    message = ('{"type":"assistant","message":{"id":"m%d","usage":{"input_tokens":%d,'
               '"output_tokens":%d}}}')
    running = "\n".join([message % (1, 100, 1), message % (1, 100, 20), message % (2, 300, 5)])
    assert claude.live_usage(running) == {"input_tokens": 400, "output_tokens": 25,
                                          "cost_usd": None, "turns": 2}
    ended = running + ('\n{"type":"result","total_cost_usd":0.5,"num_turns":2,'
                       '"usage":{"input_tokens":410,"output_tokens":30}}')
    assert claude.live_usage(ended) == claude.usage(ended) == {
        "input_tokens": 410, "output_tokens": 30, "cost_usd": 0.5, "turns": 2}
    assert PRESETS["codex"].live_usage("") is None


def test_each_best_of_n_candidate_is_held_to_the_streams_budget(repo: Repo) -> None:
    write = "src/api/orders.py=ORDERS = [1]"
    plan = agent_plan({"api": {
        "files": ["src/api/**"], "attempts": 2, "budget": {"tokens": 500},
        "choose": "smallest",  # (with 'first', candidate 2 passing would stop candidate 1)
        "agents": [{"env": {"AGENT_SPEND": "100,100,0.001", "AGENT_WRITE": write}},  # too much
                   {"env": {"AGENT_SPEND": "100,2,0.001", "AGENT_WRITE": write}}]}})  # 202
    assert _run(repo, plan) == 0
    api = stream_of(status(repo), "api")
    kinds = [(c["attempt"], (c["failure"] or {}).get("kind"), c["chosen"])
             for c in api["candidates"]]
    assert kinds == [(1, "budget", False), (2, None, True)]
    assert api["budget"] == {"usd": None, "tokens": 500}


def test_the_run_budget_counts_every_candidates_spend(repo: Repo, tmp_path: Path) -> None:
    """Each candidate alone stays under the run's budget, the two together do not: the
    second is stopped, and no stream starts after them."""
    first_done, rec = tmp_path / "first-done", tmp_path / "rec"
    rec.mkdir()
    write = "src/api/orders.py=ORDERS = [1]"
    plan = agent_plan({
        "api": {"files": ["src/api/**"], "attempts": 2, "choose": "smallest", "agents": [
            {"env": {"AGENT_SPEND": "100,5,0.001", "AGENT_WRITE": write,  # 505 tokens
                     "AGENT_SHELL": f"touch {first_done}"}},
            {"env": {"AGENT_SPEND": "100,6,0.001", "AGENT_WRITE": write,  # 606 tokens
                     "AGENT_WAIT_FOR": str(first_done)}}]},
        "ui": {"files": ["src/ui/**"], "conflicts_with": ["api"],
               "env": {"AGENT_RECORD": str(rec), "AGENT_WRITE": "src/ui/u.py=U"}},
    }, budget={"tokens": 1000})
    assert _run(repo, plan) == 1
    doc = status(repo)
    api = stream_of(doc, "api")
    found = [(c["attempt"], c["status"], (c["failure"] or {}).get("kind"))
             for c in api["candidates"]]
    assert found == [(1, "succeeded", None), (2, "failed", "budget")]
    assert "the run's budget is spent" in api["candidates"][1]["failure"]["message"]
    assert api["status"] == "succeeded"  # (candidate 1 passed before the budget ran out)
    assert api["usage"]["input_tokens"] + api["usage"]["output_tokens"] > 1000
    ui = stream_of(doc, "ui")
    assert ui["failure"]["kind"] == "budget" and not records(rec, "ui")
    assert doc["usage"] == api["usage"]
