"""The HTTP server side of `mlgate serve`: what uvicorn does below the ASGI app.

:mod:`mlgate.server.protocol` guards each connection (request-head size, header, body
and idle timeouts, a connection cap, lingering close, graceful shutdown) before a
request reaches the app; :mod:`mlgate.server.limits` holds those limits.
"""
