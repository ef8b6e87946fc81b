"""Run the tests without pytest: import each tests/test_*.py, call each test_* function.

Usage: python3 run_tests.py   (from anywhere; exits 1 if any test fails)
The tests are plain functions with asserts, so pytest runs them too: python3 -m pytest -q
"""

from __future__ import annotations

import importlib
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def test_functions() -> Iterator[tuple[str, Callable[[], object]]]:
    """Every test_* function of every tests/test_*.py module, in file and source order."""
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        module = importlib.import_module(f"tests.{path.stem}")
        for name, value in vars(module).items():
            if name.startswith("test_") and callable(value):
                yield f"{path.stem}.{name}", value


def run(name: str, test: Callable[[], object]) -> bool:
    try:
        test()
    except Exception:
        print(f"FAILED {name}", file=sys.stderr)
        traceback.print_exc()
        return False
    return True


def main() -> int:
    sys.dont_write_bytecode = True
    sys.path.insert(0, str(ROOT))
    results = [run(name, test) for name, test in test_functions()]
    passed, failed = results.count(True), results.count(False)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or not results else 0


if __name__ == "__main__":
    sys.exit(main())
