"""Pull requests through the forge's own command line: ``gh`` for GitHub, ``glab`` for GitLab.

The CLIs hold the user's login and know their server; we only ask them to find, open and
edit a request for a branch, and read back its state. Each forge is one small class with
the same four questions, so the push and clean code never branches on the forge.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worktree_runner import procs
from worktree_runner.errors import BadInput, WtrError

FORGES = ("github", "gitlab")


@dataclass(frozen=True)
class PullRequest:
    number: int
    url: str
    state: str  # open | merged | closed
    base: str


@dataclass(frozen=True)
class Proposal:
    """What a pull request should say: its branch, base, title and body."""

    branch: str
    base: str
    title: str
    body: str
    draft: bool = False


class ForgeFailed(WtrError):
    """The forge's CLI refused or failed; its first line of output says why."""


class Forge:
    name = ""
    program = ""
    label = ""  # what the forge calls a pull request

    def __init__(self, root: Path, repo_arg: str | None) -> None:
        self.root = root
        self.repo_arg = repo_arg

    # -- the four questions ----------------------------------------------------------------

    def find(self, branch: str) -> PullRequest | None:
        raise NotImplementedError

    def create(self, proposal: Proposal) -> PullRequest:
        raise NotImplementedError

    def edit(self, request: PullRequest, proposal: Proposal) -> None:
        raise NotImplementedError

    def auth_args(self) -> list[str]:
        return ["auth", "status"]

    # -- shared ----------------------------------------------------------------------------

    def ensure_ready(self) -> None:
        """The CLI is installed and logged in, or a clear error before anything is pushed."""
        if shutil.which(self.program) is None:
            raise BadInput(f"'{self.program}' ({self.label} tool of {self.name}) is not "
                           "installed", hint=f"install it and log in ('{self.program} auth "
                                             "login'), or push without --pr")
        code, out, err = procs.capture([self.program, *self.auth_args()], self.root)
        if code != 0:
            raise BadInput(f"'{self.program}' is not logged in: {_first_line(err or out)}",
                           hint=f"run '{self.program} auth login', then push again")

    def run(self, *args: str) -> tuple[int, str, str]:
        repo = ["--repo", self.repo_arg] if self.repo_arg else []
        return procs.capture([self.program, *args, *repo], self.root)

    def checked(self, *args: str) -> str:
        code, out, err = self.run(*args)
        if code != 0:
            raise ForgeFailed(f"'{self.program} {' '.join(args[:2])}' failed: "
                              f"{_first_line(err or out)}")
        return out


class GitHub(Forge):
    name, program, label = "github", "gh", "pull request"

    def find(self, branch: str) -> PullRequest | None:
        code, out, err = self.run("pr", "view", branch, "--json", "number,url,state,baseRefName")
        if code != 0:
            if "no pull requests found" in (err + out).lower():
                return None
            raise ForgeFailed(f"'gh pr view {branch}' failed: {_first_line(err or out)}")
        data = _json_object(out, "gh pr view")
        return PullRequest(int(data["number"]), str(data["url"]), str(data["state"]).lower(),
                           str(data.get("baseRefName", "")))

    def create(self, proposal: Proposal) -> PullRequest:
        out = self.checked("pr", "create", "--head", proposal.branch, "--base", proposal.base,
                           "--title", proposal.title, "--body", proposal.body,
                           *(["--draft"] if proposal.draft else []))
        url = _url_in(out, r"/pull/(\d+)")
        return PullRequest(int(url[1]), url[0], "open", proposal.base)

    def edit(self, request: PullRequest, proposal: Proposal) -> None:
        self.checked("pr", "edit", str(request.number), "--base", proposal.base,
                     "--title", proposal.title, "--body", proposal.body)


class GitLab(Forge):
    name, program, label = "gitlab", "glab", "merge request"

    def find(self, branch: str) -> PullRequest | None:
        out = self.checked("mr", "list", "--source-branch", branch, "--all", "--output", "json")
        found = json.loads(out or "[]")
        if not isinstance(found, list) or not found:
            return None
        newest = max(found, key=lambda mr: int(mr.get("iid", 0)))
        state = {"opened": "open"}.get(str(newest.get("state")), str(newest.get("state")))
        return PullRequest(int(newest["iid"]), str(newest["web_url"]), state,
                           str(newest.get("target_branch", "")))

    def create(self, proposal: Proposal) -> PullRequest:
        out = self.checked("mr", "create", "--source-branch", proposal.branch,
                           "--target-branch", proposal.base, "--title", proposal.title,
                           "--description", proposal.body, "--yes",
                           *(["--draft"] if proposal.draft else []))
        url = _url_in(out, r"/merge_requests/(\d+)")
        return PullRequest(int(url[1]), url[0], "open", proposal.base)

    def edit(self, request: PullRequest, proposal: Proposal) -> None:
        self.checked("mr", "update", str(request.number), "--target-branch", proposal.base,
                     "--title", proposal.title, "--description", proposal.body, "--yes")


def forge_for(name: str | None, remote: str, url: str, root: Path) -> Forge:
    """The forge named, or the one the remote's URL points at."""
    chosen = name or next((f for f in FORGES if f in url.lower()), None)
    if chosen is None:
        raise BadInput(f"cannot tell which forge hosts remote '{remote}' ({url})",
                       hint="pass --forge github or --forge gitlab")
    if chosen == "github":
        return GitHub(root, _github_repo(url))
    return GitLab(root, url if re.match(r"[a-z+]+://|[\w.-]+@", url) else None)


def _github_repo(url: str) -> str | None:
    """HOST/OWNER/REPO for gh's --repo, from an https, ssh or scp-like URL; None otherwise."""
    match = re.match(r"(?:[a-z+]+://)?(?:[^@/]+@)?([^/:]+)[:/]([^/]+)/([^/]+?)(?:\.git)?/?$", url)
    if not match or "." not in match.group(1):
        return None
    return "/".join(match.groups())


def _url_in(out: str, number: str) -> tuple[str, str]:
    match = re.search(r"(https?://\S+?" + number + r")\b", out)
    if not match:
        raise ForgeFailed(f"no link to the new request in the answer: {_first_line(out)}")
    return match.group(1), match.group(2)


def _json_object(out: str, what: str) -> dict[str, Any]:
    try:
        data = json.loads(out)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ForgeFailed(f"'{what}' answered something that is not JSON: {_first_line(out)}")
    return data


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "no output")
