"""One pure ``dict -> dict`` step per schema version, and the loop that applies them.

A step takes a document of version N and returns a new document of version
N + 1; it never mutates its input and does no I/O. Validation happens once, after
the last step, with the current model (see ``codec``).

To add version 3: freeze ``StoredSession`` as ``SessionV2`` in ``models``, write
``_v2_to_v3`` here, register it in ``STEPS`` and bump ``CURRENT_SCHEMA_VERSION``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from sessionstore.models import CURRENT_SCHEMA_VERSION

__all__ = ["STEPS", "Document", "read_version", "upgrade"]

Document = dict[str, Any]


def _v1_to_v2(doc: Document) -> Document:
    """Version 2 adds ``created_at``, ``updated_at`` (unknown: None) and ``metadata`` (empty)."""
    return {
        **doc,
        "schema_version": 2,
        "created_at": None,
        "updated_at": None,
        "metadata": {},
    }


STEPS: Mapping[int, Callable[[Document], Document]] = MappingProxyType({1: _v1_to_v2})
"""Source version -> the step that lifts a document of that version by one."""


def read_version(doc: Document) -> int:
    """Return the document's schema version: absent means 1 (the seed's format).

    Raises ``ValueError`` when the field is present but not an integer >= 1
    (a bool is not an integer here).
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
