"""The responses' ``timestamp``: ISO 8601 UTC with milliseconds and a ``Z``."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from mlgate.protocols.common import now_iso


def test_now_iso_is_the_current_utc_time_in_milliseconds() -> None:
    before = datetime.now(UTC)
    stamp = now_iso()
    after = datetime.now(UTC)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp)
    parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert before.replace(microsecond=before.microsecond // 1000 * 1000) <= parsed <= after
