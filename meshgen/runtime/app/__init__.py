"""Entry points: ``python DIST`` (main), the in-process client (``Mesh``); loading and diffs of
tables."""
