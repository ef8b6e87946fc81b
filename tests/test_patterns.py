"""The path index must match exactly what pathspec matches, only faster."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from worktree_runner.plan.patterns import PathIndex, compile_patterns, literal_head

SEGMENTS = st.sampled_from(["src", "api", "a", "ab", "x.py", "docs", "README.md", "*", "**",
                            "a*", "?b", "[ab]", "api.lock", "#x", "\\#x"])
PATHS = st.lists(st.sampled_from(["src", "api", "a", "ab", "x.py", "docs", "README.md",
                                  "api.lock", "#x", "b"]), min_size=1, max_size=4).map("/".join)
PATTERNS = st.tuples(
    st.sampled_from(["", "!", "/"]),
    st.lists(SEGMENTS, min_size=1, max_size=3).map("/".join),
    st.sampled_from(["", "/"]),
).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.lists(PATTERNS, min_size=1, max_size=4), st.lists(PATHS, max_size=30))
def test_index_matches_exactly_what_pathspec_matches(patterns: list[str], paths: list[str]) -> None:
    expected = set(compile_patterns(patterns).match_files(paths))
    assert PathIndex(paths).matching(patterns) == expected


@settings(max_examples=200, deadline=None)
@given(PATTERNS, st.lists(PATHS, max_size=30))
def test_matches_any_agrees_with_pathspec(pattern: str, paths: list[str]) -> None:
    spec = compile_patterns([pattern])
    assert PathIndex(paths).matches_any(pattern) == any(spec.match_file(p) for p in paths)


def test_literal_heads() -> None:
    assert literal_head("area07/**") == "area07/"
    assert literal_head("src/api/*.py") == "src/api/"
    assert literal_head("src/api") == "src/api"
    assert literal_head("docs/") is None
    assert literal_head("*.py") is None
    assert literal_head("**/x") == ""
    assert literal_head("!src/x") is None
