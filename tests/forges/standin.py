#!/usr/bin/env python3
"""A stand-in for GitHub's `gh` and GitLab's `glab`: answers the calls `wtr push` and
`wtr clean` make the way the real CLIs do, keeps its pull requests in a JSON file, and
records every argument vector.

Usage: standin.py gh|glab ARGS...   (tests put `gh`/`glab` wrappers on PATH)
FORGE_DB=FILE           the requests, and a log of calls: {"calls": [[...]], "requests": [...]}
FORGE_LOGGED_OUT=1      `auth status` fails as when nobody is logged in
FORGE_URL=URL           the repository's web address (default https://github.com/team/repo)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

DB = Path(os.environ["FORGE_DB"])


def load() -> dict:
    return json.loads(DB.read_text()) if DB.exists() else {"calls": [], "requests": []}


def option(args: list[str], name: str, default: str | None = None) -> str | None:
    return args[args.index(name) + 1] if name in args else default


def fail(message: str) -> None:
    print(message, file=sys.stderr)
    sys.exit(1)


def newest(db: dict, branch: str) -> dict | None:
    found = [r for r in db["requests"] if r["head"] == branch]
    return max(found, key=lambda r: r["number"]) if found else None


def github(db: dict, args: list[str], base_url: str) -> None:
    if args[:2] == ["auth", "status"]:
        if os.environ.get("FORGE_LOGGED_OUT"):
            fail("You are not logged into any GitHub hosts. To log in, run: gh auth login")
        print("Logged in to github.com account tester")
    elif args[:2] == ["pr", "view"]:
        found = newest(db, args[2])
        if found is None:
            fail(f'no pull requests found for branch "{args[2]}"')
        fields = option(args, "--json", "").split(",")
        names = {"number": "number", "url": "url", "baseRefName": "base", "title": "title"}
        answer = {f: found["state"].upper() if f == "state" else found[names[f]] for f in fields}
        print(json.dumps(answer))
    elif args[:2] == ["pr", "create"]:
        head = option(args, "--head")
        found = newest(db, head)
        if found and found["state"] == "open":
            fail(f'a pull request for branch "{head}" into branch "{found["base"]}" '
                 f'already exists:\n{found["url"]}')
        number = len(db["requests"]) + 1
        request = {"number": number, "head": head, "base": option(args, "--base"),
                   "title": option(args, "--title"), "body": option(args, "--body"),
                   "draft": "--draft" in args, "state": "open",
                   "url": f"{base_url}/pull/{number}"}
        db["requests"].append(request)
        print(f"Creating pull request for {head} into {request['base']}\n")
        print(request["url"])
    elif args[:2] == ["pr", "edit"]:
        request = next(r for r in db["requests"] if str(r["number"]) == args[2])
        request.update(base=option(args, "--base", request["base"]),
                       title=option(args, "--title", request["title"]),
                       body=option(args, "--body", request["body"]))
        print(request["url"])
    else:
        fail(f"unknown command {args}")


def gitlab(db: dict, args: list[str], base_url: str) -> None:
    if args[:2] == ["auth", "status"]:
        if os.environ.get("FORGE_LOGGED_OUT"):
            fail("No token provided. Run 'glab auth login'")
        print("Logged in to gitlab.com as tester")
    elif args[:2] == ["mr", "list"]:
        branch = option(args, "--source-branch")
        states = {"open": "opened", "merged": "merged", "closed": "closed"}
        print(json.dumps([{"iid": r["number"], "web_url": r["url"], "state": states[r["state"]],
                           "target_branch": r["base"], "source_branch": r["head"]}
                          for r in db["requests"] if r["head"] == branch]))
    elif args[:2] == ["mr", "create"]:
        head = option(args, "--source-branch")
        number = len(db["requests"]) + 1
        request = {"number": number, "head": head, "base": option(args, "--target-branch"),
                   "title": option(args, "--title"), "body": option(args, "--description"),
                   "draft": "--draft" in args, "state": "open",
                   "url": f"{base_url}/-/merge_requests/{number}"}
        db["requests"].append(request)
        print(f"Creating merge request for {head} into {request['base']} in team/repo\n")
        print(f"!{number} {request['title']}\n {request['url']}")
    elif args[:2] == ["mr", "update"]:
        request = next(r for r in db["requests"] if str(r["number"]) == args[2])
        request.update(base=option(args, "--target-branch", request["base"]),
                       title=option(args, "--title", request["title"]),
                       body=option(args, "--description", request["body"]))
        print(request["url"])
    else:
        fail(f"unknown command {args}")


def main() -> None:
    program, args = sys.argv[1], sys.argv[2:]
    db = load()
    db["calls"].append([program, *args])
    default = "https://github.com/team/repo" if program == "gh" else "https://gitlab.com/team/repo"
    try:
        (github if program == "gh" else gitlab)(db, args, os.environ.get("FORGE_URL", default))
    finally:
        DB.write_text(json.dumps(db, indent=1))


if __name__ == "__main__":
    main()
