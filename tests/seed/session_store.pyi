# The module seed_app.py imports as `session_store`. It exists only at run time:
# tests/test_dropin.py puts the original module (seed_session_store.py) or sessionstore
# there. The application is written against the original's API, so that is its type.
from seed_session_store import SessionDeleteError as SessionDeleteError
from seed_session_store import SessionNotFoundError as SessionNotFoundError
from seed_session_store import delete_session as delete_session
from seed_session_store import list_sessions as list_sessions
from seed_session_store import load_session as load_session
