"""The conformance suite's rules against every backend: concurrency, fork, max_bytes,
appends (keys, if_match, folds), two store objects, nested writes.

The state machine and the properties run in ``test_store_stateful.py`` and
``test_store_properties.py``; the subjects are defined there. PostgreSQL runs when
``SESSIONSTORE_TEST_POSTGRES_DSN`` is set and is skipped with the reason otherwise.
"""

from __future__ import annotations

from sessionstore.testing.conformance import (
    appends_test,
    concurrency_test,
    fork_test,
    max_bytes_test,
    nested_writes_test,
    two_stores_test,
)
from tests.pg import postgres_only
from tests.test_store_stateful import file_subject, memory_subject, postgres_kit_subject

test_concurrent_history_file = concurrency_test(file_subject)
test_concurrent_history_memory = concurrency_test(memory_subject)
test_concurrent_history_postgres = postgres_only(concurrency_test(postgres_kit_subject))

test_fork_file = fork_test(file_subject)
test_fork_memory = fork_test(memory_subject)
test_fork_postgres = postgres_only(fork_test(postgres_kit_subject))

test_max_bytes_file = max_bytes_test(file_subject)
test_max_bytes_memory = max_bytes_test(memory_subject)
test_max_bytes_postgres = postgres_only(max_bytes_test(postgres_kit_subject))

test_two_stores_file = two_stores_test(file_subject)
test_two_stores_memory = two_stores_test(memory_subject)
test_two_stores_postgres = postgres_only(two_stores_test(postgres_kit_subject))

test_nested_writes_file = nested_writes_test(file_subject)
test_nested_writes_memory = nested_writes_test(memory_subject)
test_nested_writes_postgres = postgres_only(nested_writes_test(postgres_kit_subject))

test_appends_file = appends_test(file_subject)
test_appends_memory = appends_test(memory_subject)
test_appends_postgres = postgres_only(appends_test(postgres_kit_subject))
