#!/usr/bin/env bash
# Installs the Elasticsearch node the search indexer's tests run (tests/support/elasticsearch.py):
# Java 17 and Maven from Debian when missing, then Elasticsearch 8.19.21's integration-test
# distribution (pom.xml beside this script) from Maven Central, unpacked into
# $PACS_ELASTICSEARCH_HOME (default ~/.cache/pacs/elasticsearch-8.19.21) once: skipped when
# that folder is complete.
#
# What cannot be installed is an error in CI (CI=true); elsewhere a warning, and the tests
# that need Elasticsearch skip saying what is missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
home="${PACS_ELASTICSEARCH_HOME:-$HOME/.cache/pacs/elasticsearch-8.19.21}"

what="Elasticsearch"
# shellcheck source=../java-tools.sh
. "$here/../java-tools.sh"

[ -e "$home/.complete" ] && command -v java >/dev/null && exit 0

need_java_and_maven
[ -e "$home/.complete" ] && exit 0

rm -rf "$home.partial"
mkdir -p "$home.partial"
mvn -q -B -Dstyle.color=never -f "$here/pom.xml" dependency:unpack-dependencies \
    -DoutputDirectory="$home.partial" -DincludeTypes=zip \
    -DmarkersDirectory="$home.partial/.markers" \
    || give_up "could not fetch Elasticsearch from Maven Central (mvn dependency:unpack-dependencies)"
# (The markers stay out of the repository: one left beside the pom made later runs skip
# the unpacking.) The zip holds one folder, elasticsearch-<version>/: its content becomes the home.
inner="$(find "$home.partial" -mindepth 1 -maxdepth 1 -type d -name 'elasticsearch-*' | head -n 1)"
[ -n "$inner" ] && [ -x "$inner/bin/elasticsearch" ] \
    || give_up "the Elasticsearch zip has no bin/elasticsearch"
rm -rf "$home"
mv "$inner" "$home"
rm -rf "$home.partial"
touch "$home/.complete"
echo "elasticsearch: the node is in $home" >&2
