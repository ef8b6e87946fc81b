from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conformance.harness import remove_made


@pytest.fixture(scope="session", autouse=True)
def _remove_conformance_folders() -> Iterator[None]:
    yield
    remove_made()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A real CLI's session takes longer than the suite's default limit per test, more so
    on a busy CI machine: 10 minutes each (a test that sets its own keeps it)."""
    here = __file__.rsplit("/", 1)[0]
    for item in items:
        if str(item.fspath).startswith(here) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(600))
