"""User-facing errors: bad input that should stop everything with a clear message and exit code 2."""

import difflib
import sys
from functools import wraps

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem with the user's input (names, files, values). Printed without a traceback; exit code 2."""


def unknown_name_error(kind: str, name: str, available) -> UserError:
    """'Unknown backbone 'resnt18'. Did you mean 'resnet18'? Available: …' in the lm-evaluation-harness style."""
    available = sorted(available)
    close = difflib.get_close_matches(str(name), available, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return UserError(f"Unknown {kind} {name!r}.{hint} Available: {', '.join(available) or '(none)'}.")


def exits_on_user_error(main):
    """Wrap a CLI entry point: a UserError prints 'error: …' to stderr and exits with code 2."""

    @wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)

    return wrapper
