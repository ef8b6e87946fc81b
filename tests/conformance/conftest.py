from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conformance.harness import remove_made


@pytest.fixture(scope="session", autouse=True)
def _remove_conformance_folders() -> Iterator[None]:
    yield
    remove_made()
