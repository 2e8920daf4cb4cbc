"""Our own publishers (demo, benchmark) send an event as the README tells producers to: the
event in the body, only its Genesys id in the headers that monitoring shows."""

from __future__ import annotations

import base64
import json
import uuid

import redis
from celery import Celery

from tests.conftest import REDIS_URL
from worker.publishing import publish_event
from worker.samples import event


def test_the_event_is_in_the_body_and_only_its_id_in_the_headers() -> None:
    queue = f"test-publishing-{uuid.uuid4().hex[:8]}"
    sample = event("pub-1", status=3, text="Agent: Hello.\nCustomer: I was charged twice.")
    app = Celery(broker=REDIS_URL)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        publish_event(app, sample, queue=queue)
        raw = client.lpop(queue)
    finally:
        client.delete(queue)
        client.close()
        app.close()
    message = json.loads(raw)
    headers = message["headers"]
    assert headers["task"] == "callsync.phone_call"
    assert headers["argsrepr"] == "['pub-1']"
    for private in (sample["phone_number"], sample["text"][:20], sample["udata"]["LastName"]):
        assert private not in json.dumps(headers)
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    assert (args, kwargs) == ([sample], {})
