"""Adapters at the edge: HTTP clients of the CRMs and the database repository."""
