import pytest

from worker.celery_app import make_app
from worker.settings import BaseConfig, SettingsError, delivery_warnings, load_settings

CRM = {
    "oracle_base_url": "https://oracle.example.test",
    "oracle_username": "svc",
    "oracle_password": "s3cret-pass",
    "caliq_base_url": "https://api.caliq.example.test",
    "caliq_api_key": "caliq-key-123",
    "caliq_channel_id": 1,
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("ORACLE_BASE_URL", "ORACLE_USERNAME", "ORACLE_PASSWORD", "ORACLE_TOKEN",
                 "CALIQ_BASE_URL", "CALIQ_API_KEY", "CALIQ_CHANNEL_ID", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)


def test_missing_crm_settings_are_each_named():
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    for name in ("ORACLE_BASE_URL", "CALIQ_BASE_URL", "CALIQ_API_KEY", "CALIQ_CHANNEL_ID"):
        assert name in message


def test_malformed_setting_is_named_without_echoing_secrets():
    with pytest.raises(SettingsError) as caught:
        load_settings(**{**CRM, "caliq_channel_id": "phone", "oracle_base_url": "not a url"})
    message = str(caught.value)
    assert "CALIQ_CHANNEL_ID" in message and "ORACLE_BASE_URL" in message
    assert "caliq-key-123" not in message and "s3cret-pass" not in message


def test_oracle_needs_basic_or_token():
    crm = {k: v for k, v in CRM.items() if k != "oracle_password"}
    with pytest.raises(SettingsError, match="ORACLE_TOKEN"):
        load_settings(**crm)
    settings = load_settings(**crm, oracle_token="tok")
    assert settings.oracle_api_root == (
        "https://oracle.example.test/crmRestApi/resources/11.13.18.05")


def test_secrets_do_not_print():
    settings = load_settings(**CRM)
    assert "s3cret-pass" not in repr(settings) and "caliq-key-123" not in repr(settings)
    assert set(settings.secrets()) == {"s3cret-pass", "caliq-key-123"}
    assert "caliq_api_key" not in settings.mapping_settings()


def test_delivery_warnings_flag_risky_combinations():
    safe = load_settings(**CRM)
    assert delivery_warnings(safe) == []
    risky = load_settings(**CRM, celery_visibility_timeout=60, task_time_limit_seconds=900,
                          lease_seconds=10)
    text = " ".join(delivery_warnings(risky))
    assert "TASK_TIME_LIMIT_SECONDS" in text
    assert "CELERY_VISIBILITY_TIMEOUT=60" in text
    assert "LEASE_SECONDS=10" in text


def test_the_prefetch_multiplier_is_one_unless_set_and_reaches_the_app(monkeypatch):
    monkeypatch.delenv("CELERY_PREFETCH_MULTIPLIER", raising=False)
    assert make_app(BaseConfig()).conf.worker_prefetch_multiplier == 1
    monkeypatch.setenv("CELERY_PREFETCH_MULTIPLIER", "4")
    assert make_app(BaseConfig()).conf.worker_prefetch_multiplier == 4
    monkeypatch.setenv("CELERY_PREFETCH_MULTIPLIER", "0")
    with pytest.raises(SettingsError, match="CELERY_PREFETCH_MULTIPLIER"):
        load_settings(**CRM)
