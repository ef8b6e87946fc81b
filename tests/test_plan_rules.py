"""Every plan rule of docs/plan.md, checked through the real ``wtr check PLAN``.

A broken rule must exit 2 with a first stderr line ``wtr: plan ... is invalid (N problems)``
and one line per problem, ``PLAN:LINE: KEY.PATH: message``, never a traceback. Each rule
has a test through the command line; further variants of a rule go through ``parse_plan``
in-process (the same problems, rendered the same way) to keep the suite fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.gitrepo import Repo, Result, run_wtr
from worktree_runner.errors import PlanInvalid
from worktree_runner.plan.load import parse_plan

HEAD = 'version: 1\nagent: {command: ["python3", "agent.py", "{prompt_file}"]}\nstreams:\n'


def with_streams(body: str) -> str:
    """A plan whose streams (indented by two spaces, from line 4) are ``body``."""
    return HEAD + body


def check(repo: Repo, text: str) -> tuple[Path, Result]:
    path = repo.write_plan(text)
    return path, run_wtr("check", path, cwd=repo.path)


def problems(repo: Repo, text: str) -> list[str]:
    """The problems ``wtr check`` reports, each as ``LINE: KEY.PATH: message``."""
    path, result = check(repo, text)
    first, *rest = result.error_lines()
    noun = "problem" if len(rest) == 1 else "problems"
    assert first.startswith(f"wtr: plan {path} is invalid ({len(rest)} {noun})"), first
    prefix = f"  {path}:"
    assert all(line.startswith(prefix) for line in rest), rest
    return [line.removeprefix(prefix) for line in rest]


def only_problem(repo: Repo, text: str) -> str:
    found = problems(repo, text)
    assert len(found) == 1, found
    return found[0]


def parsed_problems(text: str) -> list[str]:
    """What ``problems`` would report, without a subprocess."""
    with pytest.raises(PlanInvalid) as caught:
        parse_plan(text, Path("plan.yaml"))
    return [p.render("plan.yaml").removeprefix("plan.yaml:") for p in caught.value.problems]


def parsed_problem(text: str) -> str:
    found = parsed_problems(text)
    assert len(found) == 1, found
    return found[0]


def assert_valid(repo: Repo, text: str) -> Result:
    _, result = check(repo, text)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.rstrip().endswith("plan is valid")
    return result


# -- dependencies --------------------------------------------------------------------------


def test_dependency_cycle_names_the_cycle(repo: Repo) -> None:
    text = with_streams(
        "  a: {files: [src/api/**], depends_on: [b]}\n"
        "  b: {files: [src/db/**], depends_on: [a]}\n"
    )
    assert only_problem(repo, text) == "4: streams.a.depends_on: dependency cycle: a -> b -> a"


def test_longer_dependency_cycle_is_named_in_full() -> None:
    text = with_streams(
        "  free: {files: [docs/**]}\n"
        "  a: {files: [src/api/**], depends_on: [c]}\n"
        "  b: {files: [src/db/**], depends_on: [a]}\n"
        "  c: {files: [src/ui/**], depends_on: [b, free]}\n"
    )
    assert parsed_problem(text) == "5: streams.a.depends_on: dependency cycle: a -> c -> b -> a"


def test_unknown_dependency_names_it_and_suggests(repo: Repo) -> None:
    text = with_streams(
        "  db: {files: [src/db/**]}\n"
        "  api: {files: [src/api/**], depends_on: [dbb]}\n"
    )
    assert only_problem(repo, text) == (
        "5: streams.api.depends_on: unknown stream 'dbb' (did you mean 'db'?)"
    )


def test_unknown_conflicts_with_is_an_error() -> None:
    text = with_streams("  api: {files: [src/api/**], conflicts_with: [nowhere]}\n")
    assert parsed_problem(text) == "4: streams.api.conflicts_with: unknown stream 'nowhere'"


def test_self_dependency(repo: Repo) -> None:
    text = with_streams("  api:\n    files: [src/api/**]\n    depends_on: [api]\n")
    assert only_problem(repo, text) == "6: streams.api.depends_on: stream 'api' cannot name itself"


def test_self_conflict() -> None:
    text = with_streams("  api:\n    files: [src/api/**]\n    conflicts_with: api\n")
    assert parsed_problem(text) == (
        "6: streams.api.conflicts_with: stream 'api' cannot name itself"
    )


# -- keys ----------------------------------------------------------------------------------


def test_duplicate_stream_key_gives_both_lines(repo: Repo) -> None:
    text = with_streams(
        "  api: {files: [src/api/**]}\n"
        "  db: {files: [src/db/**]}\n"
        "  api: {files: [src/ui/**]}\n"
    )
    assert only_problem(repo, text) == "6: streams.api: duplicate key (first at line 4)"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (HEAD.replace("streams:", "version: 1\nstreams:") + "  a: {files: [docs/**]}\n",
         "3: version: duplicate key (first at line 1)"),
        (with_streams("  a:\n    files: [docs/**]\n    files: [src/**]\n"),
         "6: streams.a.files: duplicate key (first at line 5)"),
        (with_streams("  a: {files: [docs/**], agent: {timeout: 1, timeout: 2}}\n"),
         "4: streams.a.agent.timeout: duplicate key (first at line 4)"),
    ],
    ids=["top", "stream", "agent"],
)
def test_other_duplicate_keys(text: str, expected: str) -> None:
    assert parsed_problem(text) == expected


def test_unknown_key_gives_its_dotted_path(repo: Repo) -> None:
    text = with_streams("  api:\n    files: [src/api/**]\n    dependson: [db]\n")
    assert only_problem(repo, text) == (
        "6: streams.api.dependson: unknown key (did you mean 'depends_on'?)"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (with_streams("  api:\n    files: [src/api/**]\n    agent: {timout: 10}\n"),
         "6: streams.api.agent.timout: unknown key (did you mean 'timeout'?)"),
        (HEAD + "  api: {files: [src/api/**]}\nverfy: [pytest]\n",
         "5: verfy: unknown key (did you mean 'verify'?)"),
        (with_streams("  api: {files: [docs/**], colour: blue}\n"),
         "4: streams.api.colour: unknown key"),
    ],
    ids=["agent", "top", "no-suggestion"],
)
def test_other_unknown_keys(text: str, expected: str) -> None:
    assert parsed_problem(text) == expected


@pytest.mark.parametrize("text", [with_streams("  ? [a]\n  : {files: [x]}\n"),
                                  "version: 1\n<<: {name: x}\n"])
def test_keys_must_be_plain_names(text: str) -> None:
    assert "keys must be plain names (no lists, maps or '<<')" in " ".join(parsed_problems(text))


# -- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../x", "-x", "a..b", "x.lock", "a" * 65])
def test_bad_stream_name(repo: Repo, name: str) -> None:
    text = with_streams(f"  {json.dumps(name)}: {{files: [docs/**]}}\n")
    line, where, message = only_problem(repo, text).split(": ", 2)
    assert (line, where) == ("4", f"streams.{name}")
    assert message.startswith(f"'{name}' is not a valid name")


@pytest.mark.parametrize("name", ["x.", "a/b", "é", " a", "a b", ".x", "_x"])
def test_more_bad_stream_names(name: str) -> None:
    text = with_streams(f"  {json.dumps(name)}: {{files: [docs/**]}}\n")
    assert parsed_problem(text).startswith(f"4: streams.{name}: '{name}' is not a valid name")


def test_good_stream_names_including_64_characters(repo: Repo) -> None:
    names = ["a" * 64, "9lives", "A_b-c.d", "x.locked", "1"]
    body = "".join(f"  {name}: {{files: [area{i}/**]}}\n" for i, name in enumerate(names))
    result = assert_valid(repo, with_streams(body))
    assert f"  1. {', '.join(names)}" in result.stdout


# -- patterns ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("/etc/passwd", "is an absolute path"),
        ("../x", "has a '..' segment"),
        ("src/../../x", "has a '..' segment"),
    ],
)
def test_pattern_escaping_the_repository(repo: Repo, pattern: str, reason: str) -> None:
    text = with_streams(f"  api:\n    files: [src/api/**, {json.dumps(pattern)}]\n")
    assert only_problem(repo, text).startswith(f"5: streams.api.files: '{pattern}' {reason}")


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [("!../x", "has a '..' segment"), ("C:/x", "is an absolute path"),
     ("src\\..\\..\\x", "has a '..' segment"), ("..", "has a '..' segment")],
)
def test_more_patterns_escaping_the_repository(pattern: str, reason: str) -> None:
    text = with_streams(f"  api:\n    files: [{json.dumps(pattern)}]\n")
    assert parsed_problem(text).startswith(f"5: streams.api.files: '{pattern}' {reason}")


def test_patterns_with_dots_inside_names_stay_inside() -> None:
    text = with_streams("  api: {files: ['src/..hidden/**', 'a...b', '*.py']}\n")
    assert parse_plan(text, Path("p.yaml")).stream("api").files == (
        "src/..hidden/**", "a...b", "*.py"
    )


def test_shared_and_copy_patterns_must_stay_inside_too() -> None:
    text = HEAD.replace("streams:", 'shared: ["/abs"]\ncopy: ["../.env"]\nstreams:')
    found = parsed_problems(text + "  api: {files: [src/api/**]}\n")
    assert [p.split(": ")[:2] for p in found] == [["3", "shared"], ["4", "copy"]]


# -- overlaps (checked against the tracked files of the base) -----------------------------

OVERLAPPING = "  wide: {files: [src/**]}\n  narrow: {files: [src/api/**]%s}\n"


def test_overlap_between_unordered_streams_names_file_and_both_streams(repo: Repo) -> None:
    _, result = check(repo, with_streams(OVERLAPPING % ""))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert (
        "error: streams.narrow.files: 'src/api/orders.py' is owned by both 'wide' and "
        "'narrow', which may run at the same time" in result.stdout
    )
    assert result.stdout.rstrip().endswith("plan is invalid")


def test_overlap_is_reported_on_stderr_like_every_broken_rule(repo: Repo) -> None:
    path, result = check(repo, with_streams(OVERLAPPING % ""))
    lines = result.error_lines()
    assert any(f"{path}:5: streams.narrow.files: 'src/api/orders.py'" in line for line in lines)


@pytest.mark.parametrize(
    "text",
    [
        with_streams(OVERLAPPING % ", depends_on: [wide]"),
        with_streams(
            "  wide: {files: [src/**]}\n"
            "  middle: {files: [docs/**], depends_on: [wide]}\n"
            "  narrow: {files: [src/api/**], depends_on: [middle]}\n"
        ),
        with_streams(
            "  wide: {files: [src/**], conflicts_with: [narrow]}\n"
            "  narrow: {files: [src/api/**]}\n"
        ),
    ],
    ids=["depends_on", "transitive", "conflicts_with"],
)
def test_ordered_or_conflicting_streams_may_share_files(repo: Repo, text: str) -> None:
    assert_valid(repo, text)


def test_overlap_only_on_untracked_or_negated_paths_is_not_an_error(repo: Repo) -> None:
    (repo.path / "src" / "api" / "scratch.py").write_text("untracked\n")
    assert_valid(repo, with_streams("  a: {files: [src/api/scratch.py, src/api/orders.py]}\n"
                                    "  b: {files: [src/api/*.py, '!src/api/orders.py']}\n"))


# -- YAML and document shape ---------------------------------------------------------------


def test_invalid_yaml_gives_its_line(repo: Repo) -> None:
    text = with_streams("  a:\n\tfiles: x\n")
    assert only_problem(repo, text) == (
        "5: invalid YAML: found character '\\t' that cannot start any token"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (with_streams("  a:\n    files: [docs/**]\n  - b\n"),
         "6: invalid YAML: expected <block end>, but found '-'"),
        ("version: 1\n---\nversion: 1\n", "2: invalid YAML: expected a single document"),
        ("version: 1\nname: 'open\n", "3: invalid YAML: found unexpected end of stream"),
        ("version: 1\nbase: *nowhere\n", "2: invalid YAML: found undefined alias 'nowhere'"),
    ],
    ids=["list-item-in-mapping", "two-documents", "unclosed-quote", "undefined-alias"],
)
def test_more_invalid_yaml(text: str, expected: str) -> None:
    found = parsed_problem(text)
    assert found.split(": ")[:2] == expected.split(": ")[:2], found


def test_empty_file(repo: Repo) -> None:
    assert only_problem(repo, "") == (
        " the plan is empty; it needs at least 'version: 1' and 'streams'"
    )


@pytest.mark.parametrize("text", ["\n# nothing but a comment\n", "~\n", "---\n"])
def test_plans_that_say_nothing_are_empty(text: str) -> None:
    assert parsed_problem(text).endswith("the plan is empty; it needs at least 'version: 1' "
                                         "and 'streams'")


def test_empty_mapping_plan_needs_version_and_streams(repo: Repo) -> None:
    assert problems(repo, "{}\n") == [
        "1: version: missing; add 'version: 1' at the top of the plan",
        "1: streams: the plan needs at least one stream under 'streams'",
    ]


@pytest.mark.parametrize("streams", ["", " {}", " ~"])
def test_plan_without_streams(streams: str) -> None:
    assert parsed_problem(HEAD.replace("streams:", f"streams:{streams}")) == (
        "3: streams: the plan needs at least one stream under 'streams'"
    )


@pytest.mark.parametrize("text", ["[a, b]\n", "just words\n", "42\n"])
def test_plan_that_is_not_a_mapping(text: str) -> None:
    assert parsed_problem(text) == "1: the plan must be a mapping of keys to values"


def test_streams_must_be_a_mapping_of_mappings() -> None:
    assert parsed_problem(HEAD + "  - api\n") == (
        "3: streams: 'streams' must be a mapping of keys to values"
    )
    assert parsed_problem(with_streams("  api: [src/api/**]\n")) == (
        "4: streams.api: stream 'api' must be a mapping of keys to values"
    )


def test_not_utf8(repo: Repo) -> None:
    path = repo.write_plan("")
    path.write_bytes(b"version: 1\nname: \xff\xfe\n")
    result = run_wtr("check", path, cwd=repo.path)
    assert result.error_lines()[1:] == [
        f"  {path}: not UTF-8 text (invalid start byte)"
    ]


def test_deeply_nested_yaml_is_a_plan_error(repo: Repo) -> None:
    assert only_problem(repo, "[" * 1000) == " invalid YAML: nested too deeply"


def test_alias_cycle_is_a_plan_error() -> None:
    assert "2: agent.0: recursive or too deeply nested YAML" in parsed_problems(
        "version: 1\nagent: &x [*x]\n"
    )


@pytest.mark.parametrize("value", ["!!binary '@@@'", "2001-13-45", "!!python/name:os.system"])
def test_unreadable_values_are_plan_errors(value: str) -> None:
    found = parsed_problems(f"version: 1\nname: {value}\n")
    assert any(p.startswith(("2: name: ", "2: invalid YAML")) for p in found), found


# -- streams -------------------------------------------------------------------------------


def test_missing_files(repo: Repo) -> None:
    assert only_problem(repo, with_streams("  api:\n    prompt: do it\n")) == (
        "4: streams.api: missing 'files': list the patterns of the files this stream owns"
    )


def test_stream_with_no_spec_at_all_is_missing_files() -> None:
    assert parsed_problem(with_streams("  api:\n")).startswith("4: streams.api: missing 'files'")


def test_empty_files(repo: Repo) -> None:
    assert only_problem(repo, with_streams("  api:\n    files: []\n")) == (
        "5: streams.api.files: must list at least one pattern"
    )


@pytest.mark.parametrize("files", ["src/api/**", "[1]", "~", "{a: b}", "['']"])
def test_files_must_be_a_list_of_patterns(files: str) -> None:
    assert parsed_problem(with_streams(f"  api:\n    files: {files}\n")).startswith(
        "5: streams.api.files: "
    )


def test_on_failure_must_be_continue_or_stop(repo: Repo) -> None:
    text = with_streams("  api:\n    files: [src/api/**]\n    on_failure: maybe\n")
    assert only_problem(repo, text) == "6: streams.api.on_failure: must be one of continue, stop"


def test_stream_shared_entry_must_be_in_plan_shared(repo: Repo) -> None:
    text = HEAD.replace("streams:", "shared: [README.md]\nstreams:") + (
        "  api:\n    files: [src/api/**]\n    shared: [README.md, package.json]\n"
    )
    assert only_problem(repo, text) == (
        "7: streams.api.shared: 'package.json' is not listed in the plan's 'shared'"
    )


def test_stream_shared_listed_in_plan_is_valid() -> None:
    text = HEAD.replace("streams:", "shared: [README.md]\nstreams:") + (
        "  api: {files: [src/api/**], shared: [README.md]}\n"
        "  db: {files: [src/db/**], shared: [README.md]}\n"
    )
    plan = parse_plan(text, Path("p.yaml"))
    assert plan.stream("db").waits_for == ("api",)
    assert plan.stream("api").scope == ("src/api/**", "README.md")


def test_conflicts_that_loop_with_dependencies(repo: Repo) -> None:
    # r waits for p (declared earlier, conflicts), x waits for r, and p depends on x.
    text = with_streams(
        "  p: {files: [src/api/**], depends_on: [x]}\n"
        "  r: {files: [src/db/**], conflicts_with: [p]}\n"
        "  x: {files: [src/ui/**], conflicts_with: [r]}\n"
    )
    assert only_problem(repo, text) == (
        "4: streams.p.conflicts_with: conflicts_with and depends_on cannot both be honoured: "
        "p -> x -> r -> p (each waits for the next); drop a conflict"
    )


def test_shared_paths_loop_with_dependencies_like_conflicts() -> None:
    text = HEAD.replace("streams:", "shared: [README.md]\nstreams:") + (
        "  p: {files: [src/api/**], depends_on: [x], shared: [README.md]}\n"
        "  r: {files: [src/db/**], shared: [README.md]}\n"
        "  x: {files: [src/ui/**], conflicts_with: [r]}\n"
    )
    assert "cannot both be honoured: p -> x -> r -> p" in parsed_problem(text)


# -- agents --------------------------------------------------------------------------------


def test_missing_agent(repo: Repo) -> None:
    text = "version: 1\nstreams:\n  api: {files: [src/api/**]}\n  db: {files: [src/db/**]}\n"
    assert problems(repo, text) == [
        f"{line}: streams.{name}: has no agent: give 'agent.command' or 'agent.preset' "
        "(here or in the plan's default 'agent')"
        for line, name in ((3, "api"), (4, "db"))
    ]


def test_stream_may_bring_its_own_agent() -> None:
    text = "version: 1\nstreams:\n  api:\n    files: [src/api/**]\n    agent: {preset: codex}\n"
    assert parse_plan(text, Path("p.yaml")).stream("api").agent.preset == "codex"


def test_unknown_preset(repo: Repo) -> None:
    text = "version: 1\nagent: {preset: clod}\nstreams:\n  api: {files: [src/api/**]}\n"
    assert only_problem(repo, text) == (
        "2: agent.preset: unknown preset 'clod'; known: claude, codex, aider, gemini, opencode"
    )


def test_command_and_preset_together(repo: Repo) -> None:
    text = with_streams(
        "  api:\n    files: [src/api/**]\n    agent:\n      preset: claude\n"
        "      command: [python3, a.py]\n"
    )
    assert only_problem(repo, text) == (
        "6: streams.api.agent: give either 'command' or 'preset', not both"
    )


def test_stream_preset_replaces_default_command() -> None:
    text = with_streams("  api: {files: [src/api/**], agent: {preset: aider, retries: 2}}\n")
    agent = parse_plan(text, Path("p.yaml")).stream("api").agent
    assert (agent.command, agent.preset, agent.retries) == (None, "aider", 2)


def test_unknown_placeholder_in_command(repo: Repo) -> None:
    text = 'version: 1\nagent:\n  command: ["python3", "{promt}"]\nstreams:\n' + (
        "  api: {files: [docs/**]}\n"
    )
    assert only_problem(repo, text) == (
        "3: agent.command: unknown placeholder {promt}; known: {prompt_file}, {prompt}, "
        "{stream}, {worktree}, {branch}"
    )


def test_unknown_placeholder_in_a_shell_command() -> None:
    text = with_streams("  api: {files: [docs/**], agent: {command: 'run {Stream}'}}\n")
    assert parsed_problem(text).startswith(
        "4: streams.api.agent.command: unknown placeholder {Stream}"
    )


def test_every_placeholder_and_shell_braces_are_accepted() -> None:
    command = "cd {worktree} && run ${HOME} {prompt_file} {prompt} {stream} {branch}"
    text = f"version: 1\nagent:\n  command: {json.dumps(command)}\nstreams:\n" + (
        "  api: {files: [docs/**]}\n"
    )
    assert parse_plan(text, Path("p.yaml")).stream("api").agent.command == command


@pytest.mark.parametrize("env", ["[A]", "{1A: x}", "{A: [x]}", "{A: true}"])
def test_bad_env_is_reported_once(env: str) -> None:
    text = (f'version: 1\nagent: {{command: run, env: {env}}}\nstreams:\n'
            '  api: {files: [docs/**], agent: {env: {B: "1"}}}\n')
    assert parsed_problem(text).startswith("2: agent.env: ")


def test_stream_env_adds_to_the_default_env() -> None:
    text = ('version: 1\nagent: {command: run, env: {A: x, B: 1}}\nstreams:\n'
            '  api: {files: [docs/**], agent: {env: {B: "2", C: 3.5}}}\n')
    env = parse_plan(text, Path("p.yaml")).stream("api").agent.env
    assert dict(env) == {"A": "x", "B": "2", "C": "3.5"}


# -- durations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("soon", "'soon' is not a duration; write 90, '30s', '10m' or '2h'"),
        ("0", "a duration must be greater than zero"),
        ("-1", "a duration must be greater than zero"),
    ],
)
def test_bad_durations(repo: Repo, value: str, message: str) -> None:
    text = with_streams(f"  api:\n    files: [docs/**]\n    agent:\n      timeout: {value}\n")
    assert only_problem(repo, text) == f"7: streams.api.agent.timeout: {message}"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('"-5m"', "'-5m' is not a duration; write 90, '30s', '10m' or '2h'"),
        ('"10x"', "'10x' is not a duration; write 90, '30s', '10m' or '2h'"),
        ('"1h30"', "'1h30' is not a duration; write 90, '30s', '10m' or '2h'"),
        ('"0s"', "a duration must be greater than zero"),
        ("1" + "0" * 400, "a duration must be a finite number of seconds"),
        (".inf", "a duration must be a finite number of seconds"),
        (".nan", "a duration must be greater than zero"),
        ("[10]", "expected a duration such as 90, '30s', '10m' or '2h'"),
        ("true", "expected a duration such as 90, '30s', '10m' or '2h'"),
        ('""', "expected a duration such as 90, '30s', '10m' or '2h'"),
    ],
)
def test_more_bad_durations(value: str, message: str) -> None:
    text = with_streams(f"  api:\n    files: [docs/**]\n    agent:\n      stall_timeout: {value}\n")
    assert parsed_problem(text) == f"7: streams.api.agent.stall_timeout: {message}"


GOOD_DURATIONS = {"90": 90.0, '"30s"': 30.0, '"10m"': 600.0, '"2h"': 7200.0,
                  '"1h30m"': 5400.0, "1.5": 1.5, '"1h 30m 15s"': 5415.0, '"45"': 45.0,
                  '"2H"': 7200.0}


def test_good_durations_pass_check(repo: Repo) -> None:
    body = "".join(
        f"  s{i}: {{files: [area{i}/**], agent: {{timeout: {value}}}}}\n"
        for i, value in enumerate(GOOD_DURATIONS)
    )
    assert_valid(repo, with_streams(body))


@pytest.mark.parametrize(("value", "seconds"), GOOD_DURATIONS.items())
def test_good_durations_become_seconds(value: str, seconds: float) -> None:
    text = with_streams(f"  api: {{files: [docs/**], agent: {{timeout: {value}}}}}\n")
    assert parse_plan(text, Path("p.yaml")).stream("api").agent.timeout == seconds


def test_timeout_null_means_no_timeout() -> None:
    text = with_streams("  api: {files: [docs/**], agent: {timeout: null}}\n")
    assert parse_plan(text, Path("p.yaml")).stream("api").agent.timeout is None


# -- top-level values ----------------------------------------------------------------------


def test_bad_max_parallel(repo: Repo) -> None:
    text = "max_parallel: 0\n" + with_streams("  api: {files: [docs/**]}\n")
    assert only_problem(repo, text) == "1: max_parallel: must be a whole number of at least 1"


@pytest.mark.parametrize("value", ["-2", "four", "true", "2.5", "[4]"])
def test_more_bad_max_parallel(value: str) -> None:
    text = f"max_parallel: {value}\n" + with_streams("  api: {files: [docs/**]}\n")
    assert parsed_problem(text) == "1: max_parallel: must be a whole number of at least 1"


def test_unsupported_version(repo: Repo) -> None:
    text = with_streams("  api: {files: [docs/**]}\n").replace("version: 1", "version: 2")
    assert only_problem(repo, text) == "1: version: unsupported version 2; only 1 exists"


@pytest.mark.parametrize(
    ("version", "message"),
    [('"1"', "unsupported version '1'; only 1 exists"),
     ("true", "unsupported version True; only 1 exists")],
)
def test_version_must_be_the_integer_1(version: str, message: str) -> None:
    text = with_streams("  api: {files: [docs/**]}\n").replace("version: 1", f"version: {version}")
    assert parsed_problem(text) == f"1: version: {message}"


def test_missing_version(repo: Repo) -> None:
    text = with_streams("  api: {files: [docs/**]}\n").replace("version: 1\n", "")
    assert only_problem(repo, text) == (
        "1: version: missing; add 'version: 1' at the top of the plan"
    )


@pytest.mark.parametrize(("key", "value"), [("base", '"-x"'), ("target", '"a b"'),
                                            ("name", "x.lock"), ("name", "5"),
                                            ("worktrees_dir", "[a]"), ("setup", '[""]'),
                                            ("verify", "pytest")])
def test_bad_top_level_values(key: str, value: str) -> None:
    text = f"{key}: {value}\n" + with_streams("  api: {files: [docs/**]}\n")
    assert parsed_problem(text).startswith(f"1: {key}: ")


def test_name_defaults_to_the_file_stem() -> None:
    text = with_streams("  api: {files: [docs/**]}\n")
    assert parse_plan(text, Path("dir/my plan..v2.yaml")).name == "my-plan.v2"


# -- all at once, and files that are not plans ---------------------------------------------


def test_every_problem_in_a_plan_is_reported(repo: Repo) -> None:
    text = (
        "version: 3\n"                                          # 1
        "max_parallel: 0\n"                                     # 2
        "agent: {preset: nope}\n"                               # 3
        "colour: blue\n"                                        # 4
        "streams:\n"                                            # 5
        "  ../api: {files: [src/api/**]}\n"                     # 6
        "  db:\n"                                               # 7
        "    files: [/src/db]\n"                                # 8
        "    on_failure: maybe\n"                               # 9
        "    agent: {command: run, timeout: soon}\n"            # 10
        "  ui: {files: [src/ui/**], depends_on: [web]}\n"       # 11
    )
    found = problems(repo, text)
    assert len(found) == 9
    assert [p.split(": ")[:2] for p in found] == [
        ["1", "version"],
        ["2", "max_parallel"],
        ["3", "agent.preset"],
        ["4", "colour"],
        ["6", "streams.../api"],
        ["8", "streams.db.files"],
        ["9", "streams.db.on_failure"],
        ["10", "streams.db.agent.timeout"],
        ["11", "streams.ui.depends_on"],
    ]


def test_plan_file_that_does_not_exist(repo: Repo) -> None:
    missing = repo.path.parent / "missing.yaml"
    result = run_wtr("check", missing, cwd=repo.path)
    assert result.one_line_error() == (
        f"wtr: plan file {missing} does not exist; create one with 'wtr init'"
    )
    assert result.stdout == ""
