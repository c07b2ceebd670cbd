# Sourced by the install scripts of the Java services the tests run (kafka-broker/,
# elasticsearch-node/), which set `what` (the service, for messages) first.
#
# What cannot be installed is an error in CI (CI=true); elsewhere a warning, and the tests
# that need the service skip saying what is missing.

give_up() {
    if [ "${CI:-}" = true ]; then
        echo "error: $*" >&2
        exit 1
    fi
    echo "warning: $*; the tests that need $what will be skipped" >&2
    exit 0
}

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi
}

# Java 17 and Maven from Debian when either is missing.
need_java_and_maven() {
    if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then
        echo "installing Java 17 and Maven for $what" >&2
        { as_root apt-get update -q && as_root env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -q openjdk-17-jre-headless maven; } \
            || give_up "could not install Java and Maven (apt-get install openjdk-17-jre-headless maven)"
    fi
}
