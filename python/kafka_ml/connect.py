"""A client of the Kafka Connect REST API: register, inspect, pause and delete connectors.

The client is generic: any connector class the Connect cluster has installed (a JDBC or
Debezium source reading a database into a topic, a sink, ...) is configured with the same
string properties Connect documents. Connect's own error messages become typed exceptions
(:class:`~kafka_ml.ConnectError` and its subclasses), and a configuration that fails Connect's
validation lists the errors of each setting.

    with ConnectClient("http://localhost:8083") as connect:
        connect.create("orders", {"connector.class": "...PostgresConnector", "topic.prefix": ...})
        connect.wait_until_running("orders")

A secured REST API: ``ConnectClient("https://connect:8443", verify="ca.pem",
cert=("client.pem", "client.key"), auth=("user", password))`` (or ``token=`` for a bearer
token). The password and token appear in no repr, exception or log line.

Needs the ``connect`` extra (``pip install kafka-ml[connect]``), which brings httpx.
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

try:
    import httpx
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("kafka_ml.connect needs httpx: pip install 'kafka-ml[connect]'") from e

from .dataset import _config  # Connect properties are strings, written as librdkafka's are
from .exceptions import (
    ConfigError,
    ConnectConflictError,
    ConnectError,
    ConnectorExistsError,
    ConnectorFailedError,
    ConnectorNotFoundError,
    ConnectTimeoutError,
    ConnectUnreachableError,
    ConnectValidationError,
)

__all__ = ["ConnectClient", "ConnectorStatus", "TaskStatus", "ValidationResult"]

DEFAULT_URL = "http://localhost:8083"

# A client certificate, as httpx took it: a PEM file holding the certificate and its key,
# (certificate file, key file), or (certificate file, key file, key password).
_Path = str | os.PathLike[str]
CertTypes = _Path | tuple[_Path, _Path | None] | tuple[_Path, _Path | None, str]


@dataclass(frozen=True)
class TaskStatus:
    """One task of a connector: ``state`` is ``RUNNING``, ``PAUSED``, ``FAILED``, ..."""

    id: int
    state: str
    worker_id: str
    trace: str | None = None


@dataclass(frozen=True)
class ConnectorStatus:
    """A connector's state and its tasks' (``GET /connectors/{name}/status``).

    ``trace`` is the connector's stack trace when it has ``FAILED``; each task has its own."""

    name: str
    state: str
    worker_id: str
    type: str | None
    tasks: list[TaskStatus] = field(default_factory=list)
    trace: str | None = None

    @property
    def running(self) -> bool:
        """The connector and every one of its tasks (at least one) are ``RUNNING``."""
        return self.state == "RUNNING" and bool(self.tasks) and all(t.state == "RUNNING" for t in self.tasks)

    @property
    def failed(self) -> bool:
        return self.state == "FAILED" or any(t.state == "FAILED" for t in self.tasks)

    @property
    def traces(self) -> list[str]:
        """The stack traces of the connector and its failed tasks, in that order."""
        return [t for t in [self.trace, *(task.trace for task in self.tasks)] if t]

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> ConnectorStatus:
        connector = body.get("connector", {})
        return cls(
            name=str(body["name"]),
            state=str(connector.get("state", "UNASSIGNED")),
            worker_id=str(connector.get("worker_id", "")),
            type=body.get("type"),
            tasks=[
                TaskStatus(
                    id=int(t["id"]),
                    state=str(t.get("state", "UNASSIGNED")),
                    worker_id=str(t.get("worker_id", "")),
                    trace=t.get("trace"),
                )
                for t in body.get("tasks", [])
            ],
            trace=connector.get("trace"),
        )


@dataclass(frozen=True)
class ValidationResult:
    """Connect's verdict on a configuration: ``errors`` maps each setting to its errors."""

    connector_class: str
    error_count: int
    errors: dict[str, list[str]]

    @property
    def valid(self) -> bool:
        return self.error_count == 0

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> ValidationResult:
        errors: dict[str, list[str]] = {}
        for entry in body.get("configs", []):
            # Settings a plugin declares without a definition come back with a null value.
            value = entry.get("value") or {}
            if value.get("errors"):
                # dict.fromkeys: some plugins report the same error twice.
                errors[str(value["name"])] = list(dict.fromkeys(str(e) for e in value["errors"]))
        return cls(
            connector_class=str(body.get("name", "")),
            error_count=int(body.get("error_count", len(errors))),
            errors=errors,
        )


def _is_rebalance(error: ConnectError) -> bool:
    return type(error) is ConnectConflictError and "rebalanc" in error.message


def _maybe_invalid(error: ConnectError) -> bool:
    # 400 "Connector configuration is invalid ..." lists the errors as one text. Some plugins'
    # invalid configurations make Connect fail with a 500 instead (a NullPointerException
    # while it formats that text): both are worth asking the validate endpoint about.
    return error.status in (400, 500)


class _BearerAuth(httpx.Auth):
    """``Authorization: Bearer <token>`` on every request; its repr hides the token."""

    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request

    def __repr__(self) -> str:
        return "<bearer token>"


def _auth(auth: httpx.Auth | tuple[str, str] | None, token: str | None) -> tuple[httpx.Auth | None, str]:
    """The httpx auth and how to name it in a repr (never with the secret)."""
    if auth is not None and token is not None:
        raise ConfigError("ConnectClient takes auth= or token=, not both")
    if token is not None:
        if not isinstance(token, str) or not token or any(c in token for c in "\r\n"):
            raise ConfigError("token must be a non-empty string on one line")
        return _BearerAuth(token), "bearer"
    if auth is None:
        return None, "none"
    if isinstance(auth, tuple):
        if len(auth) != 2 or not all(isinstance(x, str) for x in auth) or not auth[0]:
            raise ConfigError("auth must be (user, password) with a non-empty user, or an httpx.Auth")
        return httpx.BasicAuth(auth[0], auth[1]), "basic"
    if isinstance(auth, httpx.Auth):
        return auth, type(auth).__name__
    raise ConfigError(f"auth must be (user, password) or an httpx.Auth, got a {type(auth).__name__}")


def _tls(
    verify: bool | str | os.PathLike[str] | ssl.SSLContext, cert: CertTypes | None
) -> tuple[bool | ssl.SSLContext, str]:
    """What httpx gets as ``verify`` (a context when a CA file or client certificate is set:
    httpx 0.28 deprecates its own ``verify=<path>`` and ``cert=``) and a description for repr."""
    if isinstance(verify, ssl.SSLContext):
        if cert is not None:
            raise ConfigError("cert= with an ssl.SSLContext: load the certificate into the context instead")
        return verify, "SSLContext"
    if isinstance(verify, bool):
        if cert is None:
            return verify, str(verify)
        # httpx's own default context: certifi's CAs, or $SSL_CERT_FILE / $SSL_CERT_DIR.
        ctx = httpx.create_ssl_context(verify=verify)
        described = str(verify)
    elif isinstance(verify, (str, os.PathLike)):
        path = os.fspath(verify)
        try:
            if os.path.isdir(path):
                ctx = ssl.create_default_context(capath=path)
            else:
                ctx = ssl.create_default_context(cafile=path)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"verify: cannot load the CA certificates {path!r}: {_ssl_reason(e)}") from None
        described = repr(path)
    else:
        raise ConfigError(
            f"verify must be a bool, a CA bundle path or an ssl.SSLContext, got a {type(verify).__name__}"
        )
    if cert is not None:
        if isinstance(cert, (str, os.PathLike)):
            certfile, keyfile, password = cert, None, None
        elif isinstance(cert, tuple) and len(cert) in (2, 3):
            certfile, keyfile = cert[0], cert[1]
            password = cert[2] if len(cert) == 3 else None
        else:
            raise ConfigError(
                "cert must be a PEM file, (certificate file, key file) or "
                "(certificate file, key file, password)"
            )
        try:
            ctx.load_cert_chain(certfile, keyfile, password)
        except (OSError, ssl.SSLError) as e:
            # Names the files only: the message must not carry the key's password.
            files = repr(os.fspath(certfile)) + (f" / {os.fspath(keyfile)!r}" if keyfile is not None else "")
            raise ConfigError(f"cert: cannot load the client certificate {files}: {_ssl_reason(e)}") from None
        described += f", cert={os.fspath(certfile)!r}"
    return ctx, described


def _ssl_reason(e: OSError) -> str:
    if isinstance(e, ssl.SSLError):
        return str(e.reason or e.strerror or type(e).__name__)
    return str(e.strerror or type(e).__name__)


def _without_userinfo(url: str) -> tuple[str, tuple[str, str] | None]:
    """The URL without ``user:password@`` (kept out of messages and reprs), and those credentials."""
    parsed = httpx.URL(url)
    if not parsed.userinfo:
        return url, None
    user, _, password = parsed.userinfo.decode("ascii").partition(":")
    return str(parsed.copy_with(userinfo=b"")), (unquote(user), unquote(password))


class ConnectClient:
    """Kafka Connect's REST API.

    Args:
        url: the worker's REST address, e.g. ``"http://localhost:8083"`` (any worker of the
            cluster: Connect forwards to the leader where needed). ``user:password@`` in the URL
            is taken as basic auth and removed from the URL.
        auth: HTTP authentication for a secured REST API: ``(user, password)`` for basic auth,
            or any ``httpx.Auth``.
        token: a bearer token, sent as ``Authorization: Bearer <token>`` (instead of ``auth``).
        verify: TLS verification for ``https://``: ``True`` (certifi's CAs, or
            ``$SSL_CERT_FILE``), ``False``, the path of a CA bundle (PEM file, or a directory
            of hashed certificates), or an ``ssl.SSLContext``.
        cert: a client certificate for mutual TLS: a PEM file holding the certificate and its
            key, ``(certificate file, key file)`` or ``(certificate file, key file, key password)``.
        timeout: seconds for each request.
        headers: extra HTTP headers sent with every request.
        rebalance_timeout: seconds to keep repeating a request that Connect refuses because its
            cluster is rebalancing (it does after every connector change), before raising
            :class:`~kafka_ml.ConnectConflictError`.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        auth: httpx.Auth | tuple[str, str] | None = None,
        token: str | None = None,
        verify: bool | str | os.PathLike[str] | ssl.SSLContext = True,
        cert: CertTypes | None = None,
        timeout: float = 30.0,
        headers: Mapping[str, str] | None = None,
        rebalance_timeout: float = 30.0,
    ) -> None:
        url, url_auth = _without_userinfo(url)
        if url_auth is not None:
            if auth is not None or token is not None:
                raise ConfigError("credentials both in the URL and in auth= / token=: give them once")
            auth = url_auth
        self.url = url.rstrip("/")
        self.rebalance_timeout = rebalance_timeout
        http_auth, self._auth_kind = _auth(auth, token)
        tls, self._tls_description = _tls(verify, cert)
        self._http = httpx.Client(
            base_url=self.url,
            auth=http_auth,
            verify=tls,
            timeout=timeout,
            headers={"Accept": "application/json", **(headers or {})},
        )

    # -- plumbing ----------------------------------------------------------------------------

    def _request(self, method: str, path: str, *, json: object = None, params: Any = None) -> Any:
        # While the cluster rebalances (after any connector change) Connect refuses requests
        # with 409 or 500 "...rebalance..."; nothing was applied, so the request is repeated.
        deadline = time.monotonic() + self.rebalance_timeout
        delay = 0.1
        while True:
            try:
                response = self._http.request(method, path, json=json, params=params)
            except httpx.TransportError as e:
                hint = ""
                if "CERTIFICATE_VERIFY_FAILED" in str(e):
                    hint = " (the worker's certificate is not trusted: pass its CA as verify=, or --ca)"
                raise ConnectUnreachableError(
                    f"Kafka Connect at {self.url} is unreachable ({method} {path}): "
                    f"{e or type(e).__name__}{hint}"
                ) from e
            if response.is_success:
                if response.status_code == 204 or not response.content:
                    return None
                return response.json()
            error = self._error(method, path, response)
            if not _is_rebalance(error) or time.monotonic() + delay > deadline:
                raise error
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _error(self, method: str, path: str, response: httpx.Response) -> ConnectError:
        status = response.status_code
        try:
            body = response.json()
            message = str(body.get("message") or response.reason_phrase)
            error_code = int(body.get("error_code", status))
        except (ValueError, AttributeError):
            message, error_code = response.text.strip() or response.reason_phrase, status
        text = f"Kafka Connect {method} {path}: {message} (HTTP {status})"
        if status in (401, 403):
            text += f" (authentication: {self._auth_kind})"
        if status == 404:
            return ConnectorNotFoundError(text, status=status, error_code=error_code)
        if status == 409 and "already exists" in message:
            return ConnectorExistsError(text, status=status, error_code=error_code)
        if status == 409 or "rebalance" in message:
            return ConnectConflictError(text, status=status, error_code=error_code)
        return ConnectError(text, status=status, error_code=error_code)

    @staticmethod
    def _path(name: str) -> str:
        return f"/connectors/{quote(name, safe='')}"

    def __repr__(self) -> str:
        # Names how the client authenticates, never with what.
        return f"ConnectClient({self.url!r}, auth={self._auth_kind}, verify={self._tls_description})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ConnectClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the cluster -------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """The worker's version, commit and Kafka cluster id (``GET /``)."""
        return dict(self._request("GET", "/"))

    def plugins(self, *, connectors_only: bool = True) -> list[dict[str, Any]]:
        """Installed plugins: ``[{"class": ..., "type": "source"|"sink"|..., "version": ...}]``."""
        return list(
            self._request(
                "GET", "/connector-plugins", params={"connectorsOnly": str(connectors_only).lower()}
            )
        )

    def validate(self, config: Mapping[str, object], *, name: str | None = None) -> ValidationResult:
        """Checks a configuration (it must name its ``connector.class``) without creating anything.

        ``name`` is the connector's name-to-be (Connect requires one; by default the config's
        own ``name``, else a placeholder)."""
        cfg = _config(config)
        cfg["name"] = name or cfg.get("name") or "validation"
        connector_class = cfg.get("connector.class")
        if not connector_class:
            raise ConnectValidationError(
                "connector configuration is invalid",
                errors={"connector.class": ["missing: every connector configuration names its class"]},
            )
        # Connect's path takes the class name, or its simple name; a dotted name is fine in a path.
        body = self._request(
            "PUT", f"/connector-plugins/{quote(connector_class, safe='')}/config/validate", json=cfg
        )
        return ValidationResult.from_json(body)

    # -- connectors --------------------------------------------------------------------------

    def connectors(self) -> list[str]:
        """Names of the connectors on the cluster, sorted."""
        return sorted(self._request("GET", "/connectors"))

    def statuses(self) -> dict[str, ConnectorStatus]:
        """Every connector's status, in one request."""
        body = self._request("GET", "/connectors", params={"expand": "status"})
        return {name: ConnectorStatus.from_json(entry["status"]) for name, entry in sorted(body.items())}

    def get(self, name: str) -> dict[str, Any]:
        """``{"name", "config", "tasks", "type"}`` of a connector."""
        return dict(self._request("GET", self._path(name)))

    def config(self, name: str) -> dict[str, str]:
        """The connector's configuration."""
        return dict(self._request("GET", f"{self._path(name)}/config"))

    def create(self, name: str, config: Mapping[str, object]) -> dict[str, Any]:
        """Creates a connector; returns its ``{"name", "config", "tasks", "type"}``.

        Raises :class:`~kafka_ml.ConnectValidationError` listing each setting's errors when
        Connect finds the configuration invalid, and :class:`~kafka_ml.ConnectorExistsError`
        when the name is taken."""
        cfg = _config(config)
        try:
            return dict(self._request("POST", "/connectors", json={"name": name, "config": cfg}))
        except ConnectError as e:
            if _maybe_invalid(e):
                raise self._validation_error(name, cfg, e) from e
            raise

    def update_config(self, name: str, config: Mapping[str, object]) -> dict[str, Any]:
        """Replaces a connector's configuration, creating the connector if it does not exist."""
        cfg = _config(config)
        try:
            return dict(self._request("PUT", f"{self._path(name)}/config", json=cfg))
        except ConnectError as e:
            if _maybe_invalid(e):
                raise self._validation_error(name, cfg, e) from e
            raise

    def _validation_error(self, name: str, cfg: dict[str, str], error: ConnectError) -> ConnectError:
        # Connect's 400 carries the errors as one text; the validate endpoint gives them per setting.
        try:
            result = self.validate(cfg, name=name)
        except ConnectError:
            return error
        if result.valid:
            return error
        return ConnectValidationError(
            f"connector '{name}' ({result.connector_class}): configuration is invalid, "
            "the errors of each setting:",
            errors=result.errors,
            status=error.status,
            error_code=error.error_code,
        )

    def status(self, name: str) -> ConnectorStatus:
        """The connector's and its tasks' states, with stack traces of failures."""
        return ConnectorStatus.from_json(self._request("GET", f"{self._path(name)}/status"))

    def pause(self, name: str) -> None:
        """Pauses the connector and its tasks (asynchronously: watch :meth:`status`)."""
        self._request("PUT", f"{self._path(name)}/pause")

    def resume(self, name: str) -> None:
        """Resumes a paused connector (asynchronously)."""
        self._request("PUT", f"{self._path(name)}/resume")

    def restart(self, name: str, *, include_tasks: bool = False, only_failed: bool = False) -> None:
        """Restarts the connector, and with ``include_tasks`` its (``only_failed``) tasks."""
        self._request(
            "POST",
            f"{self._path(name)}/restart",
            params={"includeTasks": str(include_tasks).lower(), "onlyFailed": str(only_failed).lower()},
        )

    def restart_task(self, name: str, task_id: int) -> None:
        """Restarts one task of the connector."""
        self._request("POST", f"{self._path(name)}/tasks/{int(task_id)}/restart")

    def delete(self, name: str) -> None:
        """Deletes the connector (its committed source offsets stay in the offsets topic).

        It leaves :meth:`connectors` at once; its tasks stop, and its status goes, a moment later."""
        self._request("DELETE", self._path(name))

    def wait_until_running(self, name: str, timeout: float = 60.0, *, poll: float = 0.5) -> ConnectorStatus:
        """Waits until the connector and all its tasks are ``RUNNING``; returns that status.

        Raises :class:`~kafka_ml.ConnectorFailedError` (with the stack trace) as soon as the
        connector or a task has ``FAILED``, and :class:`~kafka_ml.ConnectTimeoutError` after
        ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        last: ConnectorStatus | None = None
        while True:
            try:
                last = self.status(name)
            except ConnectorNotFoundError:
                # A just-created connector's status appears once the worker has started it.
                last = None
            if last is not None and last.failed:
                failed = [f"task {t.id}" for t in last.tasks if t.state == "FAILED"]
                what = ", ".join((["the connector"] if last.state == "FAILED" else []) + failed)
                trace = "\n".join(last.traces) or None
                first_line = trace.splitlines()[0] if trace else "no trace"
                raise ConnectorFailedError(
                    f"connector '{name}' failed ({what}): {first_line}", trace=trace, connector_status=last
                )
            if last is not None and last.running:
                return last
            if time.monotonic() >= deadline:
                state = (
                    "no status yet"
                    if last is None
                    else f"connector {last.state}, tasks {[t.state for t in last.tasks]}"
                )
                raise ConnectTimeoutError(f"connector '{name}' not running after {timeout}s ({state})")
            time.sleep(poll)
