# One image for every callsync process: worker, beat, migrations, the CLI and the simulators.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    # prometheus_client multi-process mode: must be set before any callsync process starts.
    PROMETHEUS_MULTIPROC_DIR=/tmp/callsync-metrics \
    LIVENESS_FILE=/tmp/callsync-alive

WORKDIR /app
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY mappings ./mappings
RUN pip install . \
    && useradd --create-home --uid 10001 callsync
ENV CALLSYNC_MAPPINGS_DIR=/app/mappings

USER callsync
EXPOSE 9100
CMD ["celery", "-A", "worker", "worker", "-Q", "callsync", "--loglevel", "INFO"]
