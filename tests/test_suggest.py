"""``wtr init --suggest``: streams proposed file by file from what the history changes together."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.gitrepo import Repo, make_repo, run_wtr
from tests.history import add_history
from worktree_runner import git
from worktree_runner.plan.patterns import compile_patterns
from worktree_runner.plan.suggest import HotPath, gather_evidence, kind_pattern, modules_with_tests

BASE_FILES = {
    "README.md": "hello\n",
    "src/pkg/__init__.py": "\n",
    "src/pkg/core.py": "\n",
    "src/pkg/cli.py": "\n",
    "src/pkg/net.py": "\n",
    "src/pkg/util.py": "\n",
    "tests/test_core.py": "\n",
    "tests/test_cli.py": "\n",
    "tests/test_net.py": "\n",
    "tests/test_util.py": "\n",
    "docs/index.rst": "\n",
    "docs/cli.rst": "\n",
    "CHANGES.rst": "\n",
    "poetry.lock": "\n",
    "news/.gitignore": "!.gitignore\n",
    "setup.py": "\n",
    ".DS_Store": "\n",
}


def project_history() -> list[list[str]]:
    """96 commits in four kinds of work: the core with its test; the command line with its
    test and its page of docs; the network code with its test and the lockfile; the docs'
    index. The changelog, the package's ``__init__`` and a news fragment come with many of
    the first three. ``util.py`` and its test change only apart (tied by name alone);
    ``setup.py`` and ``.DS_Store`` change early, then are deleted."""
    commits: list[list[str]] = []
    for i in range(96):
        kind = i % 4
        paths = [["src/pkg/core.py", "tests/test_core.py"],
                 ["src/pkg/cli.py", "tests/test_cli.py", "docs/cli.rst"],
                 ["src/pkg/net.py", "tests/test_net.py", "poetry.lock"],
                 ["docs/index.rst"]][kind]
        if kind < 3 and (i // 4) % 2 == 0:
            paths = [*paths, "CHANGES.rst"]
        if kind < 3 and (i // 4) % 3 == 0:
            paths = [*paths, "src/pkg/__init__.py"]
        if kind < 2 and (i // 4) % 2 == 1:
            paths = [*paths, f"news/{i}.bugfix.rst"]
        if i < 12 and kind == 0:
            paths = [*paths, "setup.py", ".DS_Store"]
        if i % 16 == 3:
            paths = ["src/pkg/util.py"] if i % 32 == 3 else ["tests/test_util.py"]
        commits.append(paths)
    return commits


@pytest.fixture
def project(tmp_path: Path) -> Repo:
    repo = make_repo(tmp_path / "repo", BASE_FILES)
    history = project_history()
    add_history(repo, history[:48])
    repo.git("rm", "-q", "setup.py", ".DS_Store")
    repo.git("commit", "-q", "-m", "drop setup.py")
    add_history(repo, history[48:])
    return repo


def suggest(repo: Repo, *args: str) -> tuple[dict[str, Any], str, str]:
    result = run_wtr("init", "--suggest", *args, cwd=repo.path)
    assert result.returncode == 0, result.stdout + result.stderr
    text = (repo.path / "worktree-plan.yaml").read_text()
    loaded = yaml.safe_load(text)
    assert isinstance(loaded, dict)
    return loaded, text, result.stdout


def checked(repo: Repo) -> dict[str, Any]:
    result = run_wtr("check", "--json", "worktree-plan.yaml", cwd=repo.path)
    assert result.returncode == 0, result.stdout + result.stderr
    doc: dict[str, Any] = result.json()
    assert doc["valid"] is True
    return doc


def owner_of(plan: dict[str, Any], path: str) -> list[str]:
    """The streams whose patterns match ``path`` (tracked or not)."""
    return [name for name, spec in plan["streams"].items()
            if compile_patterns(spec["files"]).match_file(path)]


def test_a_module_goes_with_its_tests_and_each_kind_of_work_gets_a_stream(
        project: Repo) -> None:
    plan, text, out = suggest(project)
    core, cli, net = (owner_of(plan, f"src/pkg/{m}.py") for m in ("core", "cli", "net"))
    assert owner_of(plan, "tests/test_core.py") == core
    assert owner_of(plan, "tests/test_cli.py") == owner_of(plan, "docs/cli.rst") == cli
    assert owner_of(plan, "tests/test_net.py") == net
    assert len({*core, *cli, *net}) == 3  # one stream each: their work never mixes
    # tied by their names alone: no commit changed both
    assert owner_of(plan, "tests/test_util.py") == owner_of(plan, "src/pkg/util.py")
    assert {*core, *cli, *net} == {"core", "cli", "net"}  # named from what they hold
    assert owner_of(plan, "docs/index.rst") == ["docs"]
    assert out.startswith("5 streams suggested from 98 changes\n")
    assert text.startswith("# Suggested by 'wtr init --suggest' from the last 98 changes of "
                           "main\n# (a change: a commit of its first-parent line, a merged "
                           "branch counting as one):\n")


def test_hot_files_are_shared_with_the_reason(project: Repo) -> None:
    plan, text, _ = suggest(project)
    # The changelog is shared as its kind: the project may move to CHANGES.md later.
    assert plan["shared"] == ["CHANGES.*", "news/**", "src/pkg/__init__.py"]
    assert '  - "CHANGES.*"    # changelog: changed by 37 of 98 changes, with the files ' \
           'of 3 streams (as CHANGES.*: the same file in another format later)\n' in text
    assert '  - "src/pkg/__init__.py"    # registry: changed by 25 of 98 changes, with the ' \
           'files of 3 streams\n' in text
    assert '  - "news/**"    # news fragments: changed by 25 of 98 changes, with the files ' \
           'of 2 streams\n' in text
    for path in ("CHANGES.rst", "CHANGES.md", "src/pkg/__init__.py", "news/.gitignore",
                 "news/9.bugfix.rst"):
        assert owner_of(plan, path) == [], path
    # The lockfile changes with one stream only: it is that stream's, not shared.
    assert owner_of(plan, "poetry.lock") == owner_of(plan, "src/pkg/net.py")
    assert "    # shared: [\"CHANGES.*\", \"news/**\", \"src/pkg/__init__.py\"]   # changed " \
           "with these files" in text


def test_only_paths_of_the_base_and_new_files_are_owned(project: Repo) -> None:
    plan, text, _ = suggest(project)
    assert "setup.py" not in text and ".DS_Store" not in text
    assert not {"setup", "DS_Store", "CHANGES", "CHANGES.rst"} & set(plan["streams"])
    # files created later are owned too, by the stream holding their folder
    assert len(owner_of(plan, "src/pkg/fresh.py")) == 1
    assert len(owner_of(plan, "docs/new-page.rst")) == 1
    assert len(owner_of(plan, "newtool/run.sh")) == 1  # a new top-level folder
    # and new top-level files (a pyproject.toml, a uv.lock), by the stream holding the root
    root = owner_of(plan, "README.md")
    assert len(root) == 1
    assert owner_of(plan, "pyproject.toml") == owner_of(plan, "uv.lock") == root
    checked(project)
    doc = checked(project)
    assert doc["unowned_files"] == []
    assert doc["overlaps"] == [] and doc["pattern_overlaps"] == []
    assert doc["coupling"]["pairs"] == [] and doc["coupling"]["hot_files"] == []


def test_asked_for_fewer_streams(project: Repo) -> None:
    plan, _, out = suggest(project, "--streams", "2")
    assert len(plan["streams"]) == 2
    assert out.startswith("2 streams suggested")
    assert owner_of(plan, "tests/test_core.py") == owner_of(plan, "src/pkg/core.py")
    checked(project)
    (project.path / "worktree-plan.yaml").unlink()
    plan, _, out = suggest(project, "--streams", "1")
    assert out.startswith("1 stream suggested from 98 changes\n")
    assert len(plan["streams"]) == 1
    checked(project)


def test_a_hot_file_that_belongs_to_one_stream_stays_in_it(tmp_path: Path) -> None:
    """A file changed by most commits, always with one area, is that area's busiest file,
    not a shared one."""
    repo = make_repo(tmp_path / "repo", {"README.md": "hello\n"})
    add_history(repo, [[f"alpha/a{i % 3}.py", "alpha/hub.py"] if i % 2 else [f"beta/b{i % 3}.py"]
                       for i in range(60)])
    plan, _, _ = suggest(repo)
    assert "shared" not in plan
    assert owner_of(plan, "alpha/hub.py") == owner_of(plan, "alpha/a1.py")
    assert owner_of(plan, "alpha/a1.py") != owner_of(plan, "beta/b1.py")
    assert checked(repo)["unowned_files"] == []


def test_the_root_stream_owns_new_top_level_files_but_not_the_others_files(
        tmp_path: Path) -> None:
    """The stream holding the top level owns it with '*': files created there later are
    owned, a top-level file another stream owns is excluded without losing the root's own
    files of the same name deeper down, and 'wtr check' finds no overlap."""
    repo = make_repo(tmp_path / "repo", {"README.md": "x\n"})
    alpha_work = ["alpha/a.py", "config.yaml"]
    beta_work = ["README.md", "tox.ini"]
    add_history(repo, [[*alpha_work, *(["alpha/config.yaml"] * (i % 4 == 1))] if i % 2 else
                       [*beta_work, f"beta/b{i % 3}.py", *(["beta/sub/config.yaml"] * (i % 4 == 0))]
                       for i in range(40)])
    plan, _, _ = suggest(repo)
    alpha, beta = owner_of(plan, "alpha/a.py"), owner_of(plan, "beta/b1.py")
    assert len(alpha) == len(beta) == 1 and alpha != beta
    assert owner_of(plan, "config.yaml") == alpha
    assert owner_of(plan, "beta/sub/config.yaml") == beta  # the root's, though named alike
    assert owner_of(plan, "alpha/config.yaml") == alpha
    assert owner_of(plan, "README.md") == owner_of(plan, "tox.ini") == beta
    assert owner_of(plan, "pyproject.toml") == owner_of(plan, "ops/deploy.sh") == beta
    doc = checked(repo)
    assert doc["overlaps"] == [] and doc["unowned_files"] == []


def test_the_projects_machinery_is_a_stream_of_its_own(tmp_path: Path) -> None:
    """CI, tool configs and pins change alone (a CI bump) and with code (a fix that
    touches a workflow too): they form one 'tooling' stream, and the changes that touch
    them with code neither tie the code streams together nor pull the tooling into one."""
    repo = make_repo(tmp_path / "repo", {"README.md": "x\n", ".gitignore": "*.pyc\n"})
    machinery = [".github/workflows/test.yml", ".pre-commit-config.yaml", "noxfile.py",
                 "requirements/dev.txt", "pyproject.toml"]
    history = []
    for i in range(90):
        kind, n = i % 3, i // 3 % 4
        paths = [[machinery[i % 5]],
                 [f"alpha/a{n}.py", f"tests/test_a{n}.py"],
                 [f"beta/b{n}.py", f"tests/test_b{n}.py"]][kind]
        if kind and i % 5 == 1:  # code work that also touches the machinery
            paths = [*paths, machinery[i // 5 % 5]]
        history.append(paths)
    add_history(repo, history)
    plan, _, _ = suggest(repo)
    tooling = plan["streams"]["tooling"]
    assert owner_of(plan, "alpha/a1.py") != owner_of(plan, "beta/b1.py")
    for path in [*machinery, ".gitignore", ".github/dependabot.yml", "tox.ini"]:
        assert owner_of(plan, path) == ["tooling"], path  # new ones at the top level too
    assert owner_of(plan, "tests/test_a1.py") == owner_of(plan, "alpha/a1.py") != ["tooling"]
    assert "*" in tooling["files"]  # the root stream: it holds most top-level files
    assert checked(repo)["overlaps"] == []
    doc = gather_evidence(git.open_repository(repo.path), repo.head()).to_json()
    assert set(doc["project_files"]) == {*machinery, ".gitignore"}
    assert not any(p in machinery for p in doc["modules_with_tests"])


def test_a_kind_pattern_only_when_it_takes_in_no_other_file() -> None:
    changelog = HotPath("CHANGES.rst", "changelog", 30)
    assert kind_pattern(changelog, ["CHANGES.rst", "src/a.py"]) == "CHANGES.*"
    assert kind_pattern(changelog, ["CHANGES.rst", "CHANGES.py"]) is None
    assert kind_pattern(HotPath("poetry.lock", "lockfile", 9), ["poetry.lock"]) == "*.lock"
    assert kind_pattern(HotPath("package-lock.json", "lockfile", 9), []) is None
    assert kind_pattern(HotPath("docs/CHANGES.rst", "changelog", 9), []) is None
    assert kind_pattern(HotPath("src/core.py", "hot", 9), []) is None
    bare = HotPath("CHANGES", "changelog", 30)  # no extension: its kind must take it in
    assert kind_pattern(bare, ["CHANGES", "src/a.py"]) == "CHANGES*"
    assert kind_pattern(bare, ["CHANGES", "CHANGES-1.0.txt"]) is None


def test_a_changelog_without_an_extension_stays_shared(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"CHANGES": "x\n", "src/a.py": "\n",
                                         "docs/index.rst": "\n"})
    add_history(repo, [["src/a.py", "CHANGES"], ["docs/index.rst", "CHANGES"]] * 6)
    plan, text, _ = suggest(repo)
    assert plan["shared"] == ["CHANGES*"]
    assert "(as CHANGES*: the same file in another format later)" in text
    assert owner_of(plan, "CHANGES") == owner_of(plan, "CHANGES.rst") == []
    assert checked(repo)["overlaps"] == []


def test_a_history_of_hot_files_and_deleted_paths_only_falls_back_to_folders(
        tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"CHANGES.md": "x\n"})
    add_history(repo, [["CHANGES.md"], ["old/gone.py", "CHANGES.md"]] * 5)
    repo.git("rm", "-q", "old/gone.py")
    repo.git("commit", "-q", "-m", "drop old/")
    plan, _, out = suggest(repo)
    assert out.startswith("note: the 12 changes read in the history of main changed only hot "
                          "files (changelogs, lockfiles, news) or files gone since: nothing "
                          "to group, so one stream per top-level folder\n")
    assert list(plan["streams"]) == ["main"]  # the whole repository: no folder is left
    checked(repo)


def test_the_evidence_for_other_planners(project: Repo) -> None:
    doc = gather_evidence(git.open_repository(project.path), project.head()).to_json()
    assert (doc["commits"], doc["files"]) == (98, 39)  # 24 of them news fragments
    assert doc["modules_with_tests"] == {
        "src/pkg/cli.py": ["tests/test_cli.py"], "src/pkg/core.py": ["tests/test_core.py"],
        "src/pkg/net.py": ["tests/test_net.py"], "src/pkg/util.py": ["tests/test_util.py"]}
    assert {(h["path"], h["kind"], h["changes"]) for h in doc["hot"]} >= {
        ("CHANGES.rst", "changelog", 37), ("src/pkg/__init__.py", "registry", 25),
        ("news/**", "news fragments", 25), ("poetry.lock", "lockfile", 25)}
    assert ["src/pkg/core.py"] in [g["units"] for g in doc["groups"]]
    assert all(g["alone"] <= g["touched"] for g in doc["groups"])


def test_modules_with_tests_pairs_by_name() -> None:
    units = modules_with_tests([
        "src/app/core.py", "tests/test_core.py", "pkg/cli.go", "pkg/cli_test.go",
        "web/view.ts", "web/view.test.ts", "web/view.spec.ts", "tests/test_other.py",
        "a/util.py", "b/util.py", "b/tests/test_util.py",
    ])
    assert units["src/app/core.py"] == ("src/app/core.py", "tests/test_core.py")
    assert units["pkg/cli.go"] == ("pkg/cli.go", "pkg/cli_test.go")
    assert units["web/view.ts"] == ("web/view.ts", "web/view.spec.ts", "web/view.test.ts")
    assert units["tests/test_other.py"] == ("tests/test_other.py",)
    assert units["b/util.py"] == ("b/util.py", "b/tests/test_util.py")  # the nearest
    assert units["a/util.py"] == ("a/util.py",)


def test_never_overwrites(project: Repo) -> None:
    target = project.path / "worktree-plan.yaml"
    target.write_text("mine\n")
    result = run_wtr("init", "--suggest", cwd=project.path)
    assert result.returncode == 2
    assert result.stderr == f"wtr: {target} already exists; pass another PATH to 'wtr init', " \
                            "or remove it first\n"
    assert target.read_text() == "mine\n"


def test_no_history_says_so_and_suggests_folders(repo: Repo) -> None:
    plan, _, out = suggest(repo)
    assert out.startswith("note: only 1 change usable in the history of main (fewer than 5): "
                          "nothing to learn from, so one stream per top-level folder\n")
    assert list(plan["streams"]) == ["docs", "src"]
    checked(repo)


def test_since_and_commits_bound_what_is_read(project: Repo) -> None:
    _, _, out = suggest(project, "--commits", "40", "worktree-plan.yaml")
    assert out.split("\n")[0].endswith(" streams suggested from 40 changes")
    (project.path / "worktree-plan.yaml").unlink()
    _, _, out = suggest(project, "--since", "2099-01-01")
    assert out.startswith("note: only 0 changes usable")


def test_a_merged_branch_is_one_change(tmp_path: Path) -> None:
    """Each branch changes alpha/a.py, then beta/b.py, in two commits: commit by commit
    the two never change together, but each merge brings both, as one piece of work."""
    repo = make_repo(tmp_path / "repo", {"alpha/a.py": "\n", "beta/b.py": "\n",
                                         "gamma/c.py": "\n"})
    for n in range(6):
        repo.git("checkout", "-q", "-b", f"topic-{n}")
        repo.commit({"alpha/a.py": f"{n}\n"})
        repo.commit({"beta/b.py": f"{n}\n"})
        repo.git("checkout", "-q", "main")
        repo.git("merge", "-q", "--no-ff", "-m", f"merge topic-{n}", f"topic-{n}")
        repo.commit({"gamma/c.py": f"{n}\n"})
    plan, text, out = suggest(repo)
    assert out.startswith("2 streams suggested from 13 changes\n")  # 6 merges, 7 commits
    assert owner_of(plan, "alpha/a.py") == owner_of(plan, "beta/b.py")
    assert owner_of(plan, "gamma/c.py") != owner_of(plan, "alpha/a.py")
    assert "# 7 of 13 changes touched these 2 files, 6 of them nothing else\n" in text
    # checked as 'wtr check' reads the history, commit by commit: nothing to add
    assert "conflicts_with" not in text
    warnings = checked(repo)["warnings"]
    assert [w for w in warnings if "placeholder prompt" not in w] == [], warnings
    cache = Path(repo.git("rev-parse", "--path-format=absolute", "--git-common-dir"))
    head = repo.head()
    assert sorted(f.name for f in (cache / "worktree-runner" / "cache").glob("*.json")) == [
        f"cochange-{head}-1000-50-first-parent.json", f"cochange-{head}-1000-50.json"]


@pytest.mark.parametrize(("args", "message"), [
    (["--suggest", "--streams", "api:src/api/**"],
     "wtr: --streams 'api:src/api/**': with --suggest, give the number of streams; "
     "for example: wtr init --suggest --streams 4\n"),
    (["--suggest", "--streams", "0"],
     "wtr: --streams '0': with --suggest, give the number of streams; "
     "for example: wtr init --suggest --streams 4\n"),
    (["--suggest", "--from-dirs"], "wtr: use --from-dirs alone, without --streams or --suggest\n"),
    (["--suggest", "--since", "soonish"],
     "wtr: cannot read the date 'soonish'; write a date such as 2024-05-01 or an age such "
     "as 6.months\n"),
])
def test_bad_arguments(project: Repo, args: list[str], message: str) -> None:
    result = run_wtr("init", *args, cwd=project.path)
    assert result.returncode == 2
    assert result.stderr == message
    assert not (project.path / "worktree-plan.yaml").exists()
