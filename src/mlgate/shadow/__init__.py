"""Shadow (challenger) versions scored off the request path (:mod:`.scorer`)."""
