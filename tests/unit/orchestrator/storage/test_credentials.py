"""Node credentials are stored salted and hashed, and checked against the hash."""

from __future__ import annotations

from orchestrator.storage import hash_credential, new_credential, verify_credential


def test_the_credential_verifies_against_its_hash_and_others_do_not() -> None:
    credential = new_credential()

    stored = hash_credential(credential)

    assert credential not in stored
    assert verify_credential(credential, stored)
    assert not verify_credential(new_credential(), stored)
    assert not verify_credential(credential[:-1], stored)


def test_equal_credentials_hash_differently() -> None:
    credential = new_credential()

    assert hash_credential(credential) != hash_credential(credential)


def test_credentials_are_random_and_long() -> None:
    credentials = {new_credential() for _ in range(100)}

    assert len(credentials) == 100
    assert min(len(credential) for credential in credentials) >= 43


def test_a_malformed_stored_hash_verifies_nothing() -> None:
    credential = new_credential()

    for stored in ("", "plain-text", "md5$00$11", "sha256$zz$11", "sha256$00"):
        assert not verify_credential(credential, stored)
