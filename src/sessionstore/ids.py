"""The session id rules, checked before any filesystem call.

A valid id is 1 to 128 characters of ``A-Z a-z 0-9 _ -``, does not start with
``-`` (it would read as an option on a command line) and is not a Windows device
name (``CON``, ``PRN``, ``AUX``, ``NUL``, ``COM1``-``COM9``, ``LPT1``-``LPT9``, in
any case). Such an id is a safe file name on every common filesystem: no
separators, no dots, no way out of the store's folder.
"""

from __future__ import annotations

import re

from sessionstore.errors import InvalidSessionIdError

__all__ = ["MAX_ID_LENGTH", "SESSION_FILE_NAME", "is_valid_session_id", "validate_session_id"]

MAX_ID_LENGTH = 128

_ID = re.compile(r"(?!-)[A-Za-z0-9_-]{1,128}", re.ASCII)
_DEVICE = re.compile(r"(?:CON|PRN|AUX|NUL|COM[1-9]|LPT[1-9])", re.ASCII | re.IGNORECASE)
SESSION_FILE_NAME = re.compile(
    r"(?!-)(?!(?i:CON|PRN|AUX|NUL|COM[1-9]|LPT[1-9])\.json\Z)([A-Za-z0-9_-]{1,128})\.json",
    re.ASCII,
)
"""``fullmatch`` of a file name ``<id>.json`` whose id follows the id rules; group 1 is the id.

The same rules as ``is_valid_session_id`` in one pattern, for listing large folders."""
_RULE = "1-128 characters of A-Z a-z 0-9 _ -, not starting with '-', not a device name like CON"


def is_valid_session_id(session_id: object) -> bool:
    """True when ``session_id`` is a ``str`` that follows the id rules."""
    return (
        type(session_id) is str
        and _ID.fullmatch(session_id) is not None
        and _DEVICE.fullmatch(session_id) is None
    )


def validate_session_id(
    session_id: object, *, error: type[InvalidSessionIdError] = InvalidSessionIdError
) -> str:
    """Return ``session_id`` if it is valid; raise ``error`` (an ``InvalidSessionIdError``)
    otherwise."""
    if is_valid_session_id(session_id):
        return session_id  # type: ignore[return-value]  # checked to be a str above
    shown = repr(session_id)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    raise error(
        f"invalid session id {shown}: an id must be {_RULE}",
        session_id=session_id if type(session_id) is str else None,
    )
