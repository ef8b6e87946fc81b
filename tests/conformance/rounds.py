"""Feedback rounds with a real CLI: a scripted model that answers each round of a session.

wtr tells a failure to the agent's session in a message holding "feedback round K of N".
``RoundScript`` answers the first prompt with round 0's turns and, from the request that
carries "feedback round K" on, with round K's; inside a round the turn is chosen by the
tool results since the round began, so a request only reaches round K's tool calls when
it carries every earlier round's tool results: a CLI that did not continue its session
(a fresh start told the failure) gets round K's final text at once and does nothing.
"""

from __future__ import annotations

import re
from typing import Any

from tests.conformance.modelserver import Script, fill, placeholders

ROUND = re.compile(r"feedback round (\d+) of \d+")


class RoundScript(Script):
    def __init__(self, rounds: list[list[dict[str, Any]]]) -> None:
        super().__init__([turn for turns in rounds for turn in turns])
        self.rounds = rounds

    def turn(self, request_text: str, tool_results: int) -> dict[str, Any]:
        number = min(max((int(n) for n in ROUND.findall(request_text)), default=0),
                     len(self.rounds) - 1)
        before = sum(1 for turns in self.rounds[:number] for turn in turns if "text" not in turn)
        turns, index = self.rounds[number], tool_results - before
        if 0 <= index < len(turns):
            chosen = turns[index]
        else:
            chosen = next((t for t in reversed(turns) if "text" in t), {"text": "Done."})
        return fill(chosen, placeholders(request_text))


VERIFY_ROUNDS = [
    [{"shell": "mkdir -p src/{stream} && printf 'def other():\\n    return 1\\n' "
               "> src/{stream}/feature.py && echo ROUND ONE {stream}"},
     {"shell": 'git add src/{stream} && git commit -q -m "{stream}: first try"'},
     {"text": "Done, I think."}],
    [{"shell": "printf 'def value():\\n    return 42\\n' > src/{stream}/feature.py "
               "&& python3 run_tests.py {stream}"},
     {"shell": 'git commit -q -am "{stream}: add value()"'},
     {"text": "REPORT {stream}: value() added after the failed tests."}],
]

OWNERSHIP_ROUNDS = [
    [{"shell": "mkdir -p src/{stream} && printf 'def value():\\n    return 42\\n' "
               "> src/{stream}/feature.py && echo '{stream} was here' >> README.md "
               "&& echo ROUND ONE {stream}"},
     {"shell": 'git add -A && git commit -q -m "{stream}: add feature"'},
     {"text": "Done."}],
    [{"shell": 'git checkout "$WTR_BASE_COMMIT" -- README.md '
               '&& git commit -q -m "{stream}: put README.md back"'},
     {"text": "REPORT {stream}: README.md put back."}],
]


def resumed_request(sent: list[dict[str, Any]], name: str, failure: str) -> dict[str, Any]:
    """The model request in which stream ``name``'s session goes on after ``failure`` was
    told: it carries the stream's prompt, its first round's tool output and the failure."""
    for entry in sent:
        body = entry["body"]
        if (failure in body and f"ROUND ONE {name}" in body
                and f"# Task: stream '{name}'" in body):
            return entry
    raise AssertionError(f"no request continued {name}'s session with {failure!r}")
