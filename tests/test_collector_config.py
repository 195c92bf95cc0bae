"""``mailpulse serve`` configuration: flags and environment read once, errors name the fix."""

from __future__ import annotations

import pytest

from pipelines.cli import build_parser, main
from pipelines.commands.serve import build_config

JS_KEY = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBce"
    "pxo7yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA=="
)


def args(*argv):
    return build_parser().parse_args(["serve", *argv])


@pytest.mark.parametrize(
    "env,argv,message",
    [
        ({}, [], "no webhook is configured"),
        ({"MAILPULSE_SENDGRID_PUBLIC_KEYS": "not-a-key"}, [], "MAILPULSE_SENDGRID_PUBLIC_KEYS"),
        (
            {"MAILPULSE_SENDGRID_PUBLIC_KEYS": JS_KEY, "MAILPULSE_SIGNATURE_MAX_AGE": "1h"},
            [],
            "not a number of seconds",
        ),
        ({"MAILPULSE_CMC_API_KEY": "k"}, ["--sendgrid-basic-auth", "nopassword"], "USER:PASSWORD"),
        ({"MAILPULSE_SNS_TOPIC_ARNS": "my-topic"}, [], "not an SNS topic ARN"),
        ({"MAILPULSE_CMC_API_KEY": "k"}, ["--sns-ca-file", "/nonexistent.pem"], "--sns-ca-file"),
    ],
)
def test_configuration_errors_exit_2_with_the_fix(
    tmp_path, monkeypatch, capsys, env, argv, message
):
    for k in (
        "MAILPULSE_SENDGRID_PUBLIC_KEYS",
        "MAILPULSE_CMC_API_KEY",
        "MAILPULSE_SNS_TOPIC_ARNS",
        "MAILPULSE_SIGNATURE_MAX_AGE",
        "MAILPULSE_SENDGRID_BASIC_AUTH",
    ):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert main(["serve", "--archive", str(tmp_path / "a"), *argv]) == 2
    err = capsys.readouterr().err
    assert "mailpulse serve: error:" in err and message in err


def test_flags_and_environment_combine(tmp_path):
    env = {
        "MAILPULSE_SENDGRID_PUBLIC_KEYS": JS_KEY,
        "MAILPULSE_SIGNATURE_MAX_AGE": "0",
        "MAILPULSE_CMC_API_KEY": "cmc-secret",
        "MAILPULSE_SNS_TOPIC_ARNS": "arn:aws:sns:us-east-1:123456789012:a",
        "MAILPULSE_SENDGRID_BASIC_AUTH": "sg:pw:with:colons",
    }
    cfg = build_config(
        args(
            "--archive",
            str(tmp_path / "a"),
            "--sendgrid-public-key",
            JS_KEY,
            "--sns-topic-arn",
            "arn:aws:sns:eu-west-1:123456789012:b",
        ),
        env,
    )
    assert len(cfg.sendgrid_keys) == 2 and cfg.signature_max_age == 0
    assert cfg.sendgrid_basic_auth == ("sg", "pw:with:colons")
    assert cfg.sns_topic_arns == [
        "arn:aws:sns:us-east-1:123456789012:a",
        "arn:aws:sns:eu-west-1:123456789012:b",
    ]
    assert cfg.enabled() == {"sendgrid": True, "cmc": True, "ses": True}
    assert not cfg.ships and cfg.local_dir == tmp_path / "a"
    # the flag wins over the environment; default is 25 h
    assert (
        build_config(
            args("--archive", str(tmp_path / "a"), "--signature-max-age", "600"), env
        ).signature_max_age
        == 600
    )
    env.pop("MAILPULSE_SIGNATURE_MAX_AGE")
    assert build_config(args("--archive", str(tmp_path / "a")), env).signature_max_age == 90000


def test_a_local_spool_ships_to_a_local_archive(tmp_path):
    cfg = build_config(
        args("--archive", str(tmp_path / "dest"), "--spool-dir", str(tmp_path / "spool")),
        {"MAILPULSE_CMC_API_KEY": "k"},
    )
    assert cfg.ships and cfg.local_dir == tmp_path / "spool"
