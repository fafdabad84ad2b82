"""The pieces of mlgate's benchmark harness (``bench/run.py`` is the command)."""
