"""Genesys events for tests: the same generator as the demo and the benchmark."""

from worker.samples import T0, call_events, event, iso, stream, thread_events

__all__ = ["T0", "call_events", "event", "iso", "stream", "thread_events"]
