from __future__ import annotations

import pytest

from bot.core.masking import MASK, Masker, is_secret_name, secret_values, truncate_line, truncate_tail


@pytest.mark.parametrize(
    ("text", "leaked"),
    [
        ("token xoxb-1234567890-abcdefghij in output", "xoxb-1234567890-abcdefghij"),
        ("user token xoxp-1111-2222-abcd", "xoxp-1111-2222-abcd"),
        ("app xapp-1-A0001-123-abcdef", "xapp-1-A0001-123-abcdef"),
        ("GH ghp_abcdefghijklmnopqrstuvwxyz0123456789", "ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
        ("pat github_pat_11ABCDEFG0123456789_abcdefghijklmnop", "github_pat_11ABCDEFG0123456789_abcdefghijklmnop"),
        ("aws AKIAIOSFODNN7EXAMPLE key", "AKIAIOSFODNN7EXAMPLE"),
        (
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "eyJhbGciOiJIUzI1NiJ9.payload.sig"),
        ("connect password=hunter2secret host=db", "hunter2secret"),
        ('{"api_key": "abcd1234efgh"}', "abcd1234efgh"),
        ("postgres://admin:s3cr3tpw@db:5432/x", "s3cr3tpw"),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
            "MIIEowIBAAKCAQEA",
        ),
    ],
)
def test_secret_shapes_are_masked(text: str, leaked: str) -> None:
    masked = Masker().mask(text)
    assert leaked not in masked
    assert MASK in masked


def test_keeps_the_label_so_readers_know_what_was_masked() -> None:
    assert Masker().mask("password=hunter2secret") == f"password={MASK}"


def test_values_of_secret_looking_env_vars_are_masked_anywhere() -> None:
    env = {
        "DEPLOY_TOKEN": "plain-looking-value-1",
        "DB_PASSWORD": "correct horse",
        "SLACK_SIGNING_SECRET": "abcdef0123456789",
        "REDIS_URL": "redis://:pw123456@cache:6379",
        "HOME": "/root",
        "SHORT_TOKEN": "abc",  # too short to mask blindly
    }
    masker = Masker.from_env(env)
    text = "x plain-looking-value-1 y correct horse z abcdef0123456789 redis://:pw123456@cache:6379 /root abc"
    masked = masker.mask(text)
    for secret in ("plain-looking-value-1", "correct horse", "abcdef0123456789", "pw123456"):
        assert secret not in masked
    assert "/root" in masked and masked.endswith(" abc")
    assert set(secret_values(env)) == {
        "plain-looking-value-1",
        "correct horse",
        "abcdef0123456789",
        "redis://:pw123456@cache:6379",
    }


def test_plain_text_is_untouched() -> None:
    text = "exit 1 after 41 s: 3 failed, 120 passed"
    assert Masker.from_env({"HOME": "/root"}).mask(text) == text


def test_truncate_tail_keeps_the_end_and_says_what_was_cut() -> None:
    text = "".join(f"line {i}\n" for i in range(10_000))
    cut = truncate_tail(text, 500)
    assert len(cut) <= 500
    assert cut.endswith("line 9999\n")
    assert "earlier characters cut" in cut.splitlines()[0]
    assert truncate_tail("short", 500) == "short"


def test_truncate_line() -> None:
    assert truncate_line("a\nb   c", 10) == "a b c"
    assert truncate_line("x" * 20, 10) == "x" * 9 + "…"


# --- secret by name, with any prefix; not by prefix ----------------------------------------------


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("access_token=abcdef123456 next", f"access_token={MASK} next"),
        ("client_secret=zzz999zzz&x=1", f"client_secret={MASK}&x=1"),
        ("db_password: pw1234567", f"db_password: {MASK}"),
        ('{"client_secret": "s3cr3tvalue", "name": "svc"}', f'{{"client_secret": "{MASK}", "name": "svc"}}'),
        ("GITHUB_TOKEN=ghx_short1 apiKey=abc12345", f"GITHUB_TOKEN={MASK} apiKey={MASK}"),
        ("PROXY_AUTH=user:pw", f"PROXY_AUTH={MASK}"),
    ],
)
def test_key_value_pairs_are_masked_for_secret_names_with_any_prefix(text: str, masked: str) -> None:
    assert Masker().mask(text) == masked


def test_a_variable_is_secret_by_its_name_not_its_prefix() -> None:
    env = {
        "GONOGO_HOST": "0.0.0.0",
        "GONOGO_DATA_DIR": "/var/lib/gonogo",
        "PWD": "/home/alice/project",
        "SSH_AUTH_SOCK": "/tmp/ssh-XYZ/agent.1",
        "GIT_AUTHOR_NAME": "Alice Example",
        "XAUTHORITY": "/home/alice/.Xauthority",
        "GONOGO_WEBHOOK_SECRET": "webhook-secret-1",
        "SLACK_BOT_TOKEN": "bot-token-value-1",
    }
    masker = Masker.from_env(env)
    text = "listening on 0.0.0.0:3000 in /home/alice/project as Alice Example via /tmp/ssh-XYZ/agent.1"
    assert masker.mask(text) == text
    assignments = "PWD=/home/alice/project GIT_AUTHOR_NAME=Alice"
    assert masker.mask(assignments) == assignments
    assert masker.mask("sig webhook-secret-1 bot-token-value-1") == f"sig {MASK} {MASK}"
    assert set(secret_values(env)) == {"webhook-secret-1", "bot-token-value-1"}


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("access_token", True),
        ("clientSecret", True),
        ("DB_PWD", True),
        ("STRIPE_API_KEY", True),
        ("BASIC_AUTH", True),
        ("PWD", False),
        ("OLDPWD", False),
        ("SSH_AUTH_SOCK", False),
        ("GIT_AUTHOR_NAME", False),
        ("XAUTHORITY", False),
        ("GONOGO_HOST", False),
        ("TOKENIZER_PATH", False),
    ],
)
def test_secret_names(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret
