"""Start a real Schema Registry (Apicurio Registry 3.0.9, Confluent-compatible API) on loopback.

Used by the tests (the `schema_registry_url` fixture). The server is Apicurio Registry's
ready-to-run distribution, `io.apicurio:apicurio-registry-app:3.0.9:zip:all` from Maven Central,
unpacked into kafka/registry/target/ by `kafka/registry/pom.xml` (see `ensure_registry_jar`); it
runs with the machine's Java 17, stores everything in memory (H2), and listens on a free loopback
port. Its log is kept in a temporary directory, and printed if it fails to start.

`RegistryServer.url` is the Confluent-compatible ("ccompat") API,
`http://127.0.0.1:PORT/apis/ccompat/v7`. What it does, as checked against 3.0.9 with curl:

- Compatibility: Apicurio's default is NO check (`GET /config` says `NONE`, and an incompatible
  v2 is registered). Confluent's default is BACKWARD, so `start()` sets the global level with
  `PUT /config {"compatibility": "BACKWARD"}` (it becomes Apicurio's global COMPATIBILITY rule,
  listed by `GET /apis/registry/v3/admin/rules`). Then an Avro v2 that adds a field without a
  default is refused: 409 `{"message": "...RuleViolationException: Incompatible artifact: ...",
  "error_code": 409}`; one that adds a field with a default is accepted. Protobuf and JSON Schema
  subjects are checked the same way. (The startup property `apicurio.rules.global.compatibility`
  also enforces it, but `GET /config` then still answers NONE, so it is not used.)
  Differences from Confluent: a subject-level `PUT /config/{s} {"compatibility": "NONE"}` does
  NOT lift the global rule (the 409 stays; another level, e.g. FORWARD, does replace it);
  `DELETE /config` answers 405; `/mode` is 404.
- `POST /subjects/{s}/versions` -> `{"id": N}`; ids are content ids (the same schema under two
  subjects has one id; registering it again returns the same id); ids can have gaps.
  `schemaType` `AVRO` (the default), `PROTOBUF` and `JSON` all register.
- `GET /schemas/ids/{id}` -> `{"schema": "...", "schemaType": "AVRO", "references": []}`
  (`schemaType` is present for Avro too, where Confluent leaves it out).
- `GET /subjects/{s}/versions/latest` -> `{"subject", "version", "id", "schema", "schemaType",
  "references"}`.
- Errors are `{"message": ..., "error_code": ...}`: unknown id 404/40403, unknown subject
  404/40401, unknown version 404/40402, schema not under the subject (`POST /subjects/{s}`)
  404/40403, incompatible 409/409, invalid schema 422/42201 (always "Failed to discover artifact
  type from content.", whatever is wrong with it). Not JSON: a body that is not JSON gets 400 with
  a plain-text message; an unknown `schemaType` or compatibility level gets 500 with error_code 0.
- Auth: none by default. HTTP basic auth is cheap (no OIDC server needed), through Quarkus'
  embedded users: `-Dquarkus.http.auth.basic=true -Dquarkus.security.users.embedded.plain-text=true
  -Dquarkus.security.users.embedded.users.alice=secret` (optionally `...roles.alice=sr-admin`);
  then requests without or with wrong credentials get 401 (empty body), alice's are served.
  (`apicurio.authn.basic-client-credentials.enabled` is something else: it trades basic
  credentials for an OIDC token, so it needs Keycloak or the like.) Not built here.
- TLS: with `tls=True` it also listens with HTTPS on a second port (`tls_url`), with a server
  certificate for 127.0.0.1/localhost signed by a per-run CA (`ca_path`; `wrong_ca_path` is a CA
  that signed nothing), through Quarkus' `quarkus.http.ssl.certificate.files`/`key-files`. The
  plain listener stays for the harness's own requests.

Start-up on a 2-core machine: about 4-4.5 s to ready and ~225 MiB RSS with the JVM flags below
(about 8.5 s and ~260 MiB without them: C1 only is most of the gain).

    python kafka/registry_launcher.py   # start, print the ccompat URL, run until Ctrl-C
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from launcher import free_port, start_service, stop_service
from secure_launcher import Pki

KAFKA_DIR = Path(__file__).resolve().parent
REGISTRY_DIR = KAFKA_DIR / "registry"
TARGET_DIR = REGISTRY_DIR / "target"
APICURIO_VERSION = "3.0.9"
RUNNER_JAR = TARGET_DIR / f"apicurio-registry-app-{APICURIO_VERSION}-runner.jar"
# Written by the dependency plugin once the whole zip is unpacked (the runner jar comes first in
# the zip, its lib/ after it): an interrupted unpack is redone.
UNPACKED_MARKER = (
    TARGET_DIR
    / "dependency-maven-plugin-markers"
    / f"io.apicurio-apicurio-registry-app-zip-all-{APICURIO_VERSION}.marker"
)
CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


def ensure_registry_jar() -> Path:
    """Resolves and unpacks the registry with Maven (the zip is cached in ~/.m2) unless present;
    returns the runner jar (it finds its lib/ next to it)."""
    if not RUNNER_JAR.exists() or not UNPACKED_MARKER.exists():
        subprocess.run(["mvn", "-q", "-B", "-f", str(REGISTRY_DIR / "pom.xml"), "package"], check=True)
    return RUNNER_JAR


class RegistryServer:
    """One in-memory Apicurio Registry on 127.0.0.1; `url` is its Confluent-compatible API.

    `compatibility` is the global compatibility level set at start (Confluent's default,
    BACKWARD, unless told otherwise; None leaves Apicurio's own default, no check)."""

    def __init__(
        self,
        compatibility: str | None = "BACKWARD",
        workdir: str | None = None,
        users: dict[str, str] | None = None,
        tls: bool = False,
    ) -> None:
        # With `users` ({name: password}), every request needs HTTP basic auth (Quarkus's
        # embedded user store); the harness itself uses the first user.
        self.users = dict(users or {})
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="kafka-ml-registry-"))
        self.port = free_port()
        self.compatibility = compatibility
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "registry.log"
        self.pki: Pki | None = Pki(self.workdir / "certs") if tls else None
        self.tls_port = free_port() if tls else None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/apis/ccompat/v7"

    @property
    def tls_url(self) -> str:
        """The HTTPS listener's ccompat API (`tls=True` only)."""
        if self.tls_port is None:
            raise RuntimeError("this registry was started without tls=True")
        return f"https://127.0.0.1:{self.tls_port}/apis/ccompat/v7"

    @property
    def ca_path(self) -> str:
        """The CA that signed the HTTPS listener's certificate (`tls=True` only)."""
        if self.pki is None:
            raise RuntimeError("this registry was started without tls=True")
        return self.pki.ca_path

    @property
    def wrong_ca_path(self) -> str:
        """A CA that signed nothing: verifying the HTTPS listener with it fails."""
        if self.pki is None:
            raise RuntimeError("this registry was started without tls=True")
        return self.pki.wrong_ca_path

    def _command(self) -> list[str]:
        jar = ensure_registry_jar()
        java = shutil.which("java") or "java"
        props = {
            "quarkus.http.host": "127.0.0.1",
            "quarkus.http.port": str(self.port),
            # In memory, whatever APICURIO_* variables the environment has (Quarkus reads them).
            "apicurio.storage.kind": "sql",
            "apicurio.storage.sql.kind": "h2",
            "apicurio.datasource.url": f"jdbc:h2:mem:registry_{self.port}",
            # Its default pool opens 20 connections at start; one test client needs few.
            "apicurio.datasource.jdbc.initial-size": "2",
            "apicurio.datasource.jdbc.min-size": "2",
            "apicurio.datasource.jdbc.max-size": "20",
            # Its scratch files in the work dir, not in /tmp.
            "apicurio.import.work-dir": str(self.workdir),
            "apicurio.storage.snapshot.location": str(self.workdir),
            "vertx.cacheDirBase": str(self.workdir / "vertx-cache"),
        }
        return [
            java,
            "-Xmx256m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",  # half the start time; the tests send little
            "-Djava.awt.headless=true",
            *(f"-D{k}={v}" for k, v in props.items()),
            *self._jvm_args(),
            "-jar",
            str(jar),
        ]

    def _jvm_args(self) -> list[str]:
        """Extra JVM arguments: the HTTPS listener with `tls`, basic auth and its users with
        `users`."""
        args = []
        if self.pki is not None:
            args += [
                f"-Dquarkus.http.ssl-port={self.tls_port}",
                f"-Dquarkus.http.ssl.certificate.files={self.pki.server_cert_path}",
                f"-Dquarkus.http.ssl.certificate.key-files={self.pki.server_key_path}",
                "-Dquarkus.http.insecure-requests=enabled",
            ]
        if not self.users:
            return args
        args += [
            "-Dquarkus.http.auth.basic=true",
            "-Dquarkus.security.users.embedded.enabled=true",
            "-Dquarkus.security.users.embedded.plain-text=true",
            "-Dapicurio.auth.enabled=true",
        ]
        for name, password in self.users.items():
            args.append(f"-Dquarkus.security.users.embedded.users.{name}={password}")
            args.append(f"-Dquarkus.security.users.embedded.roles.{name}=sr-admin")
        return args

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": CONTENT_TYPE}
        if self.users:
            name, password = next(iter(self.users.items()))
            token = base64.b64encode(f"{name}:{password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        return headers

    def _request(self, method: str, path: str, body: object | None = None) -> tuple[int, object]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method, headers=self._headers())
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def _ready(self) -> bool:
        try:
            req = urllib.request.Request(f"{self.url}/subjects", headers=self._headers())
            with urllib.request.urlopen(req, timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def start(self, timeout: float = 120.0) -> RegistryServer:
        self.proc = start_service(
            self._command(),
            self.log_path,
            self._ready,
            "schema registry",
            timeout,
            poll=0.2,
            cwd=self.workdir,
        )
        if self.compatibility is not None:
            status, answer = self._request("PUT", "/config", {"compatibility": self.compatibility})
            expected = {"compatibilityLevel": self.compatibility}
            if status != 200 or answer != expected:
                self.stop()
                raise RuntimeError(f"schema registry refused compatibility {self.compatibility}: {answer}")
        return self

    def stop(self) -> None:
        stop_service(self.proc)
        self.proc = None

    def __enter__(self) -> RegistryServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    with RegistryServer() as registry:
        print(registry.url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            sys.exit(0)
