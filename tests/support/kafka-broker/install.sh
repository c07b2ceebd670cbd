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

what="the Kafka broker"
# shellcheck source=../java-tools.sh
. "$here/../java-tools.sh"

[ -e "$jars/.complete" ] && command -v java >/dev/null && exit 0

need_java_and_maven
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
