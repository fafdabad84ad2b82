"""The exact-match prediction cache: a data-plane step (:mod:`.step`) over a memory or
Redis backend (:mod:`.backends`)."""
