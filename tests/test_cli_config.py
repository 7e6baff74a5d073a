"""`--config client.properties` (kafka_ml.config), secret redaction (kafka_ml._secrets) and the
CLI's connection flags: none of it needs a broker."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from kafka_ml import ConfigError
from kafka_ml._secrets import LIBRDKAFKA_SECRETS, is_secret, redact
from kafka_ml.cli import main as cli_main
from kafka_ml.config import load_properties, parse_properties, shared_client_config

SECRET = "s3cr3t-never-printed"


def test_properties_as_kafka_tools_read_them() -> None:
    text = (
        "# a comment\n"
        "! another comment style\n"
        "\n"
        "   \t\n"
        "bootstrap.servers=broker-1:9092,broker-2:9092\n"
        "security.protocol : SASL_SSL\n"
        "  sasl.mechanism\tPLAIN  \n"  # whitespace as the separator, trailing whitespace dropped
        "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required \\\n"
        '    username="trainer" \\\n'
        '    password="p";\n'
        "client.id=\n"  # an explicit empty value
        "url=http://host:8080/a=b\n"  # only the first separator splits
        "key\\=with\\:escapes=x\n"
        "padded=value\\ \n"  # an escaped trailing space is kept
        "unicode=caf\\u00e9\\tdone\n"
        "crlf=yes\r\n"
        "feed=\fa\fb\n"  # \f is whitespace, not a line break
        "bootstrap.servers=last-wins:9092\n"
    )
    assert parse_properties(text) == {
        "bootstrap.servers": "last-wins:9092",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "sasl.jaas.config": (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            'username="trainer" password="p";'
        ),
        "client.id": "",
        "url": "http://host:8080/a=b",
        "key=with:escapes": "x",
        "padded": "value ",
        "unicode": "café\tdone",
        "crlf": "yes",
        "feed": "a\fb",
    }


def test_continuations_and_comments() -> None:
    # A comment line is never continued; an even number of backslashes is an escaped backslash.
    text = "# comment \\\na=1\nb=C:\\\\dir\\\\\nc=2 \\\n\n d=3\ne=x\\"
    assert parse_properties(text) == {"a": "1", "b": "C:\\dir\\", "c": "2", "d": "3", "e": "x"}
    assert parse_properties("") == {}
    assert parse_properties("\ufeffa=1".encode().decode("utf-8-sig")) == {"a": "1"}


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("a=1\n=value\n", 2, "a value without a property name"),
        ("a=1\n\n" + SECRET + "\n", 3, "expected key=value, found a name with no value"),
        ("a=1\nb=\\u12G4" + SECRET + "\n", 2, "malformed \\uXXXX escape"),
        ("a=1\n# c\nb=\\u00\n", 3, "malformed \\uXXXX escape"),
        ("a=1\nb=x \\\n  y\n" + SECRET + "   \n", 4, "expected key=value, found a name with no value"),
    ],
    ids=["no-name", "name-only", "bad-unicode-escape", "short-unicode-escape", "after-continuation"],
)
def test_bad_lines_name_the_file_and_line_not_the_text(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    path = tmp_path / "client.properties"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(f"{path}:{line}: {message}")) as info:
        load_properties(path)
    assert SECRET not in str(info.value)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path / 'missing.properties'}: cannot read")):
        load_properties(tmp_path / "missing.properties")
    latin1 = tmp_path / "latin1.properties"
    latin1.write_bytes(b"a=1\nb=caf\xe9\n")
    with pytest.raises(ConfigError, match=re.escape(f"{latin1}:2: not UTF-8 text")):
        load_properties(latin1)


def test_secret_properties_are_redacted() -> None:
    # Every property librdkafka 2.12 flags as sensitive (_RK_SENSITIVE in rdkafka_conf.c).
    assert {
        "sasl.password",
        "sasl.username",
        "sasl.oauthbearer.client.secret",
        "sasl.oauthbearer.config",
        "sasl.oauthbearer.assertion.private.key.passphrase",
        "sasl.oauthbearer.assertion.private.key.pem",
        "sasl.oauthbearer.assertion.private.key.file",
        "ssl.key.password",
        "ssl.key.pem",
        "ssl.key.location",
        "ssl.keystore.password",
        "ssl.ca.pem",
        "ssl_key",
    } <= LIBRDKAFKA_SECRETS
    config = {
        "bootstrap.servers": "b:9092",
        "sasl.password": SECRET,
        "sasl.jaas.config": f'... password="{SECRET}";',
        "ssl.truststore.password": SECRET,
        "database.password": SECRET,  # a connector's: by the name's last part
        "connection.password": SECRET,
        "sasl.oauthbearer.token.endpoint.url": "https://idp/token",
        "security.protocol": "SASL_SSL",
    }
    shown = redact(config)
    assert shown == {
        "bootstrap.servers": "b:9092",
        "sasl.password": "***",
        "sasl.jaas.config": "***",
        "ssl.truststore.password": "***",
        "database.password": "***",
        "connection.password": "***",
        "sasl.oauthbearer.token.endpoint.url": "https://idp/token",
        "security.protocol": "SASL_SSL",
    }
    assert config["sasl.password"] == SECRET, "redact returns a copy"
    assert not is_secret("ssl.endpoint.identification.algorithm") and is_secret("api.token")


def test_a_shared_client_config_drops_only_consumer_only_properties() -> None:
    def token() -> tuple[str, float]:
        return ("t", 0.0)

    consumer = {
        "bootstrap.servers": "127.0.0.1:9092",
        "group.id": "trainer",
        "auto.offset.reset": "earliest",
        "fetch.max.bytes": "1048576",
        "enable.auto.offset.store": "false",
        "security.protocol": "SASL_SSL",
        "enable.ssl.certificate.verification": "false",
        "sasl.password": "hunter22",
        "oauth_cb": token,
    }
    # The same rule as the Rust core's dead-letter producer (`ClientSettings::shared`).
    assert shared_client_config(consumer) == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "SASL_SSL",
        "enable.ssl.certificate.verification": "false",
        "sasl.password": "hunter22",
        "oauth_cb": token,
    }


def test_cli_help_lists_the_connection_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["demo", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--config FILE" in out and "--bootstrap-servers" in out and "--command-config" in out
    with pytest.raises(SystemExit):
        cli_main(["connect", "--help"])
    out = capsys.readouterr().out
    for flag in ("--ca FILE", "--insecure", "--cert FILE", "--key FILE", "--user", "--password-env VAR"):
        assert flag in out
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["connect", "--ca", "ca.pem", "--insecure", "list"])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_cli_never_prints_secrets_from_a_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "client.properties"
    # A bad line: the file and line, not the text (here a pasted password).
    path.write_text(f"bootstrap.servers=127.0.0.1:1\n{SECRET}\n")
    assert cli_main(["demo", "--config", str(path), "--bootstrap-servers", "x:1"]) == 2
    out, err = capsys.readouterr()
    assert f"{path}:2: expected key=value" in err and SECRET not in out + err

    assert cli_main(["demo", "--config", str(tmp_path / "missing.properties")]) == 2
    assert "missing.properties: cannot read" in capsys.readouterr().err


def test_cli_connect_flag_errors(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    url = ["connect", "--url", "https://127.0.0.1:1"]
    assert cli_main([*url, "--user", "u", "list"]) == 2
    assert "--user needs --password-env" in capsys.readouterr().err
    assert cli_main([*url, "--key", "k.pem", "list"]) == 2
    assert "--key needs --cert" in capsys.readouterr().err
    monkeypatch.setenv("KAFKA_ML_TEST_TOKEN", SECRET)
    assert (
        cli_main([*url, "--user", "u", "--password-env", "KAFKA_ML_TEST_TOKEN", "--token-env", "X", "list"])
        == 2
    )
    assert "one way to authenticate" in capsys.readouterr().err
    monkeypatch.delenv("KAFKA_ML_UNSET", raising=False)
    assert cli_main([*url, "--token-env", "KAFKA_ML_UNSET", "list"]) == 2
    assert "--token-env KAFKA_ML_UNSET: that environment variable is not set" in capsys.readouterr().err
    # Unreachable with a token set: the error names the worker, not the token.
    assert cli_main([*url, "--insecure", "--token-env", "KAFKA_ML_TEST_TOKEN", "list"]) == 1
    out, err = capsys.readouterr()
    assert "unreachable" in err and SECRET not in out + err
