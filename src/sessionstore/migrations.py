"""One pure ``dict -> dict`` step per schema version, and the loop that applies them.

A step takes a document of version N and returns a new document of version
N + 1; it never mutates its input and does no I/O. Validation happens once, after
the last step, with the current model (see ``codec``).

To add a version: copy ``StoredSession`` as a frozen ``SessionVN`` into
``history``, write ``_vN_to_vN+1`` here, register it in ``STEPS`` and describe it
in ``DESCRIPTIONS``, then bump ``CURRENT_SCHEMA_VERSION``. Add the way back too: a
down-step ``_vN+1_to_vN`` in ``DOWN_STEPS`` (with ``DOWN_DESCRIPTIONS``), which says
what the older version cannot hold, so ``sessionstore migrate --to N`` can roll back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from sessionstore.models import CURRENT_SCHEMA_VERSION, SEED_FIELDS

__all__ = [
    "DESCRIPTIONS",
    "DOWN_DESCRIPTIONS",
    "DOWN_STEPS",
    "STEPS",
    "V1_EXTRA_KEY",
    "Document",
    "DownStep",
    "downgrade",
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


def _v2_to_v3(doc: Document) -> Document:
    """Version 3 has the same fields; what changes is that records may follow it."""
    return {**doc, "schema_version": 3}


STEPS: Mapping[int, Callable[[Document], Document]] = MappingProxyType({1: _v1_to_v2, 2: _v2_to_v3})
"""Source version -> the step that lifts a document of that version by one."""

DESCRIPTIONS: Mapping[int, str] = MappingProxyType(
    {
        1: "the original session_store module: session_id, messages, input_tokens, "
        "output_tokens; no schema_version",
        2: "sessionstore 0.1: adds schema_version, created_at, updated_at and metadata "
        "(v1's other keys kept in metadata)",
        3: "sessionstore 0.2: the same fields, as a snapshot that append records (one JSON "
        "object per line) may follow",
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


# --- down-steps: for ``sessionstore migrate --to N`` below the current version ---------
#
# A down-step takes a document of version N and returns a document of version N - 1
# and what it could not keep: a tuple of field paths ("created_at", "metadata.team").
# Like the up-steps it is pure: it never mutates its input and does no I/O. Nothing
# is lost silently: the CLI shows every path and refuses without --allow-lossy.

DownStep = Callable[[Document], tuple[Document, tuple[str, ...]]]


def _v2_to_v1(doc: Document) -> tuple[Document, tuple[str, ...]]:
    """Version 1 holds the four seed fields only, and no ``schema_version``.

    The keys the original module ignored come back as top-level keys from
    ``metadata[V1_EXTRA_KEY]``. Lost: ``created_at`` and ``updated_at`` when set,
    and every other ``metadata`` key (an empty ``metadata`` loses nothing).
    """
    out: Document = {key: doc[key] for key in SEED_FIELDS}
    lost = [key for key in ("created_at", "updated_at") if doc.get(key) is not None]
    metadata = doc.get("metadata") or {}
    for key, value in metadata.items():
        if key == V1_EXTRA_KEY and type(value) is dict:
            for extra_key, extra_value in value.items():
                if extra_key in _V1_KEYS:
                    lost.append(f"metadata.{V1_EXTRA_KEY}.{extra_key}")
                else:
                    out[extra_key] = extra_value
        else:
            lost.append(f"metadata.{key}")
    return out, tuple(lost)


def _v3_to_v2(doc: Document) -> tuple[Document, tuple[str, ...]]:
    """Version 2 has the same fields; the records are folded into the document first
    (the caller decodes the whole file), and the append keys a fold kept are dropped."""
    out = {key: value for key, value in doc.items() if key != "store"}
    out["schema_version"] = 2
    return out, ()


DOWN_STEPS: Mapping[int, DownStep] = MappingProxyType({2: _v2_to_v1, 3: _v3_to_v2})
"""Source version -> the step that lowers a document of that version by one."""

DOWN_DESCRIPTIONS: Mapping[int, str] = MappingProxyType(
    {
        2: "drops schema_version, created_at, updated_at and metadata; the keys v1 "
        f"ignored come back from metadata[{V1_EXTRA_KEY!r}]",
        3: "folds the append records into one document; loses nothing (the append "
        "keys remembered for retries are forgotten)",
    }
)
"""One line per down-step (by source version): what it does and what it cannot keep."""


def downgrade(doc: Document, version: int, target: int) -> tuple[Document, tuple[str, ...]]:
    """Apply the down-steps from ``version`` down to ``target``; return the new document
    and every field path that could not be kept (empty when nothing is lost).

    The input is left unchanged. Raises ``LookupError`` when a step is missing and
    ``RuntimeError`` when a step does not lower the version by exactly one.
    """
    lost: list[str] = []
    while version > target:
        step = DOWN_STEPS.get(version)
        if step is None:
            msg = f"no down-step registered from schema version {version}"
            raise LookupError(msg)
        doc, step_lost = step(doc)
        lost.extend(step_lost)
        reached = read_version(doc)
        if reached != version - 1:
            msg = f"down-step from version {version} produced version {reached!r}"
            raise RuntimeError(msg)
        version -= 1
    return doc, tuple(lost)
