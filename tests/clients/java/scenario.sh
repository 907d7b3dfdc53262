#!/usr/bin/env bash
# Runs Scenario.java with the Kafka Java client, compiled once instead of on every run.
#
#     tests/clients/java/scenario.sh --bootstrap HOST:PORT --scenario NAME [options]
#
# Same options and output as `java -cp "$KAFKA_LIBS/*" tests/clients/java/Scenario.java ...`
# (source-launch mode), which compiles the file on every run: about 6 s of CPU on a 2-core
# machine. This script compiles it into a cache directory keyed by the source, the jars and
# the JDK, and reuses that.
#
# KAFKA_LIBS: directory of the Kafka jars (default ~/.cache/kafka-guard/kafka/libs).
# KAFKA_GUARD_JAVA_CLASSES: where compiled classes are kept
#   (default ${XDG_CACHE_HOME:-~/.cache}/kafka-guard/java-scenario).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src="$here/Scenario.java"
libs=${KAFKA_LIBS:-$HOME/.cache/kafka-guard/kafka/libs}
if ! compgen -G "$libs/kafka-clients-*.jar" >/dev/null; then
    echo "FAIL java/?: no kafka-clients jar in $libs (set KAFKA_LIBS)" >&2
    exit 1
fi
javac_bin=$(command -v javac || true)
if [ -z "$javac_bin" ]; then
    echo "FAIL java/?: javac not found" >&2
    exit 1
fi

root=${KAFKA_GUARD_JAVA_CLASSES:-${XDG_CACHE_HOME:-$HOME/.cache}/kafka-guard/java-scenario}
key=$({ sha256sum "$src"; ls "$libs"; readlink -f "$javac_bin"; } | sha256sum | cut -c1-16)
classes="$root/$key"
if [ ! -f "$classes/Scenario.class" ]; then
    mkdir -p "$root"
    tmp=$(mktemp -d "$root/.build.XXXXXX")
    if ! javac -nowarn -encoding UTF-8 -cp "$libs/*" -d "$tmp" "$src" >&2; then
        rm -rf "$tmp"
        echo "FAIL java/?: compiling $src failed" >&2
        exit 1
    fi
    # Another run may have finished first; either copy will do.
    mv -T "$tmp" "$classes" 2>/dev/null || rm -rf "$tmp"
fi
exec java -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -cp "$classes:$libs/*" Scenario "$@"
