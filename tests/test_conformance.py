"""The conformance suite's rules against every store class: concurrency (threads and
processes, and tasks for the async classes), fork, max_bytes, appends (keys,
if_match, folds), two store objects, nested writes.

The state machine and the properties run in ``test_store_stateful.py`` and
``test_store_properties.py``; the subjects (``SUBJECTS``, one per class) are defined
there. PostgreSQL runs when ``SESSIONSTORE_TEST_POSTGRES_DSN`` is set and is skipped
with the reason otherwise; so is the async PostgreSQL class until it exists.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sessionstore.testing import StoreFactory
from sessionstore.testing.conformance import (
    appends_test,
    concurrency_test,
    fork_test,
    max_bytes_test,
    nested_writes_test,
    tasks_test,
    two_stores_test,
)
from sessionstore.testing.locks import check_two_stores
from tests.test_store_stateful import SUBJECTS

RULES = [
    pytest.param(concurrency_test, id="concurrent-history"),
    pytest.param(tasks_test, id="concurrent-tasks"),
    pytest.param(fork_test, id="fork"),
    pytest.param(max_bytes_test, id="max-bytes"),
    pytest.param(two_stores_test, id="two-stores"),
    pytest.param(nested_writes_test, id="nested-writes"),
    pytest.param(appends_test, id="appends"),
]

NESTED_THROUGH_ANOTHER_ASYNC_STORE = (
    "async classes (issue 13): inside an async update function, a write to the session "
    "being updated through a second async store object on the same storage waits for "
    "the update itself: LockTimeoutError after lock_timeout (folder), forever (memory, "
    "whose lock has no timeout). The sync classes land it or refuse it at once"
)
KNOWN_FINDINGS = {
    ("two-stores", "async-file"): NESTED_THROUGH_ANOTHER_ASYNC_STORE,
    ("two-stores", "async-memory"): NESTED_THROUGH_ANOTHER_ASYNC_STORE,
}
"""Rules a class fails today, each a strict xfail with what is wrong (a fix makes it
pass, and the strict xfail then fails until the entry is removed)."""


def _cases() -> list[object]:
    cases: list[object] = []
    for rule in RULES:
        for subject in SUBJECTS:
            marks = list(subject.marks)
            finding = KNOWN_FINDINGS.get((str(rule.id), str(subject.id)))
            if finding is not None:
                marks.append(pytest.mark.xfail(strict=True, reason=finding))
            cases.append(
                pytest.param(
                    rule.values[0], subject.values[0], id=f"{rule.id}-{subject.id}", marks=marks
                )
            )
    return cases


@pytest.mark.parametrize(("rule", "factory"), _cases())
def test_rule(rule: Callable[[StoreFactory], Callable[[], None]], factory: StoreFactory) -> None:
    rule(factory)()


@pytest.mark.parametrize(
    "factory", [subject for subject in SUBJECTS if str(subject.id).startswith("async-")]
)
def test_two_async_store_objects_nest_writes_to_other_sessions(factory: StoreFactory) -> None:
    """The parts of the two-stores rule the async classes pass (see KNOWN_FINDINGS)."""
    subject = factory()
    try:
        assert check_two_stores(subject, same_session=False) == []
    finally:
        subject.close()
