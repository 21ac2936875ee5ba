"""One router per resource; every one documents the error answers it can give (ErrorBody)."""

from __future__ import annotations

from typing import Any

from godwit.service.models import ErrorBody

API = "/api/v1"


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` entry for these error statuses (the body is always ErrorBody)."""
    return {code: {"model": ErrorBody} for code in codes}


#: What any authenticated call may answer besides its own result.
AUTHED = errors(401, 403)
