"""callsync: Genesys phone calls into Oracle Fusion Service and Caliq, exactly once.

`celery -A worker worker -Q callsync` finds the Celery application here as `worker.app`.
"""

from worker.celery_app import app

celery = app

__all__ = ["app", "celery"]
