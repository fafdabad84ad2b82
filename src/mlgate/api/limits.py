"""Rate-limit policy at the HTTP edge: what each request costs and whom it is charged to.

- every authenticated or anonymous call: one request against the caller's account (a
  user and all of that user's keys and tokens share one budget, of the user's tier) and,
  when the key carries overrides of its own, against that key's extra cap;
- prediction routes: one row per instance against the same buckets' row allowances;
- ``POST /v1/token``: one login attempt per client IP;
- failed authentications: counted per client IP; an IP over its allowance is refused
  before its credentials are even checked (brute-force protection).

Admissions leave ``RateLimit-*`` headers on ``request.state`` for the request-context
middleware to add to the response; refusals raise :class:`~mlgate.errors.RateLimited`
(429 with ``Retry-After``).
"""

from __future__ import annotations

import math

from fastapi import Request

from mlgate.auth.principal import Principal
from mlgate.errors import PayloadTooLarge, RateLimited
from mlgate.ratelimit import (
    Decision,
    RateLimiter,
    RateLimitSettings,
    TierLimits,
    client_ip,
    strictest,
)

HEADERS_STATE = "rate_limit_headers"


def request_client_ip(request: Request) -> str:
    """The caller's IP, believing ``X-Forwarded-For`` only from trusted proxies."""
    settings: RateLimitSettings = request.app.state.settings.rate_limit
    peer = request.client.host if request.client is not None else None
    forwarded = ",".join(request.headers.getlist("x-forwarded-for")) or None
    return client_ip(peer, forwarded, settings.trusted_proxies)


class EdgeLimits:
    """Charges requests, rows, logins and failed authentications to their buckets."""

    def __init__(self, limiter: RateLimiter, settings: RateLimitSettings) -> None:
        self.limiter = limiter
        self.settings = settings
        self.enabled = settings.enabled

    def _buckets(self, principal: Principal) -> list[tuple[str, TierLimits, str]]:
        """(bucket, limits, whose) a principal's requests and rows are charged to: the
        key's own cap first (when the key has one), then the account's."""
        account = self.settings.limits_for(principal.tier, principal.rate_limit_overrides)
        buckets = [(principal.rate_limit_key, account, f"the {principal.tier!r} tier")]
        cap_key = principal.key_cap_key
        if cap_key is not None and principal.key_rate_limit_overrides is not None:
            # The cap replaces some of the account's numbers, for this key alone; it can
            # only hold the key below its account, which is charged too.
            cap = account.with_overrides(principal.key_rate_limit_overrides)
            buckets.insert(0, (cap_key, cap, "this API key"))
        return buckets

    async def charge_request(self, request: Request, principal: Principal) -> None:
        """One request against the caller's account, and its key's cap (429 when over)."""
        if not self.enabled:
            return
        for bucket, limits, whose in self._buckets(principal):
            decision = await self.limiter.hit(f"req:{bucket}", limits.requests_limit())
            self._record(request, decision)
            if not decision.allowed:
                raise RateLimited(
                    f"request limit of {whose} reached ({limits.requests_per_minute} a "
                    f"minute): retry after {decision.headers().get('Retry-After', '?')} s",
                    details={"limit": "requests", "tier": principal.tier},
                    headers=decision.headers(),
                )

    async def charge_rows(self, request: Request, principal: Principal, rows: int) -> None:
        """``rows`` instances against the account's row allowance (and the key's cap)."""
        if not self.enabled or rows <= 0:
            return
        for bucket, limits, whose in self._buckets(principal):
            decision = await self.limiter.hit(f"rows:{bucket}", limits.rows_limit(), cost=rows)
            self._record(request, decision)
            if decision.never:
                raise PayloadTooLarge(
                    f"a batch of {rows} rows exceeds the allowance of {whose} of "
                    f"{decision.limit} rows at once: split it into smaller batches",
                    details={"limit": "rows", "rows": rows, "max_rows_at_once": decision.limit},
                )
            if not decision.allowed:
                raise RateLimited(
                    f"row limit of {whose} reached ({limits.rows_per_minute} rows a minute): "
                    f"retry after {decision.headers().get('Retry-After', '?')} s",
                    details={"limit": "rows", "tier": principal.tier, "rows": rows},
                    headers=decision.headers(),
                )

    async def charge_login(self, request: Request) -> None:
        """One login attempt for the client IP."""
        if not self.enabled:
            return
        ip = request_client_ip(request)
        decision = await self.limiter.hit(f"login:{ip}", self.settings.login_limit())
        if not decision.allowed:
            raise RateLimited(
                "too many login attempts from this address: retry later",
                details={"limit": "login"},
                headers=decision.headers(),
            )

    async def refuse_blocked_ip(self, request: Request) -> None:
        """429 for an IP that failed authentication too often (costs nothing to check)."""
        if not self.enabled:
            return
        ip = request_client_ip(request)
        limit = self.settings.failed_auth_limit()
        decision = await self.limiter.hit(f"authfail:{ip}", limit, 0)
        if decision.remaining <= 0 and not decision.degraded:
            # One more failure fits once the bucket has drained by one emission interval.
            emission = limit.period / limit.rate
            wait = decision.reset_after - (limit.burst - 1) * emission
            raise RateLimited(
                "too many failed authentications from this address: retry later",
                details={"limit": "failed_auth"},
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )

    async def record_failed_auth(self, request: Request) -> None:
        if not self.enabled:
            return
        ip = request_client_ip(request)
        await self.limiter.hit(f"authfail:{ip}", self.settings.failed_auth_limit())

    @staticmethod
    def _record(request: Request, decision: Decision) -> None:
        previous: Decision | None = getattr(request.state, "rate_limit_decision", None)
        chosen = decision if previous is None else strictest([previous, decision])
        request.state.rate_limit_decision = chosen
        setattr(request.state, HEADERS_STATE, chosen.headers())


async def charge_rows(request: Request, instances: object) -> None:
    """Charge a prediction's rows to the caller (a batch of n instances costs n).

    Malformed or oversized batches are left to input validation, which refuses them
    without spending the caller's allowance.
    """
    state = request.app.state.mlgate
    if isinstance(instances, list):
        rows = len(instances)
        if not 0 < rows <= state.settings.models.max_batch_rows:
            return
    else:
        rows = 1
    await state.limits.charge_rows(request, request.state.principal, rows)
