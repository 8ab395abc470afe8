"""Redaction masks every common credential shape whole, whatever characters a password holds, in
every place error text leaves a group: dead-letter headers, log lines and spans."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dify_events.consumers.redact import redact
from tests.consumers import sample_handlers
from tests.consumers.support import app_event, publish, read_messages, running, wait_until
from tests.telemetry.test_logs import configured

# a password as people choose them: any printable character but whitespace (which ends an unquoted
# value: spaces, and the line and paragraph separators U+2028/U+2029 that regular expressions' \s matches)
passwords = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FFF,
                                  exclude_categories=("Cs", "Zs", "Zl", "Zp", "Cc")),
                    min_size=8, max_size=40)
ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
tokens = st.text(ALNUM + "-._~+/", min_size=12, max_size=60).filter(lambda t: sum(c in ALNUM for c in t) >= 8)
provider_keys = st.tuples(st.sampled_from(["sk-", "sk-proj-", "sk-ant-api03-", "sk_live_", "gsk_", "xai-", "hf_"]),
                          st.text(ALNUM + "-_", min_size=20, max_size=80)).map("".join)

# each shape: (the text with the secret, the text as it must come out)
SHAPES = {
    "url": lambda s: (f"could not connect to postgresql://events:{s}@db.example:5432/dify (timeout)",
                      "could not connect to postgresql://events:***@db.example:5432/dify (timeout)"),
    "key-value": lambda s: (f"connect failed: sasl.password={s} was refused",
                            "connect failed: sasl.password=*** was refused"),
    "json": lambda s: (json.dumps({"password": s, "user": "events"}),
                       json.dumps({"password": "***", "user": "events"})),
    "repr": lambda s: (repr({"sasl.password": s, "user": "events"}),  # repr quotes "***" as it quoted s
                       repr({"sasl.password": s, "user": "events"}).replace(repr(s), repr(s)[0] + "***" + repr(s)[0])),
    "api-key": lambda s: (f"POST /v1/chat?api_key={s} answered 401", "POST /v1/chat?api_key=*** answered 401"),
    "token": lambda s: (f"refresh failed: token={s} expired", "refresh failed: token=*** expired"),
    "header-json": lambda s: (json.dumps({"headers": {"X-Api-Key": s}}), json.dumps({"headers": {"X-Api-Key": "***"}})),
}
TOKEN_SHAPES = {
    "bearer": lambda t: (f"request headers: Authorization: Bearer {t} -> 403",
                         "request headers: Authorization: Bearer *** -> 403"),
    "basic": lambda t: (f"sent Basic {t} to the proxy", "sent Basic *** to the proxy"),
    "authorization-dict": lambda t: (repr({"Authorization": f"Bearer {t}"}), repr({"Authorization": "***"})),
}


@settings(max_examples=300, deadline=None)
@given(secret=passwords, shape=st.sampled_from(sorted(SHAPES)))
def test_a_password_of_any_characters_is_masked_whole(secret, shape):
    text, expected = SHAPES[shape](secret)
    assert redact(text) == expected


@settings(max_examples=200, deadline=None)
@given(token=tokens, shape=st.sampled_from(sorted(TOKEN_SHAPES)))
def test_bearer_and_basic_credentials_are_masked_whole(token, shape):
    text, expected = TOKEN_SHAPES[shape](token)
    assert redact(text) == expected


@settings(max_examples=200, deadline=None)
@given(key=provider_keys)
def test_model_providers_api_keys_are_masked(key):
    masked = redact(f"invalid api key {key} for gpt-4o")
    assert key not in masked and key[4:] not in masked and "***" in masked


@pytest.mark.parametrize("text", [
    "password authentication failed for user events", "total_tokens=500 max_tokens: 5",
    "the token_type is bearer", "partition events.app[3]@1204 (key app-1)", "https://kafka.example:9093/metadata",
])
def test_text_without_a_credential_is_left_alone(text):
    assert redact(text) == text


SECRETS = {"url": "Pw@0005,Tail@Q7z", "sasl": "Pw,0006tail", "api": "ak-Q7w9e1r3t5y", "bearer": "eyJhbGciOiJI.e30.Sfl",
           "provider": "sk-ant-api03-Xy12Ab34Cd56Ef78"}


class CredentialError(RuntimeError):
    """What an HTTP client or a driver says when a call with credentials fails."""

    def __init__(self, message: str):
        super().__init__(f"{message}: postgresql://events:{SECRETS['url']}@db/x refused; sasl.password="
                         f"{SECRETS['sasl']} rejected; GET /v1?api_key={SECRETS['api']} gave 401 with "
                         f"Authorization: Bearer {SECRETS['bearer']}; key {SECRETS['provider']} revoked")


def test_a_group_lets_no_credential_out_in_dead_letters_logs_or_spans(kafka_env, topic_factory, group_topics,
                                                                      producer_factory, consumer_factory,
                                                                      group_factory, sqlite_db, spans):
    provider, exporter = spans
    # Given a group whose handler fails with every credential shape in its error, traced and logging
    topic = topic_factory(f"{kafka_env}.app")
    _, dlq = group_topics("tel-secrets")
    behaviour = sample_handlers.Behaviour(fail={"app-leaky": -1}, error=CredentialError)
    group, _ = sample_handlers.recording_group("tel-secrets", behaviour, database_url=sqlite_db, max_attempts=2,
                                               min_backoff_s=0.01)
    publish(producer_factory(), topic, [app_event("app-leaky", 1)])
    # When it retries the message and dead-letters it
    with configured("json") as out, running(group, tracer_provider=provider) as runner:
        wait_until(lambda: runner.stats()["dead_lettered"] == 1, what="the dead letter")
    [dead] = read_messages(consumer_factory(group_factory(), [dlq]), 1)
    # Then no secret is in the dead letter's headers, the log lines, or any span's events, status or attributes
    places = {"headers": " ".join(v.decode(errors="replace") for _, v in dead.headers()), "logs": out.getvalue()}
    for span in exporter.get_finished_spans():
        places[f"span {span.name}"] = " ".join([str(span.status.description), *map(str, span.attributes.values()),
                                               *(str(v) for e in span.events for v in e.attributes.values())])
    for where, text in places.items():
        for name, secret in SECRETS.items():
            for part in (secret, secret[-6:]):
                assert part not in text, (where, name, part)
    # ... while each says what failed, masked
    assert "CredentialError: told to fail on app-leaky" in places["headers"]
    assert "postgresql://events:***@db/x" in places["logs"] and "Bearer ***" in places["logs"]
    exceptions = [e for s in exporter.get_finished_spans() for e in s.events if e.name == "exception"]
    assert exceptions and all("sasl.password=***" in e.attributes["exception.message"] for e in exceptions)
