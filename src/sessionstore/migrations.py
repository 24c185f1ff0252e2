"""One pure ``dict -> dict`` step per schema version, and the loop that applies them.

A step takes a document of version N and returns a new document of version
N + 1; it never mutates its input and does no I/O. Validation happens once, after
the last step, with the current model (see ``codec``).

To add a version: copy ``StoredSession`` as a frozen ``SessionVN`` into
``history``, write ``_vN_to_vN+1`` here, register it in ``STEPS`` and describe it
in ``DESCRIPTIONS``, then bump ``CURRENT_SCHEMA_VERSION``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from sessionstore.models import CURRENT_SCHEMA_VERSION, SEED_FIELDS

__all__ = [
    "DESCRIPTIONS",
    "STEPS",
    "V1_EXTRA_KEY",
    "Document",
    "read_version",
    "upgrade",
    "v1_extra_keys",
]

Document = dict[str, Any]

V1_EXTRA_KEY = "sessionstore_v1_extra"
"""The ``metadata`` key under which a version-1 document's other keys are kept.

The original module read its four keys and ignored any other; migrating such a
document keeps those keys and their values here, unchanged, instead of refusing it.
"""

_V1_KEYS = frozenset({*SEED_FIELDS, "schema_version"})


def v1_extra_keys(doc: Document) -> list[str]:
    """The keys of a version-1 document that the original module ignored, in order."""
    return [key for key in doc if key not in _V1_KEYS]


def _v1_to_v2(doc: Document) -> Document:
    """Version 2 adds ``created_at``, ``updated_at`` (unknown: None) and ``metadata``.

    Keys the original module ignored are kept in ``metadata[V1_EXTRA_KEY]``.
    """
    extra = {key: doc[key] for key in v1_extra_keys(doc)}
    return {
        "schema_version": 2,
        **{key: doc[key] for key in SEED_FIELDS if key in doc},
        "created_at": None,
        "updated_at": None,
        "metadata": {V1_EXTRA_KEY: extra} if extra else {},
    }


STEPS: Mapping[int, Callable[[Document], Document]] = MappingProxyType({1: _v1_to_v2})
"""Source version -> the step that lifts a document of that version by one."""

DESCRIPTIONS: Mapping[int, str] = MappingProxyType(
    {
        1: "the original session_store module: session_id, messages, input_tokens, "
        "output_tokens; no schema_version",
        2: "sessionstore 0.1: adds schema_version, created_at, updated_at and metadata "
        "(v1's other keys kept in metadata)",
    }
)
"""One line per schema version: what it is and what its step from the previous one does."""


def read_version(doc: Document) -> int:
    """Return the document's schema version: absent means 1 (the seed's format).

    Raises ``ValueError`` when the field is present but not an integer >= 1
    (a bool or a float is not an integer here).
    """
    version = doc.get("schema_version", 1)
    if type(version) is not int or version < 1:
        msg = f"schema_version must be an integer >= 1, found {version!r}"
        raise ValueError(msg)
    return version


def upgrade(doc: Document, version: int, target: int = CURRENT_SCHEMA_VERSION) -> Document:
    """Apply the steps from ``version`` up to ``target`` and return the new document.

    The input is left unchanged. Raises ``LookupError`` when a step is missing and
    ``RuntimeError`` when a step does not raise the version by exactly one (both are
    bugs in the registry, not in the data).
    """
    while version < target:
        step = STEPS.get(version)
        if step is None:
            msg = f"no migration step registered from schema version {version}"
            raise LookupError(msg)
        doc = step(doc)
        reached = doc.get("schema_version")
        if reached != version + 1:
            msg = f"migration step from version {version} produced version {reached!r}"
            raise RuntimeError(msg)
        version += 1
    return doc
