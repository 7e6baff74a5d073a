#!/usr/bin/env bash
# Rebuilds vendor/rdkafka-sys from the rdkafka-sys crate in cargo's registry and applies
# vendor/patches/*.patch. Run it after changing the rdkafka-sys version (first `cargo fetch`
# with the [patch] entry in Cargo.toml commented out, so the new crate is in the registry).
# Usage: vendor/update-rdkafka-sys.sh 4.10.0+2.12.1
set -euo pipefail
version=${1:?usage: $0 RDKAFKA_SYS_VERSION (e.g. 4.10.0+2.12.1)}
here=$(cd "$(dirname "$0")" && pwd)
src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"rdkafka-sys-$version" | head -1)
[ -d "$src" ] || { echo "rdkafka-sys $version is not in cargo's registry: cargo fetch it first" >&2; exit 1; }
rm -rf "$here/rdkafka-sys"
cp -a "$src" "$here/rdkafka-sys"
cd "$here/rdkafka-sys"
# What the CMake build (rdkafka-sys's cmake-build feature) does not read: librdkafka's tests,
# examples, Windows and mklove builds, packaging other than CMake's modules, its CI and docs.
rm -rf .cargo-ok .cargo_vcs_info.json tests simple_producer.rs CONTRIBUTING.md readme_template update-bindings.sh
cd librdkafka
rm -rf tests examples win32 mklove debian .github .semaphore service.yml dev-conf.sh .dir-locals.el \
  .gdbmacros INTRODUCTION.md STATISTICS.md CONFIGURATION.md CHANGELOG.md CODE_OF_CONDUCT.md \
  CONTRIBUTING.md Doxyfile mainpage.doxy configure configure.self Makefile lds-gen.py README.win32 \
  vcpkg.json .formatignore .clang-format .clang-format-cpp
find packaging -mindepth 1 -maxdepth 1 ! -name cmake -exec rm -rf {} +
cd ..
for patch in "$here"/patches/*.patch; do
  patch -p1 < "$patch"
done
echo "vendor/rdkafka-sys is rdkafka-sys $version with $(ls "$here"/patches/*.patch | wc -l) patch(es)"
