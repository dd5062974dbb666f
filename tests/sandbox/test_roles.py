"""Check-role secrets: a verifier PostgreSQL accepts, and a password file only its owner reads."""

from __future__ import annotations

import base64
import hashlib
import hmac

from drillkit.sandbox import roles


def test_scram_verifier_proves_the_password_as_postgresql_checks_it():
    verifier = roles.scram_verifier("s3cret", iterations=4096)
    method, rest = verifier.split("$", 1)
    assert method == "SCRAM-SHA-256"
    params, keys = rest.split("$")
    iterations, salt = params.split(":")
    stored_key, server_key = (base64.b64decode(k) for k in keys.split(":"))
    salted = hashlib.pbkdf2_hmac("sha256", b"s3cret", base64.b64decode(salt), int(iterations))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    assert hashlib.sha256(client_key).digest() == stored_key
    assert hmac.new(salted, b"Server Key", hashlib.sha256).digest() == server_key
    assert "s3cret" not in verifier
    assert roles.scram_verifier("s3cret") != verifier  # a new salt each time


def test_the_password_file_is_private_and_read_back_per_role(tmp_path):
    secrets = {
        "read": {"user": "drillkit_read_x", "password": "p1"},
        "write": {"user": "drillkit_write_x", "password": "p2"},
    }
    path = roles.write_secrets(tmp_path, secrets)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert roles.read_login(path, "read") == ("drillkit_read_x", "p1")
    assert roles.read_login(path, "write") == ("drillkit_write_x", "p2")
