"""The Vault API: create/open/close, the six TokenStore methods with the store's matching
rules, passphrase and key management, verify/repair, and every exception class.

Protects against: a binding that drops or mangles a field, answers a lookup with the wrong
token, leaves a vault locked after close, or turns a library error into the wrong (or no)
exception."""

import os

import pytest

import tokenvault
from helpers import PASSPHRASE, damage_blob, damaged_vault, reopen
from tokenvault import Token

ALICE = dict(
    user_name="alice@example.com",
    client_id="1000.ALICE",
    client_secret="alice-secret",
    refresh_token="1000.refresh.alice",
    access_token="1000.access.alice",
    grant_token="1000.grant.alice",
    expiry_time=1_764_000_000_000,
    redirect_url="https://example.com/cb",
    api_domain="https://www.zohoapis.com",
)
BOB = dict(
    user_name="bob@example.com",
    client_id="1000.BOB",
    client_secret="bob-secret",
    refresh_token="1000.refresh.bob",
    access_token="1000.access.bob",
)


def without_id(token):
    d = token.to_dict()
    del d["id"]
    return d


# --- create, open, close -------------------------------------------------------------


def test_a_saved_token_is_found_again_after_reopening(vault, vault_path):
    saved = vault.save_token(Token(**ALICE))
    vault.close()
    with reopen(vault_path) as v:
        found = v.find_token({"user_name": ALICE["user_name"]})
        assert found == saved
        assert without_id(found) == dict(ALICE)


def test_the_engine_is_chosen_at_create_and_recognised_at_open(tmp_path, engine):
    path = tmp_path / "v"
    tokenvault.Vault.create(path, PASSPHRASE, kdf="floor", engine=engine).close()
    assert (path / "gen-1" / "vault.redb").is_file() == (engine == "redb")
    with tokenvault.Vault.open(path, PASSPHRASE, kdf="floor") as v:
        assert v.engine == engine


def test_an_unknown_engine_is_refused_and_nothing_is_created(tmp_path):
    with pytest.raises(tokenvault.StorageError, match="unknown storage engine"):
        tokenvault.Vault.create(tmp_path / "v", PASSPHRASE, kdf="floor", engine="lmdb")
    assert not (tmp_path / "v").exists()


def test_every_field_round_trips(vault):
    saved = vault.save_token(dict(ALICE, id="my-id"))
    assert saved.to_dict() == dict(ALICE, id="my-id")
    assert vault.find_token_by_id("my-id").to_dict() == dict(ALICE, id="my-id")


def test_create_accepts_str_and_pathlike(tmp_path):
    with tokenvault.Vault.create(str(tmp_path / "a"), PASSPHRASE, kdf="floor") as a:
        assert os.fspath(a.path) == str(tmp_path / "a")
    with tokenvault.Vault.create(tmp_path / "b" / "nested", PASSPHRASE, kdf="floor") as b:
        assert b.path == tmp_path / "b" / "nested"


def test_with_block_closes_and_releases_the_lock(vault_path):
    with tokenvault.Vault.create(vault_path, PASSPHRASE, kdf="floor") as v:
        assert not v.closed
        v.save_token(ALICE)
    assert v.closed
    with pytest.raises(tokenvault.Error, match="closed"):
        v.get_tokens()
    with reopen(vault_path) as again:
        assert len(again.get_tokens()) == 1


def test_with_block_closes_on_an_exception_and_does_not_swallow_it(vault_path):
    with pytest.raises(KeyError):
        with tokenvault.Vault.create(vault_path, PASSPHRASE, kdf="floor") as v:
            raise KeyError("boom")
    assert v.closed
    reopen(vault_path).close()


def test_close_twice_is_harmless_and_every_method_then_raises(vault):
    vault.close()
    vault.close()
    calls = [
        lambda: vault.find_token(ALICE),
        lambda: vault.save_token(ALICE),
        lambda: vault.delete_token("x"),
        vault.get_tokens,
        vault.delete_tokens,
        lambda: vault.find_token_by_id("x"),
        lambda: vault.change_passphrase("new"),
        lambda: vault.rekey("new"),
        vault.verify,
        vault.repair,
        vault.compact,
        vault.flush,
    ]
    for call in calls:
        with pytest.raises(tokenvault.Error, match="closed"):
            call()


def test_repr_names_the_path_and_state(vault, vault_path):
    assert str(vault_path) in repr(vault) and "open" in repr(vault)
    vault.close()
    assert "closed" in repr(vault)


def test_buffered_vault_keeps_what_flush_wrote(vault_path):
    v = tokenvault.Vault.create(vault_path, PASSPHRASE, kdf="floor", durable=False)
    v.save_token(ALICE)
    v.flush()
    v.close()
    with reopen(vault_path) as again:
        assert again.find_token({"user_name": ALICE["user_name"]}) is not None


# --- the six TokenStore methods ------------------------------------------------------


def test_save_token_assigns_a_random_id_and_updates_the_token_in_place(vault):
    t = Token(**ALICE)
    returned = vault.save_token(t)
    assert returned is t
    assert isinstance(t.id, str) and len(t.id) >= 22
    other = vault.save_token(dict(BOB))
    assert other.id != t.id


def test_save_token_from_a_dict_returns_a_new_token_and_leaves_the_dict(vault):
    d = dict(ALICE)
    t = vault.save_token(d)
    assert isinstance(t, Token) and t.id
    assert "id" not in d


def test_an_update_keeps_the_id_and_every_field_it_does_not_carry(vault):
    first = vault.save_token(dict(ALICE))
    update = vault.save_token(
        {"id": first.id, "access_token": "1000.access.new", "expiry_time": 42}
    )
    assert update.id == first.id
    assert update.to_dict() == dict(
        ALICE, id=first.id, access_token="1000.access.new", expiry_time=42
    )
    assert len(vault.get_tokens()) == 1


def test_a_save_without_id_updates_the_token_find_token_returns(vault):
    first = vault.save_token(dict(ALICE))
    second = vault.save_token(
        {"user_name": ALICE["user_name"], "access_token": "1000.access.2"}
    )
    assert second.id == first.id
    assert second.refresh_token == ALICE["refresh_token"]
    assert len(vault.get_tokens()) == 1


def test_a_token_with_nothing_to_store_is_invalid_and_nothing_is_written(vault):
    for nothing in [{}, {"user_name": "carol"}, {"client_id": "1", "client_secret": "s"}]:
        with pytest.raises(tokenvault.InvalidToken):
            vault.save_token(nothing)
    assert vault.get_tokens() == []


def test_a_second_token_with_a_taken_user_name_is_invalid(vault):
    a = vault.save_token(dict(ALICE))
    b = vault.save_token(dict(BOB))
    with pytest.raises(tokenvault.InvalidToken):
        vault.save_token({"id": b.id, "user_name": ALICE["user_name"]})
    assert vault.find_token({"user_name": ALICE["user_name"]}).id == a.id
    assert vault.find_token_by_id(b.id).user_name == BOB["user_name"]


def test_find_token_by_user_name_tries_nothing_else(vault):
    vault.save_token(dict(ALICE))
    assert vault.find_token({"user_name": ALICE["user_name"]}).user_name == ALICE["user_name"]
    # The user name decides even when another key would match.
    q = {"user_name": "nobody@example.com", "access_token": ALICE["access_token"]}
    assert vault.find_token(q) is None


def test_find_token_by_user_is_find_token_with_a_user_name(vault):
    a = vault.save_token(dict(ALICE))
    vault.save_token(dict(BOB))
    found = vault.find_token_by_user(ALICE["user_name"])
    assert found == vault.find_token({"user_name": ALICE["user_name"]}) == a
    assert vault.find_token_by_user("nobody@example.com") is None
    assert vault.find_token_by_user("") is None
    # An update is seen by the next lookup (the vault caches what it read).
    vault.save_token({"id": a.id, "access_token": "1000.access.new"})
    assert vault.find_token_by_user(ALICE["user_name"]).access_token == "1000.access.new"
    vault.delete_token(a.id)
    assert vault.find_token_by_user(ALICE["user_name"]) is None
    with pytest.raises(TypeError):
        vault.find_token_by_user(None)


def test_find_token_by_access_token_needs_no_client_credentials(vault):
    vault.save_token(dict(ALICE))
    found = vault.find_token({"access_token": ALICE["access_token"]})
    assert found.user_name == ALICE["user_name"]
    with_client = {
        "access_token": ALICE["access_token"],
        "client_id": ALICE["client_id"],
        "client_secret": ALICE["client_secret"],
    }
    assert vault.find_token(with_client) is None


def test_find_token_by_grant_then_refresh_within_the_client_id(vault):
    vault.save_token(dict(ALICE))
    client = {"client_id": ALICE["client_id"], "client_secret": "rotated"}
    assert vault.find_token(dict(client, grant_token=ALICE["grant_token"])) is not None
    assert vault.find_token(dict(client, refresh_token=ALICE["refresh_token"])) is not None
    # A grant token that no longer matches falls through to the refresh token.
    stale = dict(client, grant_token="1000.grant.used", refresh_token=ALICE["refresh_token"])
    assert vault.find_token(stale).user_name == ALICE["user_name"]
    # Another client id finds nothing.
    other = {"client_id": "1000.OTHER", "client_secret": "s", "grant_token": ALICE["grant_token"]}
    assert vault.find_token(other) is None
    # Without client credentials the refresh token is no key.
    assert vault.find_token({"refresh_token": ALICE["refresh_token"]}) is None


def test_find_token_with_no_usable_key_finds_nothing(vault):
    vault.save_token(dict(ALICE))
    for query in [{}, {"client_id": ALICE["client_id"]}, {"id": "1"}, {"user_name": ""}]:
        assert vault.find_token(query) is None


def test_delete_token_removes_it_and_its_index_entries(vault):
    a = vault.save_token(dict(ALICE))
    b = vault.save_token(dict(BOB))
    vault.delete_token(a.id)
    assert vault.find_token_by_id(a.id) is None
    assert vault.find_token({"user_name": ALICE["user_name"]}) is None
    assert vault.find_token({"access_token": ALICE["access_token"]}) is None
    assert [t.id for t in vault.get_tokens()] == [b.id]
    vault.delete_token(a.id)  # an absent id is not an error
    vault.delete_token("never-was")
    assert vault.verify().is_clean()


def test_get_tokens_returns_every_token_once(vault):
    saved = {vault.save_token({"user_name": f"u{i}", "refresh_token": f"r{i}"}).id for i in range(30)}
    got = vault.get_tokens()
    assert len(got) == 30 and {t.id for t in got} == saved


def test_delete_tokens_deletes_every_token_for_good(vault, vault_path):
    for i in range(12):
        vault.save_token({"user_name": f"u{i}", "access_token": f"a{i}"})
    vault.delete_tokens()
    assert vault.get_tokens() == []
    assert vault.find_token({"user_name": "u3"}) is None
    vault.close()
    with reopen(vault_path) as again:
        assert again.get_tokens() == []


def test_find_token_by_id_of_an_unknown_id_is_none(vault):
    vault.save_token(dict(ALICE))
    assert vault.find_token_by_id("unknown") is None
    assert vault.find_token_by_id("") is None


def test_empty_strings_are_stored_as_absent(vault):
    t = vault.save_token(dict(ALICE, redirect_url="", api_domain=""))
    assert t.redirect_url is None and t.api_domain is None
    # ... and never overwrite a stored value.
    again = vault.save_token({"id": t.id, "client_secret": "", "access_token": "new"})
    assert again.client_secret == ALICE["client_secret"]


# --- passphrase and keys -------------------------------------------------------------


def test_a_wrong_passphrase_is_refused_and_changes_nothing(vault, vault_path):
    vault.save_token(dict(ALICE))
    vault.close()
    with pytest.raises(tokenvault.WrongPassphrase):
        reopen(vault_path, "not the passphrase")
    with pytest.raises(tokenvault.WrongPassphrase):
        reopen(vault_path, "")
    with reopen(vault_path) as v:
        assert len(v.get_tokens()) == 1


def test_change_passphrase_switches_which_passphrase_opens(vault, vault_path):
    vault.save_token(dict(ALICE))
    vault.change_passphrase("a new passphrase")
    vault.close()
    with pytest.raises(tokenvault.WrongPassphrase):
        reopen(vault_path)
    with reopen(vault_path, "a new passphrase") as v:
        assert v.find_token({"user_name": ALICE["user_name"]}) is not None


def test_rekey_keeps_every_token_under_the_new_passphrase(vault, vault_path):
    ids = {vault.save_token({"user_name": f"u{i}", "access_token": f"a{i}"}).id for i in range(10)}
    vault.rekey("rekeyed")
    assert {t.id for t in vault.get_tokens()} == ids
    assert vault.find_token({"access_token": "a7"}).user_name == "u7"
    vault.close()
    with pytest.raises(tokenvault.WrongPassphrase):
        reopen(vault_path)
    with reopen(vault_path, "rekeyed") as v:
        assert {t.id for t in v.get_tokens()} == ids
        assert v.verify().is_clean()


def test_verify_counts_records_and_index_entries(vault):
    report = vault.verify()
    assert report.is_clean() and (report.records, report.index_entries) == (0, 0)
    vault.save_token(dict(ALICE))  # user, access, refresh, grant: four entries
    vault.save_token({"user_name": "u", "access_token": "a"})
    report = vault.verify()
    assert report.is_clean()
    assert (report.records, report.index_entries, report.problems) == (2, 6, [])
    assert "records=2" in repr(report)


def test_repair_of_a_clean_vault_changes_nothing(vault):
    saved = vault.save_token(dict(ALICE))
    report = vault.repair()
    assert report.is_clean() and report.records == 1
    assert vault.find_token({"user_name": ALICE["user_name"]}) == saved


# --- the exceptions ------------------------------------------------------------------


def test_every_exception_is_a_tokenvault_error():
    for name in [
        "WrongPassphrase",
        "Corrupted",
        "InvalidToken",
        "VaultExists",
        "VaultNotFound",
        "VaultLocked",
        "InvalidKdfParams",
        "StorageError",
    ]:
        cls = getattr(tokenvault, name)
        assert issubclass(cls, tokenvault.Error) and cls is not tokenvault.Error
        assert cls.__module__ == "tokenvault" and cls.__doc__
    assert issubclass(tokenvault.Error, Exception)


def test_create_where_a_vault_or_other_files_are_is_vault_exists(vault, vault_path, tmp_path):
    with pytest.raises(tokenvault.VaultExists):
        tokenvault.Vault.create(vault_path, PASSPHRASE, kdf="floor")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(tokenvault.VaultExists):
        tokenvault.Vault.create(other, PASSPHRASE, kdf="floor")
    assert os.listdir(other) == ["notes.txt"]


def test_open_where_no_vault_is_is_vault_not_found_and_creates_nothing(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(tokenvault.VaultNotFound):
        reopen(missing)
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(tokenvault.VaultNotFound):
        reopen(empty)
    assert os.listdir(empty) == []


def test_a_second_open_in_the_same_process_is_vault_locked(vault, vault_path):
    with pytest.raises(tokenvault.VaultLocked):
        reopen(vault_path)
    vault.close()
    reopen(vault_path).close()


@pytest.mark.parametrize(
    "kdf",
    [
        (1024, 1, 1),
        (19 * 1024, 1, 1),
        {"memory_kib": 19 * 1024, "iterations": 2, "parallelism": 0},
        [2 * 1024 * 1024, 2, 1],
        (19 * 1024, 9, 1),
        (-1, 2, 1),
        (2**40, 2, 1),
    ],
)
def test_kdf_parameters_outside_floor_and_ceiling_are_invalid(vault_path, kdf):
    with pytest.raises(tokenvault.InvalidKdfParams):
        tokenvault.Vault.create(vault_path, PASSPHRASE, kdf=kdf)
    assert not vault_path.exists()


@pytest.mark.parametrize(
    "kdf",
    ["floor", tokenvault.KDF_FLOOR, {"memory_kib": 19 * 1024, "iterations": 2, "parallelism": 1}],
)
def test_kdf_accepts_a_preset_a_tuple_or_a_dict(vault_path, kdf):
    tokenvault.Vault.create(vault_path, PASSPHRASE, kdf=kdf).close()
    reopen(vault_path).close()


@pytest.mark.parametrize(
    "kdf, error",
    [
        ("fastest", ValueError),
        ((19 * 1024, 2), TypeError),
        ({"memory_kib": 19 * 1024, "iterations": 2}, TypeError),
        ({"memory_kib": 19 * 1024, "iterations": 2, "parallelism": 1, "salt": 1}, TypeError),
        ((19 * 1024, 2.5, 1), TypeError),
        ((19 * 1024, True, 1), TypeError),
        (42, TypeError),
    ],
)
def test_malformed_kdf_arguments_are_type_or_value_errors(vault_path, kdf, error):
    with pytest.raises(error):
        tokenvault.Vault.create(vault_path, PASSPHRASE, kdf=kdf)
    assert not vault_path.exists()


def test_the_kdf_presets_are_exported():
    assert tokenvault.KDF_FLOOR == (19 * 1024, 2, 1)
    assert tokenvault.KDF_RECOMMENDED == (64 * 1024, 3, 4)
    assert tokenvault.KDF_CEILING == (1024 * 1024, 8, 16)


def test_a_vault_under_a_regular_file_is_a_storage_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(tokenvault.StorageError):
        tokenvault.Vault.create(blocker / "vault", PASSPHRASE, kdf="floor")


def test_a_vault_whose_only_record_is_damaged_is_corrupted(vault_path):
    # On sled, whose blob file damage_blob edits (the Rust suites damage either engine).
    vault = tokenvault.Vault.create(vault_path, PASSPHRASE, kdf="floor", engine="sled")
    vault.save_token({"user_name": "big", "access_token": "A" * (1 << 20)})
    vault.close()
    damage_blob(vault_path)
    with pytest.raises(tokenvault.Corrupted) as caught:
        reopen(vault_path)
    assert "A" * 16 not in str(caught.value)


def test_one_damaged_record_is_corrupted_is_reported_and_repair_sets_it_aside(tmp_path):
    path, small = damaged_vault(tmp_path)
    v = reopen(path)
    with v:
        with pytest.raises(tokenvault.Corrupted):
            v.find_token({"user_name": "big"})
        with pytest.raises(tokenvault.Corrupted):
            v.get_tokens()
        for t in small:
            assert v.find_token({"user_name": t.user_name}) == t
        report = v.verify()
        assert not report.is_clean() and report.records == 3
        assert any("unreadable" in p for p in report.problems)
        assert not any("AAAA" in p for p in report.problems)
        after = v.repair()
        # The record moves into the quarantine (bytes kept, named by its id); the vault
        # is clean and complete without it.
        assert after.is_clean(), after.problems
        assert len(after.set_aside) == 1 and after.set_aside == after.quarantined
        assert after.set_aside[0].startswith("token ")
        assert v.find_token({"user_name": "big"}) is None
        assert v.find_token({"access_token": "a1"}) == small[1]
        assert sorted(t.id for t in v.get_tokens()) == sorted(t.id for t in small)
        again = v.repair()
        assert again.is_clean() and again.set_aside == [] and again.quarantined == after.quarantined


def test_compact_keeps_every_token_and_removes_deleted_ones_from_the_files(vault, vault_path):
    kept = vault.save_token({"user_name": "kept", "access_token": "SECRET-kept-access"})
    gone = vault.save_token({"user_name": "gone", "access_token": "SECRET-gone-access"})
    vault.delete_token(gone.id)
    vault.compact()
    assert vault.get_tokens() == [kept]
    generations = [p for p in os.listdir(vault_path) if p.startswith("gen-")]
    assert len(generations) == 1, generations


def test_errors_never_carry_the_passphrase(vault, vault_path):
    vault.close()
    secret = "this passphrase must not leak"
    with pytest.raises(tokenvault.WrongPassphrase) as caught:
        reopen(vault_path, secret)
    assert secret not in str(caught.value) and secret not in repr(caught.value)


def test_arguments_of_the_wrong_type_are_type_errors(vault, tmp_path):
    with pytest.raises(TypeError):
        vault.save_token(["user_name", "alice"])
    with pytest.raises(TypeError):
        vault.save_token({"user_name": 5, "access_token": "a"})
    with pytest.raises(TypeError):
        vault.save_token({"unknown_field": "x", "access_token": "a"})
    with pytest.raises(TypeError):
        vault.find_token_by_id(5)
    with pytest.raises(TypeError):
        tokenvault.Vault.create(tmp_path / "x", b"bytes passphrase", kdf="floor")
    with pytest.raises(TypeError):
        tokenvault.Vault.create(42, PASSPHRASE, kdf="floor")
    with pytest.raises(ValueError):
        tokenvault.Vault.create("s3://bucket/vaults/x", PASSPHRASE, kdf="floor")
    assert vault.get_tokens() == []
