"""One error hierarchy for the whole server. The API maps each class to one HTTP status in one place
(``stagewatch.api.errors``); the CLI maps them to exit codes.

    StagewatchError
    ├── ConfigError          a config file or setting is wrong (names the file, the key and the problem)
    ├── InputError           a request or a file is malformed (names the field)
    │   ├── InvalidShape     well-formed, but not the shape asked for (a field is missing or wrong)
    │   ├── PayloadTooLarge  a body or batch over its cap
    │   └── Conflict         the request clashes with what exists (a token name already taken)
    ├── Unauthenticated      no API token, or one that is unknown or revoked
    ├── Forbidden            the token lacks the scope the action needs
    ├── NotFound             an item, run or other record does not exist
    ├── Overloaded           ingest is behind; the sender should try again after ``retry_after`` s
    └── StoreUnavailable     the database does not answer
"""

from __future__ import annotations


class StagewatchError(Exception):
    """Base of every error stagewatch raises on purpose."""


class ConfigError(StagewatchError):
    """A configuration file or setting is invalid. The message names the file, the key and the problem."""

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None) -> None:
        self.source = source
        self.key = key
        where = ": ".join(part for part in (source, key) if part)
        super().__init__(f"{where}: {message}" if where else message)


class InputError(StagewatchError):
    """Input that cannot be accepted. ``field`` names the offending field when there is one."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class InvalidShape(InputError):
    """Well-formed input whose structure is wrong: a missing field, a wrong type or value."""


class PayloadTooLarge(InputError):
    """A request body or batch is over its size cap."""


class Conflict(InputError):
    """The input is well-formed but clashes with a record that exists, such as a name already taken."""


class Unauthenticated(StagewatchError):
    """The request carries no API token, or one that is unknown or revoked."""

    field = "authorization"


class Forbidden(StagewatchError):
    """The caller is known but its token lacks ``scope``."""

    def __init__(self, message: str, *, scope: str) -> None:
        self.scope = scope
        super().__init__(message)


class NotFound(StagewatchError):
    """The record asked for does not exist."""


class Overloaded(StagewatchError):
    """Too much is waiting to be written; nothing of the request was kept. Try again in ``retry_after``
    seconds."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class StoreUnavailable(StagewatchError):
    """The database cannot be reached or refuses work."""
