"""A secured Apache Kafka 4.x broker (one KRaft node on loopback) for the TLS/SASL/ACL tests.

`SecureKafkaBroker` is `launcher.KafkaBroker` with, per test session, its own certificates (PEM,
made with `cryptography` in the broker's temp dir), SCRAM/PLAIN users with random passwords, the
StandardAuthorizer and a fixed set of ACLs. Its listeners, all on 127.0.0.1 free ports:

    PLAINTEXT   setup and inter-broker; principal User:ANONYMOUS, a super user
    CONTROLLER  KRaft controller (plaintext, ANONYMOUS)
    SSL         TLS, server authentication only (principal User:ANONYMOUS, so a super user too)
    MTLS        TLS with a required client certificate; principal User:<CN> (mtls-user)
    SASL_SSL    SCRAM-SHA-256, SCRAM-SHA-512, PLAIN and OAUTHBEARER (Kafka's unsecured JWT validator)
    EXPIRED     TLS presenting an expired broker certificate
    WRONGHOST   TLS presenting a certificate for DNS:wrong-host.invalid only

ACLs: alice and mtls-user may do everything on every topic, group and transactional id; bob may
only read/describe topics prefixed `bob-readable-` with groups prefixed `bob-group-`; carol may
write/describe every topic and read every group but has no transactional-id ACL. admin (and
ANONYMOUS) are super users. `client_config(case)` gives ready librdkafka configs.

    python kafka/secure_launcher.py     # start, print the client configs, run until Ctrl-C
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import secrets
import sys
import time
from pathlib import Path
from typing import Any

# confluent-kafka's stubs re-export these without `__all__`, which strict mypy flags.
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from launcher import KafkaBroker, free_port

# Listener name -> security protocol. PLAINTEXT and CONTROLLER come from KafkaBroker's ports.
TLS_LISTENERS = {
    "SSL": "SSL",
    "MTLS": "SSL",
    "SASL_SSL": "SASL_SSL",
    "EXPIRED": "SSL",
    "WRONGHOST": "SSL",
}
SASL_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN", "OAUTHBEARER")
# The SCRAM credentials each user gets: bob and carol have one mechanism each, so that a test can
# also see a mechanism the user has no credential for being refused.
SCRAM_USERS: dict[str, tuple[str, ...]] = {
    "admin": ("SCRAM-SHA-256", "SCRAM-SHA-512"),
    "alice": ("SCRAM-SHA-256", "SCRAM-SHA-512"),
    "bob": ("SCRAM-SHA-256",),
    "carol": ("SCRAM-SHA-512",),
}
# PLAIN users live in the listener's JAAS config; the same names and passwords as SCRAM, so the
# principal (and thus the ACLs) of a user does not depend on the mechanism.
PLAIN_USERS = tuple(SCRAM_USERS)
ADMIN_USER = "admin"
MTLS_USER = "mtls-user"
OAUTH_BROKER_SUB = "admin"
CASE_MECHANISM = {"scram256": "SCRAM-SHA-256", "scram512": "SCRAM-SHA-512", "plain": "PLAIN"}
CASES = (
    "plaintext",
    "ssl",
    "wrong_ca",
    "mtls",
    "mtls_encrypted",
    "scram256",
    "scram512",
    "plain",
    "oauthbearer",
    "expired",
    "wronghost",
)


def unsecured_jwt(sub: str, lifetime_s: float = 3600.0) -> tuple[str, float]:
    """An unsecured JWS (`alg: none`) for `sub` and its expiry (epoch seconds), as an `oauth_cb`
    returns them; Kafka's default OAUTHBEARER validator maps it to User:<sub>.

    A negative `lifetime_s` makes an already expired token (issued a minute before it expired, as
    the validator also refuses exp <= iat). librdkafka itself refuses to use a token whose expiry
    is past, so a test of the broker rejecting it hands librdkafka a future expiry instead."""
    now = int(time.time())
    exp = now + int(lifetime_s)
    iat = now if lifetime_s > 0 else exp - 60

    def b64(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    # The signature part is empty: "header.payload."
    return f"{b64({'alg': 'none'})}.{b64({'sub': sub, 'iat': iat, 'exp': exp})}.", float(exp)


class Pki:
    """The session's certificates, written as PEM files into `directory`.

    EC P-256 keys: instant to generate, and both the JVM (Kafka's PEM key store) and librdkafka's
    OpenSSL read them as PKCS#8."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.dir = directory
        now = datetime.datetime.now(datetime.timezone.utc)
        self.ca_key, self.ca_cert = self._ca("kafka-ml test CA", now)
        self.ca_path = self._write("ca.pem", self._cert_pem(self.ca_cert))
        self._write("ca-key.pem", self._key_pem(self.ca_key))
        # A second CA nobody signed with: a client trusting only it fails to verify the broker.
        _, wrong_ca_cert = self._ca("kafka-ml unrelated CA", now)
        self.wrong_ca_path = self._write("wrong-ca.pem", self._cert_pem(wrong_ca_cert))

        localhost = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        day = datetime.timedelta(days=1)
        self.broker_keystore = self._keystore("broker", "localhost", localhost, now - day, now + 30 * day)
        # The same certificate and key as separate files (servers that do not read a key store).
        self.server_cert_path = str(self.dir / "broker.pem")
        self.server_key_path = str(self.dir / "broker.key")
        self.expired_keystore = self._keystore(
            "broker-expired", "localhost", localhost, now - 30 * day, now - day
        )
        self.wronghost_keystore = self._keystore(
            "broker-wronghost",
            "wrong-host.invalid",
            [x509.DNSName("wrong-host.invalid")],
            now - day,
            now + 30 * day,
        )

        key, cert = self._leaf(MTLS_USER, None, now - day, now + 30 * day, ExtendedKeyUsageOID.CLIENT_AUTH)
        self.client_cert_path = self._write("client.pem", self._cert_pem(cert))
        self.client_key_path = self._write("client.key", self._key_pem(key))
        # librdkafka's ssl.key.password decrypts an encrypted PKCS#8 key: test that path as well.
        self.client_key_password = secrets.token_urlsafe(12)
        encrypted = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(self.client_key_password.encode()),
        )
        self.client_encrypted_key_path = self._write("client-encrypted.key", encrypted)

    def _write(self, name: str, data: bytes) -> str:
        path = self.dir / name
        path.write_bytes(data)
        path.chmod(0o600)
        return str(path)

    @staticmethod
    def _cert_pem(cert: x509.Certificate) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    @staticmethod
    def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
        # Unencrypted PKCS#8 ("BEGIN PRIVATE KEY"): the form Kafka's PEM key store reads without
        # ssl.key.password.
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @staticmethod
    def _ca(cn: str, now: datetime.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return key, cert

    def _leaf(
        self,
        cn: str,
        san: list[x509.GeneralName] | None,
        not_before: datetime.datetime,
        not_after: datetime.datetime,
        usage: x509.ObjectIdentifier,
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()), critical=False
            )
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return key, builder.sign(self.ca_key, hashes.SHA256())

    def _keystore(
        self,
        name: str,
        cn: str,
        san: list[x509.GeneralName],
        not_before: datetime.datetime,
        not_after: datetime.datetime,
    ) -> str:
        """A broker PEM key store (ssl.keystore.type=PEM): private key, then the chain to the CA."""
        key, cert = self._leaf(cn, san, not_before, not_after, ExtendedKeyUsageOID.SERVER_AUTH)
        self._write(f"{name}.pem", self._cert_pem(cert))
        self._write(f"{name}.key", self._key_pem(key))
        return self._write(
            f"{name}-keystore.pem", self._key_pem(key) + self._cert_pem(cert) + self._cert_pem(self.ca_cert)
        )


class SecureKafkaBroker(KafkaBroker):
    """A KafkaBroker with TLS, mTLS, SASL and ACL listeners; see the module docstring."""

    def __init__(self, num_partitions: int = 1, workdir: str | None = None) -> None:
        super().__init__(num_partitions=num_partitions, workdir=workdir)
        self.ports = {name: free_port() for name in TLS_LISTENERS}
        # Random per session: nothing outside this process knows them.
        self.passwords = {user: secrets.token_urlsafe(16) for user in SCRAM_USERS}
        self.pki = Pki(self.workdir / "certs")

    # -- what tests use ---------------------------------------------------------------------

    @property
    def ca_path(self) -> str:
        return self.pki.ca_path

    @property
    def wrong_ca_path(self) -> str:
        return self.pki.wrong_ca_path

    @property
    def client_cert_path(self) -> str:
        return self.pki.client_cert_path

    @property
    def client_key_path(self) -> str:
        return self.pki.client_key_path

    @property
    def client_encrypted_key_path(self) -> str:
        return self.pki.client_encrypted_key_path

    @property
    def client_key_password(self) -> str:
        return self.pki.client_key_password

    def bootstrap(self, listener: str) -> str:
        """`host:port` of a listener: PLAINTEXT, SSL, MTLS, SASL_SSL, EXPIRED or WRONGHOST."""
        if listener == "PLAINTEXT":
            return self.bootstrap_servers
        return f"127.0.0.1:{self.ports[listener]}"

    def client_config(self, case: str, user: str = "alice", password: str | None = None) -> dict[str, Any]:
        """A librdkafka config for one of `CASES` (all values are strings; `Any` so that a test can
        add callbacks such as `oauth_cb` or `error_cb` to it).

        `user`/`password` apply to scram256, scram512 and plain (the password defaults to the
        user's). oauthbearer has no token: the client supplies it (confluent-kafka: `oauth_cb`,
        see `unsecured_jwt`)."""
        tls = {"ssl.ca.location": self.ca_path}
        if case == "plaintext":
            return {"bootstrap.servers": self.bootstrap_servers}
        tls_only = {"ssl": "SSL", "wrong_ca": "SSL", "expired": "EXPIRED", "wronghost": "WRONGHOST"}
        if case in tls_only:
            return {
                "bootstrap.servers": self.bootstrap(tls_only[case]),
                "security.protocol": "SSL",
                # wrong_ca: the SSL listener, verified against a CA that did not sign its cert.
                "ssl.ca.location": self.wrong_ca_path if case == "wrong_ca" else self.ca_path,
            }
        if case in ("mtls", "mtls_encrypted"):
            conf = {
                "bootstrap.servers": self.bootstrap("MTLS"),
                "security.protocol": "SSL",
                "ssl.certificate.location": self.client_cert_path,
                "ssl.key.location": self.client_key_path,
                **tls,
            }
            if case == "mtls_encrypted":
                conf["ssl.key.location"] = self.client_encrypted_key_path
                conf["ssl.key.password"] = self.client_key_password
            return conf
        sasl = {"bootstrap.servers": self.bootstrap("SASL_SSL"), "security.protocol": "SASL_SSL", **tls}
        if case == "oauthbearer":
            return {**sasl, "sasl.mechanisms": "OAUTHBEARER"}
        if case in CASE_MECHANISM:
            secret = password if password is not None else self.passwords.get(user)
            if secret is None:
                raise KeyError(f"no password for unknown user {user!r}; pass password=")
            return {
                **sasl,
                "sasl.mechanisms": CASE_MECHANISM[case],
                "sasl.username": user,
                "sasl.password": secret,
            }
        raise ValueError(f"unknown case {case!r}; one of {', '.join(CASES)}")

    # -- broker set-up -----------------------------------------------------------------------

    def _properties(self) -> dict[str, str]:
        props = super()._properties()
        listeners = {"PLAINTEXT": self.port, "CONTROLLER": self.controller_port, **self.ports}
        advertised = {k: v for k, v in listeners.items() if k != "CONTROLLER"}
        protocols = {"PLAINTEXT": "PLAINTEXT", "CONTROLLER": "PLAINTEXT", **TLS_LISTENERS}
        props.update(
            {
                "listeners": ",".join(f"{k}://127.0.0.1:{v}" for k, v in listeners.items()),
                "advertised.listeners": ",".join(f"{k}://127.0.0.1:{v}" for k, v in advertised.items()),
                "listener.security.protocol.map": ",".join(f"{k}:{v}" for k, v in protocols.items()),
                "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                # ANONYMOUS is the PLAINTEXT/CONTROLLER principal: the broker talks to its own
                # controller with it, and the harness creates topics and ACLs with it.
                "super.users": f"User:ANONYMOUS;User:{ADMIN_USER}",
            }
        )
        keystores = {
            "SSL": self.pki.broker_keystore,
            "MTLS": self.pki.broker_keystore,
            "SASL_SSL": self.pki.broker_keystore,
            "EXPIRED": self.pki.expired_keystore,
            "WRONGHOST": self.pki.wronghost_keystore,
        }
        for listener, keystore in keystores.items():
            prefix = f"listener.name.{listener.lower()}."
            # PEM stores (Kafka >= 2.7): the key store file holds the key and the chain.
            props[prefix + "ssl.keystore.type"] = "PEM"
            props[prefix + "ssl.keystore.location"] = keystore
            props[prefix + "ssl.truststore.type"] = "PEM"
            props[prefix + "ssl.truststore.location"] = self.ca_path
        mtls = "listener.name.mtls."
        props[mtls + "ssl.client.auth"] = "required"
        # The default principal is the whole RFC 2253 subject ("CN=mtls-user"); map it to the CN
        # so that the ACLs name User:mtls-user.
        props[mtls + "ssl.principal.mapping.rules"] = "RULE:^CN=([^,]+).*$/$1/,DEFAULT"

        sasl = "listener.name.sasl_ssl."
        props[sasl + "sasl.enabled.mechanisms"] = ",".join(SASL_MECHANISMS)
        scram_jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        props[sasl + "scram-sha-256.sasl.jaas.config"] = scram_jaas
        props[sasl + "scram-sha-512.sasl.jaas.config"] = scram_jaas
        # PLAIN's server side checks `user_<name>="<password>"` options of its JAAS entry.
        plain_users = " ".join(f'user_{u}="{self.passwords[u]}"' for u in PLAIN_USERS)
        props[sasl + "plain.sasl.jaas.config"] = (
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};"
        )
        # With no sasl.server.callback.handler.class, OAUTHBEARER uses Kafka's unsecured validator
        # (alg "none" tokens, principal from "sub"). The broker still logs in with its own token
        # for the listener, so the login module needs a subject even though nothing uses it.
        props[sasl + "oauthbearer.sasl.jaas.config"] = (
            "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required "
            f'unsecuredLoginStringClaim_sub="{OAUTH_BROKER_SUB}";'
        )
        return props

    def _format_args(self) -> list[str]:
        # SCRAM credentials are metadata records: writing them at format time means they exist
        # before the first client connects (no admin round trip, no propagation race).
        args: list[str] = []
        for user, mechanisms in SCRAM_USERS.items():
            for mechanism in mechanisms:
                args += ["--add-scram", f"{mechanism}=[name={user},password={self.passwords[user]}]"]
        return args

    def _ready(self) -> bool:
        # PLAINTEXT answering metadata is not enough: wait until TLS + SCRAM on SASL_SSL work.
        if not super()._ready():
            return False
        admin = AdminClient(self.client_config("scram512", user=ADMIN_USER))
        try:
            return bool(admin.list_topics(timeout=3).brokers)
        except Exception:  # KafkaException while the listener or SCRAM is not up yet
            return False

    def _acls(self) -> list[AclBinding]:
        def allow(
            principal: str, restype: ResourceType, name: str, op: AclOperation, prefixed: bool = False
        ) -> AclBinding:
            pattern = ResourcePatternType.PREFIXED if prefixed else ResourcePatternType.LITERAL
            return AclBinding(restype, name, pattern, f"User:{principal}", "*", op, AclPermissionType.ALLOW)

        acls: list[AclBinding] = []
        # alice (any mechanism, OAUTHBEARER sub "alice" included) and mtls-user: everything. A
        # literal "*" is Kafka's wildcard resource. IDEMPOTENT_WRITE is implied by WRITE on a topic
        # since Kafka 3.0 but is explicit here so that it does not depend on that.
        for user in ("alice", MTLS_USER):
            acls += [
                allow(user, ResourceType.TOPIC, "*", AclOperation.ALL),
                allow(user, ResourceType.GROUP, "*", AclOperation.ALL),
                allow(user, ResourceType.TRANSACTIONAL_ID, "*", AclOperation.ALL),
                allow(user, ResourceType.BROKER, "kafka-cluster", AclOperation.IDEMPOTENT_WRITE),
            ]
        # bob: read topics "bob-readable-*" in groups "bob-group-*", nothing else.
        acls += [
            allow("bob", ResourceType.TOPIC, "bob-readable-", AclOperation.READ, prefixed=True),
            allow("bob", ResourceType.TOPIC, "bob-readable-", AclOperation.DESCRIBE, prefixed=True),
            allow("bob", ResourceType.GROUP, "bob-group-", AclOperation.READ, prefixed=True),
        ]
        # carol: write every topic and read every group, but no transactional id, so that
        # InitProducerId with a transactional.id fails with TRANSACTIONAL_ID_AUTHORIZATION_FAILED.
        acls += [
            allow("carol", ResourceType.TOPIC, "*", AclOperation.WRITE),
            allow("carol", ResourceType.TOPIC, "*", AclOperation.DESCRIBE),
            allow("carol", ResourceType.GROUP, "*", AclOperation.READ),
        ]
        return acls

    def _create_acls(self, timeout: float) -> None:
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
        acls = self._acls()
        for future in admin.create_acls(acls, request_timeout=timeout).values():
            future.result()
        # CreateAcls returns once the controller committed them; the broker's authorizer applies
        # them from the metadata log a moment later. DescribeAcls is answered from that same
        # authorizer, so once it lists them all, authorization decisions see them too.
        # None matches any name/principal/host (the stubs only allow str).
        anything: Any = None
        everything = AclBindingFilter(
            ResourceType.ANY,
            anything,
            ResourcePatternType.ANY,
            anything,
            anything,
            AclOperation.ANY,
            AclPermissionType.ANY,
        )
        deadline = time.monotonic() + timeout
        while len(admin.describe_acls(everything, request_timeout=timeout).result()) < len(acls):
            if time.monotonic() > deadline:
                raise TimeoutError(f"ACLs not visible after {timeout}s; log at {self.log_path}")
            time.sleep(0.1)
        # Serve the event the admin calls leave on its queue, or librdkafka logs "Purging 1
        # unserved events" to stderr when the client is destroyed.
        admin.poll(0.1)

    def start(self, timeout: float = 90.0) -> SecureKafkaBroker:
        super().start(timeout)
        try:
            self._create_acls(timeout=30.0)
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> SecureKafkaBroker:
        return self.start()

    def summary(self) -> dict[str, Any]:
        """Everything a client needs, as JSON-friendly data (printed by `__main__`)."""
        return {
            "workdir": str(self.workdir),
            "log": str(self.log_path),
            "listeners": {name: self.bootstrap(name) for name in ("PLAINTEXT", *TLS_LISTENERS)},
            "passwords": self.passwords,
            "client_key_password": self.client_key_password,
            "configs": {case: self.client_config(case) for case in CASES},
        }


if __name__ == "__main__":
    with SecureKafkaBroker() as broker:
        print(json.dumps(broker.summary(), indent=2), flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            sys.exit(0)
