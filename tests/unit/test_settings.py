"""Settings that decide who may reach the archive."""

from __future__ import annotations

import pytest

from app.settings import Settings


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_without_sign_in_is_the_easy_default(host: str) -> None:
    assert Settings.from_env({}, host=host).oidc_config is None


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.7", "::", "pacs.example.org"])
def test_other_addresses_without_sign_in_refuse_to_start(host: str) -> None:
    with pytest.raises(ValueError, match=r"PACS_OIDC_ISSUER.*PACS_ALLOW_ANONYMOUS"):
        Settings.from_env({}, host=host)


def test_anonymous_access_can_be_allowed_explicitly() -> None:
    settings = Settings.from_env({"PACS_ALLOW_ANONYMOUS": "true"}, host="0.0.0.0")
    assert settings.oidc_config is None


def test_tenants_of_tokens_without_the_claim_are_a_setting() -> None:
    env = {"PACS_OIDC_ISSUER": "https://idp", "PACS_OIDC_AUDIENCE": "a"}
    assert Settings.from_env(env).oidc_config.tenants_when_absent == {"default"}  # type: ignore[union-attr]
    strict = Settings.from_env({**env, "PACS_OIDC_TENANTS_WHEN_ABSENT": ""}).oidc_config
    assert strict is not None and strict.tenants_when_absent == frozenset()
    with pytest.raises(ValueError, match="PACS_OIDC_TENANTS_WHEN_ABSENT"):
        Settings.from_env({**env, "PACS_OIDC_TENANTS_WHEN_ABSENT": "Bad/Name"})


def test_sign_in_settings() -> None:
    env = {
        "PACS_OIDC_ISSUER": "https://idp.example.org/realms/pacs",
        "PACS_OIDC_AUDIENCE": "pacs",
        "PACS_OIDC_ALGORITHMS": "RS256, ES256",
        "PACS_OIDC_PERMISSIONS_CLAIM": "realm_access.roles",
    }
    config = Settings.from_env(env, host="0.0.0.0").oidc_config
    assert config is not None
    assert config.algorithms == {"RS256", "ES256"}
    assert config.permissions_claim == "realm_access.roles"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PACS_OIDC_ISSUER": "https://idp"}, "PACS_OIDC_AUDIENCE"),
        ({"PACS_OIDC_ISSUER": "https://idp", "PACS_OIDC_AUDIENCE": "a",
          "PACS_OIDC_ALGORITHMS": "none"}, "not a signature algorithm"),
        ({"PACS_OIDC_ISSUER": "https://idp", "PACS_OIDC_AUDIENCE": "a",
          "PACS_OIDC_ALGORITHMS": "RS256,HS256"}, "PACS_OIDC_HMAC_SECRET"),
    ],
)  # fmt: skip
def test_bad_sign_in_settings_are_one_clear_line(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env)


def test_patient_mismatch_is_refuse_or_warn() -> None:
    assert Settings.from_env({}).patient_mismatch == "refuse"
    assert Settings.from_env({"PACS_PATIENT_MISMATCH": "warn"}).patient_mismatch == "warn"
    with pytest.raises(ValueError, match="PACS_PATIENT_MISMATCH"):
        Settings.from_env({"PACS_PATIENT_MISMATCH": "accept"})


def test_orphan_sweep_settings_are_seconds_of_zero_or_more() -> None:
    default = Settings.from_env({})
    assert (default.orphan_grace, default.orphan_sweep_interval) == (3600, 21600)
    env = {"PACS_ORPHAN_GRACE": "600", "PACS_ORPHAN_SWEEP_INTERVAL": "0"}
    assert Settings.from_env(env).orphan_grace == 600
    for name in ("PACS_ORPHAN_GRACE", "PACS_ORPHAN_SWEEP_INTERVAL"):
        with pytest.raises(ValueError, match=name):
            Settings.from_env({name: "-1"})


def test_index_batch_wait_is_milliseconds_from_0_to_1000() -> None:
    assert Settings.from_env({}).index_batch_wait_ms == 5
    assert Settings.from_env({"PACS_INDEX_BATCH_WAIT_MS": "0"}).index_batch_wait_ms == 0
    for value in ("-1", "1001"):
        with pytest.raises(ValueError, match="PACS_INDEX_BATCH_WAIT_MS"):
            Settings.from_env({"PACS_INDEX_BATCH_WAIT_MS": value})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PACS_CHANGEFEED_DEFAULT_LIMIT": "0"}, "PACS_CHANGEFEED_DEFAULT_LIMIT"),
        ({"PACS_CHANGEFEED_DEFAULT_LIMIT": "101"}, r"PACS_CHANGEFEED_MAX_LIMIT \(100\)"),
        ({"PACS_CHANGEFEED_MAX_LIMIT": "5"}, r"PACS_CHANGEFEED_MAX_LIMIT \(5\)"),
        ({"PACS_CHANGEFEED_MAX_WAIT": "-1"}, "PACS_CHANGEFEED_MAX_WAIT"),
        ({"PACS_CHANGEFEED_POLL_MS": "0"}, "PACS_CHANGEFEED_POLL_MS"),
    ],
)
def test_change_feed_limits_are_checked_at_start(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env)
    default = Settings.from_env({})
    assert (default.changefeed_default_limit, default.changefeed_max_limit) == (10, 100)
    assert (default.changefeed_max_wait, default.changefeed_poll_ms) == (30, 500)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PACS_OUTBOX_BATCH": "0"}, "PACS_OUTBOX_BATCH"),
        ({"PACS_OUTBOX_POLL_MS": "0"}, "PACS_OUTBOX_POLL_MS"),
        ({"PACS_OUTBOX_LEASE": "0"}, "PACS_OUTBOX_LEASE"),
        ({"PACS_OUTBOX_RETRY_MAX": "-1"}, "PACS_OUTBOX_RETRY_MAX"),
        ({"PACS_KAFKA_TOPIC": "pacs changes"}, "PACS_KAFKA_TOPIC: 'pacs changes' is not"),
        ({"PACS_KAFKA_TOPIC": ""}, "PACS_KAFKA_TOPIC"),
        ({"PACS_KAFKA_BOOTSTRAP": "kafka-1"}, "PACS_KAFKA_BOOTSTRAP: 'kafka-1' is not host:port"),
        ({"PACS_KAFKA_BOOTSTRAP": "a:9092,,b:9092"}, "PACS_KAFKA_BOOTSTRAP: '' is not"),
        ({"PACS_KAFKA_SECURITY_PROTOCOL": "tls"}, "PACS_KAFKA_SECURITY_PROTOCOL: 'tls' is not"),
        (
            {"PACS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "PACS_KAFKA_USERNAME": "pacs"},
            "PACS_KAFKA_USERNAME and PACS_KAFKA_PASSWORD: both are needed with SASL_SSL",
        ),
        (
            {
                "PACS_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "PACS_KAFKA_SASL_MECHANISM": "GSSAPI",
                "PACS_KAFKA_USERNAME": "pacs",
                "PACS_KAFKA_PASSWORD": "secret",
            },
            "PACS_KAFKA_SASL_MECHANISM: 'GSSAPI' is not one of PLAIN, SCRAM-SHA-256",
        ),
    ],
)
def test_outbox_and_kafka_settings_are_checked_at_start(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env)


def test_kafka_is_off_by_default_and_takes_a_list_of_brokers() -> None:
    default = Settings.from_env({})
    assert (default.kafka_bootstrap, default.kafka_topic) == ("", "pacs.changes")
    on = Settings.from_env({"PACS_KAFKA_BOOTSTRAP": "kafka-1:9092, 10.0.0.2:9092,[::1]:9092"})
    assert on.kafka_bootstrap.startswith("kafka-1")


@pytest.mark.parametrize("name", ["PACS_STABLE_AFTER", "PACS_STABLE_SCAN_MS"])
def test_stable_study_times_are_checked_at_start(name: str) -> None:
    with pytest.raises(ValueError, match=f"{name}: must be at least 1"):
        Settings.from_env({name: "0"})
    default = Settings.from_env({})
    assert (default.stable_after, default.stable_scan_ms) == (60, 5000)
    assert Settings.from_env({name: "2"}) != default
