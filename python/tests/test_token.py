"""The Token class: keyword-only construction, typed attributes, equality, and a repr that
never shows a secret.

Protects against: secrets leaking into logs and tracebacks through repr/str, and a token
silently taking a value of the wrong type."""

import pytest

import tokenvault
from tokenvault import Token

SECRETS = dict(
    client_secret="s3cret-client",
    refresh_token="1000.refresh-secret",
    access_token="1000.access-secret",
    grant_token="1000.grant-secret",
)


def test_every_field_defaults_to_none():
    t = Token()
    assert all(getattr(t, f) is None for f in tokenvault.TOKEN_FIELDS)
    assert t.to_dict() == {f: None for f in tokenvault.TOKEN_FIELDS}


def test_the_constructor_takes_keywords_only():
    with pytest.raises(TypeError):
        Token("alice@example.com")
    with pytest.raises(TypeError):
        Token(user="alice")


def test_repr_and_str_never_show_a_secret():
    t = Token(id="id-1", user_name="alice@example.com", client_id="1000.ABC", expiry_time=7, **SECRETS)
    for text in (repr(t), str(t), repr([t]), f"{t}"):
        for secret in SECRETS.values():
            assert secret not in text
        assert "[REDACTED]" in text
        assert "alice@example.com" in text and "1000.ABC" in text and "expiry_time=7" in text


def test_repr_of_hostile_values_stays_one_python_literal():
    t = Token(user_name="a'b\"c\nd\x00")
    assert repr(t) == "Token(user_name=" + repr("a'b\"c\nd\x00") + ")"


def test_attributes_are_settable_and_typed():
    t = Token()
    t.user_name = "bob"
    t.expiry_time = 123
    t.access_token = None
    assert (t.user_name, t.expiry_time) == ("bob", 123)
    with pytest.raises(TypeError):
        t.user_name = 5
    with pytest.raises(TypeError):
        t.expiry_time = "123"
    with pytest.raises(OverflowError):
        t.expiry_time = 2**63
    with pytest.raises(AttributeError):
        t.colour = "blue"


def test_equality_compares_every_field():
    a = Token(user_name="a", access_token="x")
    assert a == Token(user_name="a", access_token="x")
    assert a != Token(user_name="a", access_token="y")
    assert a != Token(user_name="a", access_token="x", expiry_time=1)
    assert a != {"user_name": "a", "access_token": "x"}


def test_to_dict_round_trips_through_the_constructor():
    t = Token(id="i", user_name="u", client_id="c", expiry_time=-5, redirect_url="r", api_domain="d", **SECRETS)
    assert Token(**t.to_dict()) == t
    assert list(t.to_dict()) == list(tokenvault.TOKEN_FIELDS)
