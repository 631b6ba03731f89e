#!/usr/bin/env bash
# Bazel test wrapper: runs one pytest file with Debian's /usr/bin/python3 and
# the built gradnorm package (from the runfiles tree) importable.
#   pytest_runner.sh client/python/torch_api_test.py [pytest args...]
set -euo pipefail
root="${TEST_SRCDIR:?run me under bazel test}/${TEST_WORKSPACE:-gradnorm}"
export PYTHONPATH="${root}/client/python"
export PYTHONDONTWRITEBYTECODE=1
cd "${TEST_TMPDIR:-/tmp}"
exec /usr/bin/python3 -m pytest -q -p no:cacheprovider "${root}/$1" "${@:2}"
