"""Hostile values: quotes, SQL, NUL bytes, 1 MiB strings and any Unicode in any field.

Protects against: what broke the SQL token stores (a quote in a user name, `' OR '1'='1`
returning another user's token, `1 OR 1=1` deleting everything), and against values
truncated at a NUL byte or mangled between Python and Rust."""

import random

import pytest

import tokenvault
from helpers import reopen
from tokenvault import Token

STRING_FIELDS = [f for f in tokenvault.TOKEN_FIELDS if f != "expiry_time"]

HOSTILE = [
    "o'brien@example.com",
    'say "hi"',
    "nobody' OR '1'='1",
    "x'; DROP TABLE oauthtoken; --",
    "1 OR 1=1",
    "%s %d {0} $1 ?",
    "\x00",
    "before\x00after",
    "tab\tnewline\ncr\r",
    "\\x00 not a NUL",
    " leading and trailing ",
    "émoji 🔐🗝️ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "עברית RTL \u202e override",
    "combining e\u0301 and zero\u200bwidth",
    "\u2028line separator\u2029",
    "\ufeffBOM \uffff nonchar",
    "\U0010ffff last code point",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_a_hostile_value_round_trips_in_every_field_and_finds_only_its_token(vault, vault_path, value):
    bystander = vault.save_token(
        {"user_name": "bystander@example.com", "client_id": "1000.B", "client_secret": "s",
         "access_token": "1000.access.bystander", "refresh_token": "1000.refresh.bystander"}
    )
    fields = {f: f"{f}:{value}" for f in STRING_FIELDS}
    fields["expiry_time"] = 1_764_000_000_000
    saved = vault.save_token(fields)
    assert saved.to_dict() == fields
    assert vault.find_token({"user_name": fields["user_name"]}) == saved
    assert vault.find_token({"access_token": fields["access_token"]}) == saved
    client = {"client_id": fields["client_id"], "client_secret": "x"}
    assert vault.find_token(dict(client, grant_token=fields["grant_token"])) == saved
    assert vault.find_token(dict(client, refresh_token=fields["refresh_token"])) == saved
    assert vault.find_token_by_id(fields["id"]) == saved
    # The value alone, as any key, finds nothing.
    assert vault.find_token({"user_name": value}) is None
    assert vault.find_token({"access_token": value}) is None
    assert vault.find_token_by_id(value) is None
    vault.delete_token(value)
    assert len(vault.get_tokens()) == 2
    vault.close()
    with reopen(vault_path) as v:
        assert v.find_token_by_id(fields["id"]) == saved
        assert v.find_token_by_id(bystander.id) == bystander
        v.delete_token(fields["id"])
        assert v.get_tokens() == [bystander]


def test_a_user_name_that_is_sql_never_reaches_another_users_token(vault):
    alice = vault.save_token({"user_name": "alice@example.com", "refresh_token": "1000.refresh.alice"})
    for injection in ["nobody' OR '1'='1", "' OR 1=1 --", "alice@example.com' --", "%"]:
        assert vault.find_token({"user_name": injection}) is None
        saved = vault.save_token({"user_name": injection, "refresh_token": "1000.refresh.mallory"})
        assert saved.id != alice.id
    assert vault.find_token({"user_name": "alice@example.com"}) == alice


def test_one_mib_values_in_every_field_round_trip(vault, vault_path):
    big = {f: (f[0] * (1 << 20)) for f in STRING_FIELDS}
    big["user_name"] = "\x00" * (1 << 20)
    saved = vault.save_token(big)
    assert saved.to_dict() == dict(big, expiry_time=None)
    assert vault.find_token({"user_name": big["user_name"]}) == saved
    assert vault.find_token({"access_token": big["access_token"]}) == saved
    # One character less is another value.
    assert vault.find_token({"access_token": big["access_token"][:-1]}) is None
    vault.close()
    with reopen(vault_path) as v:
        assert v.find_token_by_id(big["id"]) == saved


def test_random_unicode_in_every_field_round_trips(vault):
    rng = random.Random(20261202)

    def text():
        out = []
        for _ in range(rng.randrange(1, 40)):
            cp = rng.choice([rng.randrange(0, 0x80), rng.randrange(0x80, 0x800),
                             rng.randrange(0x800, 0x10000), rng.randrange(0x10000, 0x110000)])
            if 0xD800 <= cp <= 0xDFFF:  # surrogates are not Unicode scalar values
                cp = 0xFFFD
            out.append(chr(cp))
        return "".join(out)

    saved = []
    for i in range(200):
        fields = {f: f"{i}:{text()}" for f in STRING_FIELDS}
        fields["expiry_time"] = rng.randrange(-(2**63), 2**63)
        saved.append((fields, vault.save_token(fields)))
    for fields, token in saved:
        assert token.to_dict() == fields
        assert vault.find_token({"user_name": fields["user_name"]}) == token
        assert vault.find_token({"access_token": fields["access_token"]}) == token
    assert vault.verify().is_clean()


def test_a_lone_surrogate_is_refused_and_nothing_is_written(vault):
    with pytest.raises(UnicodeEncodeError):
        vault.save_token({"user_name": "bad\ud800", "access_token": "a"})
    with pytest.raises(UnicodeEncodeError):
        vault.find_token({"user_name": "bad\udfff"})
    with pytest.raises(UnicodeEncodeError):
        tokenvault.Vault.open(vault.path, "pass\ud800")
    assert vault.get_tokens() == []


def test_extreme_expiry_times_round_trip_and_out_of_range_ones_are_refused(vault):
    for ms in (-(2**63), -1, 0, 2**63 - 1):
        assert vault.save_token({"user_name": f"u{ms}", "access_token": f"a{ms}", "expiry_time": ms}).expiry_time == ms
    with pytest.raises(OverflowError):
        vault.save_token({"user_name": "x", "access_token": "x", "expiry_time": 2**63})
    with pytest.raises(TypeError):
        Token(expiry_time="1764000000000")


def test_hostile_passphrases_work(tmp_path):
    for i, passphrase in enumerate(["", "\x00", "' OR 1=1", "🔐" * 1000, "x" * (1 << 16)]):
        path = tmp_path / f"v{i}"
        tokenvault.Vault.create(path, passphrase, kdf="floor").close()
        with pytest.raises(tokenvault.WrongPassphrase):
            reopen(path, passphrase + "x")
        reopen(path, passphrase).close()
