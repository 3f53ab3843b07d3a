"""The base of every request body: strict at the boundary.

JSON gives numbers, booleans and strings their own types, so a body must use
them as they are: ``"by": false`` is not 0 and ``"5"`` is not 5 (422), and an
unknown field is refused rather than ignored. FastAPI validates the decoded
JSON in Python mode, where strict would also refuse a string for an enum and
a list for a tuple; such fields say ``Annotated[Kind, Lax]``, which keeps
their items strict.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Strict

#: Mark an enum or tuple field of a ``Body`` with ``Annotated[T, Lax]``.
Lax = Strict(False)


class Body(BaseModel):
    """A request body: strict types, no unknown fields."""

    model_config = ConfigDict(strict=True, extra="forbid")


__all__ = ["Body", "Lax"]
