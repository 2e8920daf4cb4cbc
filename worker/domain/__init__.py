"""Plain-Python domain of callsync: no I/O, no frameworks."""
