"""Aliases moved through the admin API, stored in the database and applied by every
worker (:mod:`.store`)."""
