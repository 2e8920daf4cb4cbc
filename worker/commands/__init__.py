"""`callsync` commands that live in their own modules; worker.cli registers each one."""
