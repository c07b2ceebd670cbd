#!/usr/bin/env bash
# Installs the Kafka broker the broker publisher's tests run (tests/support/kafka.py): Java 17
# and Maven from Debian when missing, then the runtime jars of Kafka 4.4.0 (pom.xml beside
# this script) from Maven Central, copied into $PACS_KAFKA_JARS (default
# ~/.cache/pacs/kafka-4.4.0) once: skipped when that folder is complete.
#
# What cannot be installed is an error in CI (CI=true); elsewhere a warning, and the tests
# that need the broker skip saying what is missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
jars="${PACS_KAFKA_JARS:-$HOME/.cache/pacs/kafka-4.4.0}"

give_up() {
    if [ "${CI:-}" = true ]; then
        echo "error: $*" >&2
        exit 1
    fi
    echo "warning: $*; the tests that need the Kafka broker will be skipped" >&2
    exit 0
}

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi
}

[ -e "$jars/.complete" ] && command -v java >/dev/null && exit 0

if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then
    echo "installing Java 17 and Maven for the Kafka broker" >&2
    { as_root apt-get update -q && as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q openjdk-17-jre-headless maven; } \
        || give_up "could not install Java and Maven (apt-get install openjdk-17-jre-headless maven)"
fi
[ -e "$jars/.complete" ] && exit 0

rm -rf "$jars.partial"
mkdir -p "$jars.partial"
mvn -q -B -Dstyle.color=never -f "$here/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$jars.partial" -DincludeScope=runtime \
    || give_up "could not fetch Kafka's jars from Maven Central (mvn dependency:copy-dependencies)"
touch "$jars.partial/.complete"
rm -rf "$jars"
mv "$jars.partial" "$jars"
echo "kafka: the broker's jars are in $jars" >&2
