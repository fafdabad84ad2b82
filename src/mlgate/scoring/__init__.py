"""Scoring files of rows with a model: in this process or through a server (the
client), chunk by chunk, with the same result columns either way (``mlgate predict``)."""
