# The commands CI and the README use. Build outputs are cached outside the clone.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/kafka-ml/target
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test setup build wheel wheel-test broker lint rust-test proptest-long unit py-test bench clean connect postgres registry

demo: build
	$(VENV)/bin/kafka-ml demo

# wheel-test right after build: the wheel then reuses build's compile (cargo test would replace it).
test: build wheel-test broker lint rust-test unit py-test

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "maturin>=1.9,<2"
	touch $(STAMP)

setup: $(STAMP)

# Builds the native module into the venv with the dev extras (incremental when nothing changed).
build: setup
	$(VENV)/bin/maturin develop --release --extras dev

# The release artefacts in dist/: one abi3 wheel (CPython 3.10 and later, a manylinux tag that
# maturin's compliance check gives it) and the sdist. The wheel is built with the same interpreter
# and settings as `build`, so cargo reuses that compile instead of starting another.
wheel: build
	rm -rf dist
	$(VENV)/bin/maturin build --release -i $(PY) -o dist
	$(VENV)/bin/maturin sdist -o dist

# The wheel alone in fresh venvs of CPython 3.10 and 3.13, outside the source tree: a smoke test
# and `kafka-ml demo` on the embedded cluster.
wheel-test: wheel
	tests/scripts/wheel_test.sh

# Resolves the Apache Kafka broker's jars from Maven Central (cached in ~/.m2).
broker:
	$(PY) -c "import sys; sys.path.insert(0, 'kafka'); import launcher; launcher.ensure_jars()"

# Resolves the Kafka Connect worker and its plugins (FileStream, the Debezium PostgreSQL source,
# Debezium's JDBC sink with the PostgreSQL driver) from Maven Central, and installs PostgreSQL
# (Debian's package) where it is missing; the Connect tests start both.
connect: postgres
	$(PY) -c "import sys; sys.path.insert(0, 'kafka'); import connect_launcher; connect_launcher.ensure_connect_jars()"

# Resolves the Schema Registry the tests start (Apicurio Registry, its Confluent-compatible API)
# from Maven Central (cached in ~/.m2) and unpacks it into kafka/registry/target.
registry:
	$(PY) -c "import sys; sys.path.insert(0, 'kafka'); import registry_launcher; registry_launcher.ensure_registry_jar()"

postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
		echo "installing PostgreSQL (Debian's postgresql package)"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql; }

lint: setup
	cargo fmt --check
	cargo clippy --release --all-targets -- -D warnings
	$(VENV)/bin/ruff check python tests kafka bench examples
	$(VENV)/bin/ruff format --check python tests kafka bench examples
	$(VENV)/bin/mypy
	$(PY) -m mypy.stubtest kafka_ml._native

rust-test:
	cargo test --release

# The decoders' property tests (tests/decoders_prop.rs) at length: PROPTEST_CASES cases per
# property (5 properties; 2 000 000 each is the 10 M-case campaign the README reports). Outside
# `make test`, whose `cargo test` runs 256 cases per property.
PROPTEST_CASES ?= 2000000
proptest-long:
	PROPTEST_CASES=$(PROPTEST_CASES) cargo test --release --test decoders_prop -- --test-threads=2

# The broker-free tier (tests marked `unit` by tests/conftest.py): with KAFKA_ML_NO_SERVICES=1 a
# test that would start a broker, registry or database fails, so the tier is known to need none.
unit: build
	KAFKA_ML_NO_SERVICES=1 $(VENV)/bin/pytest -m unit -q

py-test: build broker connect registry
	$(VENV)/bin/pytest

bench: build broker
	$(PY) bench/consume_bench.py
	$(PY) bench/produce_bench.py
	$(PY) bench/torch_bench.py
	$(PY) bench/model_bench.py
	$(PY) bench/inference_bench.py
	$(PY) bench/files_bench.py

clean:
	rm -rf $(VENV) dist kafka/target kafka/connect/target kafka/registry/target
