"""Rate-limit policy at the HTTP edge: what each request costs and whom it is charged to.

- every authenticated or anonymous call: one request against the caller's account (a
  user and all of that user's keys and tokens share one budget, of the user's tier) and,
  when the key carries overrides of its own, against that key's extra cap;
- prediction routes: one row per instance against the same buckets' row allowances;
- ``POST /v1/token``: one login attempt per client address, right or wrong; and while
  a username backs off after wrong passwords, every login of it is refused;
- failed authentications: counted per client address; once an address is over its
  allowance its failing attempts get 429 instead of 401. Valid credentials are never
  refused by it (one client behind a NAT must not lock everyone out): they are judged by
  their account's limits.

"Client address" is the caller's IP as :func:`request_client_key` groups it: IPv6 by
network (/64 by default), IPv4 per address. The brute-force buckets (logins, failed
authentications, usernames) fall back to this worker's memory while the shared store
(Redis) is away and the limiter fails open: those limits never vanish, they become per
worker. Tier limits fail open as configured.

Admissions leave ``RateLimit-*`` headers on ``request.state`` for the request-context
middleware to add to the response; refusals raise :class:`~mlgate.errors.RateLimited`
(429 with ``Retry-After``).
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request

from mlgate.auth.accounts import normalize_username
from mlgate.auth.principal import Principal
from mlgate.errors import PayloadTooLarge, RateLimited
from mlgate.observability.tracing import step
from mlgate.ratelimit import (
    Decision,
    Hit,
    Limit,
    MemoryRateLimiter,
    RateLimiter,
    RateLimitSettings,
    TierLimits,
    client_ip,
    client_network,
    strictest,
)

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

HEADERS_STATE = "rate_limit_headers"


#: Where the request's scope keeps its client IP once worked out (authentication, the
#: rate limits and the access line all ask for it).
CLIENT_IP_KEY = "mlgate.client_ip"


def request_client_ip(request: Request) -> str:
    """The caller's IP, believing ``X-Forwarded-For`` only from trusted proxies (worked
    out once per request)."""
    scope = request.scope
    known = scope.get(CLIENT_IP_KEY)
    if known is not None:
        return str(known)
    settings: RateLimitSettings = request.app.state.settings.rate_limit
    peer = request.client.host if request.client is not None else None
    forwarded = None
    if settings.trusted_proxies:  # the header counts only when a trusted proxy wrote it
        forwarded = ",".join(request.headers.getlist("x-forwarded-for")) or None
    ip = scope[CLIENT_IP_KEY] = client_ip(peer, forwarded, settings.trusted_proxies)
    return ip


def request_client_key(request: Request) -> str:
    """The caller as per-address limits count it: its IP, or its IPv6 network."""
    settings: RateLimitSettings = request.app.state.settings.rate_limit
    return client_network(
        request_client_ip(request), settings.ipv4_prefix_length, settings.ipv6_prefix_length
    )


def _username_key(username: str) -> str:
    # Fixed length whatever a client sends, and the same for every spelling of a name.
    return hashlib.sha256(normalize_username(username).encode()).hexdigest()[:32]


#: Principals whose buckets are kept worked out (the principal cache's size is the same).
_MAX_PLANS = 10_000


@dataclass(frozen=True, slots=True)
class _Bucket:
    key: str
    limits: TierLimits
    whose: str
    requests: Limit
    rows: Limit


class EdgeLimits:
    """Charges requests, rows, logins and failed authentications to their buckets."""

    def __init__(
        self,
        limiter: RateLimiter,
        settings: RateLimitSettings,
        *,
        fallback: RateLimiter | None = None,
    ) -> None:
        """``fallback`` keeps the brute-force buckets while ``limiter`` is degraded
        (default: a memory limiter of this worker)."""
        self.limiter = limiter
        self.settings = settings
        self.enabled = settings.enabled
        self.fallback = fallback or MemoryRateLimiter(max_keys=settings.memory_max_keys)
        self._plans: OrderedDict[int, tuple[Principal, list[_Bucket]]] = OrderedDict()
        self.tracer: Tracer | None = None
        """Opens the rate-limit span of a request (None: tracing off)."""

    def _buckets(self, principal: Principal) -> list[_Bucket]:
        """The buckets a principal's requests and rows are charged to, worked out once
        per principal object (the principal cache hands out the same one for a while)."""
        cached = self._plans.get(id(principal))
        if cached is not None and cached[0] is principal:
            return cached[1]
        plan = [
            _Bucket(bucket, limits, whose, limits.requests_limit(), limits.rows_limit())
            for bucket, limits, whose in self._limits_of(principal)
        ]
        self._plans[id(principal)] = (principal, plan)
        while len(self._plans) > _MAX_PLANS:
            self._plans.popitem(last=False)
        return plan

    def _limits_of(self, principal: Principal) -> list[tuple[str, TierLimits, str]]:
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
        await self.charge(request, principal, 0)

    async def charge(self, request: Request, principal: Principal, rows: int) -> None:
        """This request and its ``rows`` against the caller's buckets - the account's and
        the key's cap, requests and rows - in one limiter call, all or nothing: 429 (or
        413 for a batch larger than a whole allowance) when any bucket refuses, and then
        none is charged."""
        if not self.enabled:
            return
        request.state.rate_charged = True
        charges: list[tuple[str, TierLimits, str]] = []
        hits: list[Hit] = []
        for b in self._buckets(principal):
            charges.append(("requests", b.limits, b.whose))
            hits.append(Hit(f"req:{b.key}", b.requests))
            if rows > 0:
                charges.append(("rows", b.limits, b.whose))
                hits.append(Hit(f"rows:{b.key}", b.rows, rows))
        with step(self.tracer, "mlgate.rate_limit", rows=rows):
            decisions = await self.limiter.hit_many(hits)
        self._record(request, decisions)
        for (kind, _, whose), decision in zip(charges, decisions, strict=True):
            if kind == "rows" and decision.never:
                raise PayloadTooLarge(
                    f"a batch of {rows} rows exceeds the allowance of {whose} of "
                    f"{decision.limit} rows at once: split it into smaller batches",
                    details={"limit": "rows", "rows": rows, "max_rows_at_once": decision.limit},
                )
        for (kind, limits, whose), decision in zip(charges, decisions, strict=True):
            if decision.allowed:
                continue
            retry = decision.headers().get("Retry-After", "?")
            if kind == "requests":
                raise RateLimited(
                    f"request limit of {whose} reached ({limits.requests_per_minute} a "
                    f"minute): retry after {retry} s",
                    details={"limit": "requests", "tier": principal.tier},
                    headers=decision.headers(),
                )
            raise RateLimited(
                f"row limit of {whose} reached ({limits.rows_per_minute} rows a minute): "
                f"retry after {retry} s",
                details={"limit": "rows", "tier": principal.tier, "rows": rows},
                headers=decision.headers(),
            )

    async def _guard(self, key: str, limit: Limit, cost: int = 1) -> Decision:
        """A hit on a brute-force bucket: in the shared store, or in this worker's
        memory while the store is away and the limiter fails open."""
        decision = await self.limiter.hit(key, limit, cost)
        if decision.degraded:
            decision = await self.fallback.hit(key, limit, cost)
        return decision

    async def charge_login(self, request: Request, username: str) -> None:
        """One login attempt for the client address (right or wrong: each costs a
        password hash); then a 429 while ``username`` backs off after wrong passwords."""
        if not self.enabled:
            return
        client = request_client_key(request)
        decision = await self._guard(f"login:{client}", self.settings.login_limit())
        if not decision.allowed:
            raise RateLimited(
                "too many login attempts from this address: retry later",
                details={"limit": "login"},
                headers=decision.headers(),
            )
        lock = self.settings.username_lock_limit()
        state = await self._guard(f"loginlock:{_username_key(username)}", lock, 0)
        if state.remaining < lock.burst:
            # Refused whatever the password: answering a right one would confirm guesses.
            wait = max(1, math.ceil(state.reset_after))
            raise RateLimited(
                f"too many wrong passwords for this username: retry after {wait} s",
                details={"limit": "username"},
                headers={"Retry-After": str(wait)},
            )

    async def record_failed_login(self, request: Request, username: str) -> None:
        """A wrong password: the username's count grows (and locks it once over), and the
        address's failed authentications too (429 once over, see below)."""
        if not self.enabled:
            return
        key = _username_key(username)
        counted = self.settings.username_failures_limit()
        decision = await self._guard(f"loginfail:{key}", counted)
        failures = counted.burst - decision.remaining
        seconds = self.settings.username_lock_seconds(failures)
        if seconds:
            await self._guard(f"loginlock:{key}", self.settings.username_lock_limit(), seconds)
        await self.record_failed_auth(request)

    async def record_failed_auth(self, request: Request) -> None:
        """Count a failed authentication against the client address; once the address
        is over its allowance, raise 429 (the caller answers 401 otherwise).

        Only failing attempts are refused: a valid credential from the same address is
        never looked at here. The trade-off: a blocked address can still learn whether a
        credential is valid (200 versus 429) as fast as it can send them, at the cost of
        one indexed lookup each. For API keys (256 random bits) and signed tokens that
        oracle is worthless; passwords, the only guessable secret, are accepted only by
        ``POST /v1/token``, where every attempt is charged to the address's login limit
        and wrong ones to the username's backoff.
        """
        if not self.enabled:
            return
        client = request_client_key(request)
        decision = await self._guard(f"authfail:{client}", self.settings.failed_auth_limit())
        if not decision.allowed:
            raise RateLimited(
                "too many failed authentications from this address: retry later",
                details={"limit": "failed_auth"},
                headers=decision.headers(),
            )

    @staticmethod
    def _record(request: Request, decisions: list[Decision]) -> None:
        """The strictest decision so far, and the headers it gives the response."""
        previous: Decision | None = getattr(request.state, "rate_limit_decision", None)
        if previous is not None:
            decisions = [previous, *decisions]
        if not decisions:
            return
        chosen = decisions[0] if len(decisions) == 1 else strictest(decisions)
        request.state.rate_limit_decision = chosen
        setattr(request.state, HEADERS_STATE, chosen.headers())
