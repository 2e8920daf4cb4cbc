"""How a process gets its services: built once, from what a worker's main process preloaded."""

import threading
import time

import pytest
from celery import signals

from worker import bootstrap
from worker.settings import SettingsError, load_settings

CRM = {
    "oracle_base_url": "https://oracle.example.test",
    "oracle_token": "token-abc",
    "caliq_base_url": "https://api.caliq.example.test",
    "caliq_api_key": "caliq-key-123",
    "caliq_channel_id": 1,
}


@pytest.fixture(autouse=True)
def fresh_process():
    bootstrap.reset_services()
    yield
    bootstrap.reset_services()


@pytest.fixture
def builds(monkeypatch):
    """build_services replaced at its seam: records each call, takes a while like the real one."""
    calls: list[tuple[object, object]] = []

    def build(settings, mappings=None):  # type: ignore[no-untyped-def]
        time.sleep(0.05)
        calls.append((settings, mappings))
        return object()

    monkeypatch.setattr(bootstrap, "build_services", build)
    monkeypatch.setattr(bootstrap, "get_settings", lambda: "the settings")
    return calls


def test_threads_asking_at_once_share_one_build(builds):
    start = threading.Barrier(16)
    got: list[object] = []

    def first_task() -> None:
        start.wait()
        got.append(bootstrap.get_services())

    threads = [threading.Thread(target=first_task) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(builds) == 1
    assert len(got) == 16 and all(services is got[0] for services in got)


def test_a_prefork_child_builds_as_it_starts_from_the_preloaded_mappings(builds, tmp_path):
    settings = load_settings(**CRM, database_url=f"sqlite:///{tmp_path / 'x.db'}")
    preloaded = bootstrap.preload(settings)
    assert builds == []

    signals.worker_process_init.send(sender=None)   # what billiard sends in a new child
    assert builds == [("the settings", preloaded)]
    bootstrap.get_services()                         # the first task: nothing more to build
    assert len(builds) == 1


@pytest.mark.parametrize(("url", "named"), [
    ("postgresql+nosuchdriver://svc:hunter2@db.example.test/callsync",
     "no driver for 'postgresql+nosuchdriver'"),
    ("svc:hunter2@db.example.test", "not a database URL"),
])
def test_a_database_url_without_a_driver_is_named_without_its_password(url, named):
    settings = load_settings(**CRM, database_url=url)
    with pytest.raises(SettingsError) as caught:
        bootstrap.preload(settings)
    message = str(caught.value)
    assert message.startswith("DATABASE_URL: ") and named in message
    assert "hunter2" not in message
