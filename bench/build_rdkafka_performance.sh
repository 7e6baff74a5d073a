#!/usr/bin/env bash
# Build librdkafka's own C benchmark client (examples/rdkafka_performance) from the librdkafka
# sources vendored in the cargo registry (rdkafka-sys), using mklove's ./configure (not cmake).
# Prints the path of the binary on its last line of stdout. Skips the build if it already exists.
set -euo pipefail

CACHE_DIR="${KAFKA_ML_CACHE:-$HOME/.cache/kafka-ml}"
SRC_DIR="$CACHE_DIR/librdkafka-src"
BIN="$SRC_DIR/examples/rdkafka_performance"

if [[ -x "$BIN" ]]; then
    echo "$BIN"
    exit 0
fi

CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}"
ORIG=""
for d in "$CARGO_HOME"/registry/src/*/rdkafka-sys-*/librdkafka; do
    [[ -f "$d/configure" ]] && ORIG="$d"
done
if [[ -z "$ORIG" ]]; then
    echo "error: librdkafka sources not found under $CARGO_HOME/registry/src/*/rdkafka-sys-*/librdkafka" >&2
    echo "       (run 'cargo fetch' in the repository first)" >&2
    exit 1
fi

echo "copying $ORIG -> $SRC_DIR" >&2
mkdir -p "$CACHE_DIR"
rm -rf "$SRC_DIR"
cp -a "$ORIG" "$SRC_DIR"
chmod -R u+w "$SRC_DIR"
cd "$SRC_DIR"
JOBS="${JOBS:-$(nproc 2>/dev/null || echo 2)}"
{
    ./configure --disable-curl --disable-ssl --disable-gssapi --disable-sasl --disable-zstd
    make -j"$JOBS" libs
    make -C examples rdkafka_performance
} >&2
if [[ ! -x "$BIN" ]]; then
    echo "error: build finished but $BIN is missing" >&2
    exit 1
fi
echo "$BIN"
