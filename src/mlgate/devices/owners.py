"""Who owns a device id: the owner of a caller's devices, and owner names admins type.

Every owner has a namespace of device ids of its own: ``pump-1`` of one owner and
``pump-1`` of another are two devices, and neither can see, calibrate or reset the
other's (another owner's device answers exactly like one that does not exist: 404). The
owner of a caller is

- ``tenant:<name>`` for a user an admin put in a tenant (all its members share devices);
- otherwise ``user:<id>``: the user, whichever of the user's keys or tokens calls;
- nobody for anonymous callers: they cannot use device ids at all (401). Sharing one
  anonymous owner would let every caller without credentials define or read the others'
  "normal", which is what owners exist to prevent; and an address is no identity.

An admin can share a device with another owner (``device_shares``: for the grantee, the
id then means the owner's device). Baselines stored before owners existed belong to
:data:`UNOWNED`, which no caller is.
"""

from __future__ import annotations

import re
from typing import Any

from mlgate.auth.principal import Principal
from mlgate.errors import Unauthorized, ValidationFailed

UNOWNED = "unowned"
"""The owner of baselines stored before device owners existed (no caller's)."""
OWNER_PATTERN = r"^(user:[1-9][0-9]{0,9}|tenant:[a-z0-9][a-z0-9_.-]{0,63}|unowned)$"
_OWNER = re.compile(OWNER_PATTERN)


def device_owner(principal: Principal) -> str:
    """The owner of the devices ``principal`` reads and calibrates (401 if anonymous)."""
    if principal.kind == "anonymous" or principal.user_id is None:
        raise Unauthorized(
            "device baselines belong to an account: send an API key or an access token "
            "to use device_id"
        )
    if principal.tenant:
        return f"tenant:{principal.tenant}"
    return f"user:{principal.user_id}"


def check_owner(value: Any, field: str = "owner") -> str:
    """An owner as an admin names it (``user:7``, ``tenant:acme``, ``unowned``), or a 422."""
    if not isinstance(value, str) or not _OWNER.fullmatch(value):
        shown = value if isinstance(value, str) else type(value).__name__
        raise ValidationFailed(
            f"{field} must be user:<id>, tenant:<name> or unowned, got {shown!r}"[:200],
            details=[{"field": field, "message": "invalid owner", "pattern": OWNER_PATTERN}],
        )
    return value
