"""Metrics, access logs, traces and detailed health of a running gateway.

- :mod:`.metrics`: the app-owned Prometheus registry and every ``mlgate_*`` metric
  (multiprocess-safe under ``mlgate serve --workers N``);
- :mod:`.observer`: the data plane observer that counts predictions (counters only);
- :mod:`.state`: gauges read at scrape time (audit queue, drift, live accuracy, ...);
- :mod:`.multiprocess`: the per-run metrics directory of a multi-worker server;
- :mod:`.http`: the pure-ASGI middleware that measures every request (hot routes too)
  and writes the access log.
"""
