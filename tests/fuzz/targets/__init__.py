"""atheris fuzz targets, each a program: `python -m tests.fuzz.targets.NAME [libFuzzer
options] CORPUS_DIR...` (tests/fuzz/test_parsers.py runs them for the suite's budget)."""
