"""Secret values as GenerateSecretString makes them, and ElastiCache's rules for AUTH tokens."""

from __future__ import annotations

import json
import string

from rehearse.aws import PUNCTUATION, generate_secret_string
from rehearse.broker import auth_token_problems


def test_exclude_punctuation_gives_letters_and_digits_of_the_length_asked() -> None:
    value = generate_secret_string({"ExcludePunctuation": True, "PasswordLength": 64})
    assert len(value) == 64
    assert set(value) <= set(string.ascii_letters + string.digits)
    assert set(value) & set(string.digits)
    assert set(value) & set(string.ascii_uppercase)


def test_excluded_characters_never_appear() -> None:
    for _ in range(20):
        assert not set(generate_secret_string({"PasswordLength": 40, "ExcludeCharacters": "@/\"' "})) & set(
            "@/\"' "
        )


def test_a_json_template_gets_the_generated_key() -> None:
    value = json.loads(
        generate_secret_string({"SecretStringTemplate": '{"user": "a"}', "GenerateStringKey": "password"})
    )
    assert value["user"] == "a"
    assert len(value["password"]) == 32


def test_elasticache_refuses_tokens_with_its_forbidden_characters_or_length() -> None:
    assert auth_token_problems("a" * 64) == []
    assert auth_token_problems("short") == ["5 characters (16-128 allowed)"]
    assert "not allowed" in auth_token_problems("a" * 20 + "@/")[0]
    # Secrets Manager's default punctuation includes characters ElastiCache refuses.
    assert set(PUNCTUATION) & set('"/@')
