"""`kafka-ml serve MODULE:FUNCTION`: a long-lived serving process running an
:class:`~kafka_ml.inference.InferenceLoop` (the work is the loop's).

Everything that can be checked without the cluster is checked first, and a mistake exits 2 with
one line naming it: the predict function (module, attribute, callable, arity), the config file,
the schemas (parsed by the core's own column parser, offline), the metrics port (bound before
anything connects). SIGTERM / SIGINT finish the batch in flight, commit it, print the final
metrics as one JSON line on stdout and exit 0. A predict error with ``--on-predict-error stop``
prints the metrics line too (what was served before it is committed) and exits 1.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._secrets import redact
from .cli_args import (
    READ_FORMATS,
    REGISTRY_FORMATS,
    add_decoding,
    add_kafka_options,
    decoding_options,
    kafka_config,
    parse_columns,
    schema_text,
    secret_from_env,
    split_registry,
)
from .exceptions import ConfigError, InferenceError, KafkaMLError

OUTPUT_FORMATS = ("json", "connect_json", "avro", "tensor", "raw")


def add_serve_parser(sub: Any) -> None:
    s = sub.add_parser(
        "serve",
        help="serve a predict function: consume inputs, write one result per input, until SIGTERM",
        description="Runs predict(batch) (or predict(batch, model) with --model-topic) on every input "
        "batch of --input and writes one result per input to --output, keyed like its input, with "
        "lineage headers. Replicas with the same group share the input partitions; give each its own "
        "--instance. SIGTERM / SIGINT finish the batch in flight, commit it and exit 0 after printing "
        "the final metrics as a JSON line. Bad arguments exit 2 before anything connects.",
    )
    s.add_argument(
        "target",
        metavar="MODULE:FUNCTION",
        help="the predict function: a module importable from the current directory or sys.path "
        "(pkg.module:predict), or a file (path/to/model.py:predict)",
    )
    s.add_argument(
        "--input", required=True, action="append", metavar="TOPIC", help="input topic (repeatable)"
    )
    s.add_argument("--output", required=True, metavar="TOPIC", help="the topic results go to")
    s.add_argument("--group", help="the consumer group (default: group.id from --config)")
    s.add_argument(
        "--instance",
        default="0",
        help="this replica's stable name (default 0); exactly_once derives transactional.id from "
        "group and instance, so a restarted replica fences its predecessor",
    )
    s.add_argument("--delivery", choices=("at_least_once", "exactly_once"), default="at_least_once")
    add_decoding(s, READ_FORMATS, default="json")
    s.add_argument("--on-decode-error", choices=("error", "skip"), default="error", help="undecodable inputs")
    s.add_argument("--output-format", choices=OUTPUT_FORMATS, default="json", help="how results are encoded")
    s.add_argument(
        "--output-schema",
        metavar="SCHEMA",
        help="json/connect_json: the result columns as 'id:int64,y:float32' or a JSON object (or a file "
        "holding one); avro: the record schema (.avsc file or JSON)",
    )
    s.add_argument(
        "--output-schema-id",
        type=int,
        help="avro: frame results with this registry schema id (default with --schema-registry: register "
        "--output-schema under <output>-value at start)",
    )
    s.add_argument("--model-topic", metavar="TOPIC", help="serve the newest verified model from this topic")
    s.add_argument(
        "--model-loader",
        choices=("auto", "numpy", "torch", "bytes", "path"),
        default="auto",
        help="how a model version is loaded (see ModelSubscriber)",
    )
    s.add_argument(
        "--model-timeout", type=float, default=30.0, help="seconds to wait for a first model version"
    )
    s.add_argument(
        "--model-signing-key-env",
        metavar="VAR",
        help="environment variable holding the HMAC key every model manifest must be signed with",
    )
    s.add_argument(
        "--model-verify-key",
        action="append",
        type=Path,
        metavar="FILE",
        help="an Ed25519 public key (PEM) a model manifest may be signed with (repeatable)",
    )
    s.add_argument("--dead-letter-topic", metavar="TOPIC", help="where inputs go when predict raises")
    s.add_argument(
        "--on-predict-error",
        choices=("dead_letter", "stop"),
        help="dead_letter (default with --dead-letter-topic) or stop (default without)",
    )
    s.add_argument("--batch-size", type=int, default=1024, help="inputs per predict call at most")
    s.add_argument(
        "--max-wait",
        type=float,
        default=0.0,
        help="seconds a partial batch may wait for more input (default 0: predict as soon as input is there)",
    )
    s.add_argument(
        "--max-in-flight", type=int, default=8, help="async def predict: groups predicted concurrently"
    )
    s.add_argument("--idle-timeout", type=float, help="stop after this many seconds without input")
    s.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus metrics on this port (0: any free one; needs kafka-ml[metrics])",
    )
    s.add_argument(
        "--metrics-addr",
        default="0.0.0.0",
        help="the metrics endpoint's address (default 0.0.0.0, all interfaces: Prometheus scrapes from "
        "elsewhere; 127.0.0.1 keeps it on this host)",
    )
    s.add_argument(
        "--metrics-interval", type=float, default=10.0, help="seconds between metrics log lines on stderr"
    )
    s.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    add_kafka_options(s)


# -- the predict function -----------------------------------------------------------------------


def load_target(target: str) -> Callable[..., Any]:
    """``module:function`` or ``path/to/file.py:function`` (``function`` may be dotted, e.g.
    ``Model.predict`` of a class attribute). Raises :class:`ConfigError` naming what is missing."""
    where, sep, attribute = target.rpartition(":")
    if not sep or not where or not attribute:
        raise ConfigError(f"{target!r}: expected MODULE:FUNCTION or path/to/file.py:FUNCTION")
    if where.endswith(".py") or os.sep in where or "/" in where:
        module = _load_file(Path(where))
    else:
        module = _import(where)
    obj: Any = module
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{target}: {where} has no attribute {part!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{target}: is a {type(obj).__name__}, not a function")
    return obj  # type: ignore[no-any-return]


def _import(name: str) -> Any:
    # As `python -m` does: modules next to where the command runs are importable.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        # Only the module asked for (or a package above it) missing is "no such module"; a module
        # that exists but imports a missing one is a failure of that import.
        if e.name is not None and (name == e.name or name.startswith(e.name + ".")):
            raise ConfigError(
                f"no module named {name!r} (looked in the current directory {os.getcwd()} and sys.path)"
            ) from None
        raise ConfigError(f"importing {name!r} failed: {type(e).__name__}: {e}") from None
    except Exception as e:
        raise ConfigError(f"importing {name!r} failed: {type(e).__name__}: {e}") from None


def _load_file(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    # Its neighbours importable, as when the file is run as a script.
    sys.path.insert(0, str(path.resolve().parent))
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise ConfigError(f"importing {path} failed: {type(e).__name__}: {e}") from None
    return module


def _check_arity(predict: Callable[..., Any], target: str, with_model: bool) -> None:
    try:
        signature = inspect.signature(predict)
    except (TypeError, ValueError):  # a builtin without a signature: found out at the first batch
        return
    try:
        signature.bind(None, None) if with_model else signature.bind(None)
    except TypeError:
        call = "predict(batch, model) (--model-topic)" if with_model else "predict(batch)"
        raise ConfigError(f"{target}{signature} cannot be called as {call}") from None


# -- schemas ------------------------------------------------------------------------------------


def check_columns(columns: dict[str, Any], flag: str) -> None:
    """Parses column declarations with the core's own parser, offline: a producer with no
    bootstrap servers prepares an empty send (nothing connects, nothing is sent)."""
    import pyarrow as pa

    from . import _native
    from .dataset import _column_decl

    decls = [(str(n), _column_decl(n, d)) for n, d in columns.items()]
    try:
        _native.Producer({}).prepare_send("", pa.table({}), "json", columns=decls)
    except KafkaMLError as e:
        raise ConfigError(f"{flag}: {e}") from None


def _check_avro(text: str, flag: str) -> Any:
    try:
        schema = json.loads(text)
    except ValueError as e:
        raise ConfigError(f"{flag}: the Avro schema is not valid JSON ({e})") from None
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise ConfigError(f"{flag}: expected an Avro record schema ({{'type': 'record', ...}})")
    return schema


def output_options(args: argparse.Namespace, registry: Any = None) -> dict[str, Any]:
    """The loop's output arguments. Avro results with a Schema Registry and no
    --output-schema-id: the schema is registered under <output>-value when serving starts."""
    fmt = args.output_format
    options: dict[str, Any] = {"output_format": fmt}
    if args.output_schema is not None:
        if fmt in ("json", "connect_json"):
            columns = parse_columns(args.output_schema, "--output-schema")
            check_columns(columns, "--output-schema")
            options["output_schema"] = columns
        elif fmt == "avro":
            options["output_avro_schema"] = _check_avro(schema_text(args.output_schema), "--output-schema")
        else:
            raise ConfigError(f"--output-schema is not used by --output-format {fmt}")
    elif fmt in ("connect_json", "avro"):
        raise ConfigError(f"--output-format {fmt} needs --output-schema")
    if args.output_schema_id is not None:
        if fmt != "avro":
            raise ConfigError("--output-schema-id is for --output-format avro")
        options["output_schema_id"] = args.output_schema_id
    elif fmt == "avro" and registry is not None:
        options["output_schema_registry"] = registry
    return options


# -- the command --------------------------------------------------------------------------------


def serve_command(args: argparse.Namespace) -> int:
    try:
        return _serve(args)
    except (ConfigError, ImportError) as e:
        print(f"kafka-ml serve: {e}", file=sys.stderr)
        return 2
    except KafkaMLError as e:
        # The library's messages say what failed and never carry a secret.
        print(f"kafka-ml serve: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


def _serve(args: argparse.Namespace) -> int:
    from .inference import InferenceLoop

    config, registry = split_registry(kafka_config(args), args.schema_registry)
    if args.group:
        config["group.id"] = args.group
    if not config.get("group.id"):
        raise ConfigError("name the consumer group: --group, or group.id in --config")
    if not config.get("bootstrap.servers"):
        raise ConfigError("name the cluster: --bootstrap-servers, or bootstrap.servers in --config")
    predict = load_target(args.target)
    _check_arity(predict, args.target, with_model=args.model_topic is not None)
    # The registry serves the inputs (registry-framed formats), the results (Avro), or both.
    input_registry = registry if args.format in REGISTRY_FORMATS else None
    if registry is not None and input_registry is None and args.output_format != "avro":
        raise ConfigError(
            "--schema-registry is for --format avro, json_schema or protobuf, or --output-format avro; "
            f"not --format {args.format} with --output-format {args.output_format}"
        )
    dataset_options = decoding_options(args, input_registry)
    if args.format in ("json", "debezium") and "schema" not in dataset_options:
        raise ConfigError(f"--format {args.format} needs --schema (the input columns)")
    if "schema" in dataset_options:
        check_columns(dataset_options["schema"], "--schema")
    if args.format == "avro" and "avro_schema" in dataset_options:
        _check_avro(dataset_options["avro_schema"], "--schema")
    outputs = output_options(args, registry)
    on_predict_error: Any = args.on_predict_error or ("dead_letter" if args.dead_letter_topic else "stop")
    signing_key = secret_from_env(args.model_signing_key_env, "--model-signing-key-env")
    for key in args.model_verify_key or []:
        if not key.is_file():
            raise ConfigError(f"--model-verify-key {key}: no such file")
    if args.metrics_port is not None:
        from .metrics import prometheus

        prometheus()  # the ImportError naming the extra, before anything else starts

    logging.basicConfig(level=args.log_level, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    loop = InferenceLoop(
        predict,
        args.input,
        args.output,
        config,
        delivery=args.delivery,
        on_predict_error=on_predict_error,
        dead_letter_topic=args.dead_letter_topic,
        instance=args.instance,
        batch_size=args.batch_size,
        max_wait=args.max_wait,
        max_in_flight=args.max_in_flight,
        metrics_interval=args.metrics_interval,
        metrics_port=args.metrics_port,  # bound here: a port in use exits 2 before connecting
        metrics_addr=args.metrics_addr,
        model_timeout=args.model_timeout,
        on_error=args.on_decode_error,
        **outputs,
        **dataset_options,
    )
    # A signal while the model subscriber starts stops the loop before it takes any input
    # (run() installs its own handlers, which do the same while serving).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: loop.stop())
    subscriber = None
    try:
        if args.model_topic is not None:
            from .models import ModelSubscriber

            subscriber = ModelSubscriber(
                args.model_topic,
                config_without_group(config),
                loader=args.model_loader,
                signing_key=signing_key,
                verify_keys=[str(k) for k in args.model_verify_key] if args.model_verify_key else None,
            )
            loop.model = subscriber
        _banner(args, config, loop)
        try:
            metrics = loop.run(idle_timeout=args.idle_timeout)
        except InferenceError:
            # A predict error with --on-predict-error stop: what was served before it is
            # committed; say how far it got, then exit 1 with the error.
            print(json.dumps(summary(loop.metrics)), flush=True)
            raise
    finally:
        if subscriber is not None:
            subscriber.close()
        if loop.prometheus is not None:
            loop.prometheus.stop()
    print(json.dumps(summary(metrics)), flush=True)
    return 0


def config_without_group(config: dict[str, str]) -> dict[str, str]:
    # The model subscriber reads its topic from the start by itself: it is no group member.
    return {k: v for k, v in config.items() if not k.startswith("group.")}


def _banner(args: argparse.Namespace, config: dict[str, str], loop: Any) -> None:
    model = f", model from '{args.model_topic}'" if args.model_topic else ""
    print(
        f"kafka-ml serve: {args.target} on {', '.join(repr(t) for t in args.input)} -> '{args.output}', "
        f"group '{config['group.id']}', instance '{args.instance}', {args.delivery}{model}",
        file=sys.stderr,
    )
    # Secrets are shown as *** (the config file may hold sasl.password, ssl.key.password, ...).
    print(f"kafka-ml serve: config {json.dumps(redact(config), sort_keys=True)}", file=sys.stderr)
    if loop.prometheus is not None and loop.prometheus.server is not None:
        server = loop.prometheus.server
        print(f"kafka-ml serve: metrics on http://{server.addr}:{server.port}/metrics", file=sys.stderr)
    sys.stderr.flush()


def summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """The final metrics as JSON: lag keyed ``topic[partition]``."""
    out = dict(metrics)
    out["lag"] = {f"{t}[{p}]": n for (t, p), n in sorted(metrics["lag"].items())}
    return out
