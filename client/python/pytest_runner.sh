#!/usr/bin/env bash
# Bazel test wrapper: runs one pytest file with Debian's /usr/bin/python3 and
# the gradnorm package of the build tree (client/python/gradnorm, with
# client/c_api/libgradnorm.so) importable.
#   pytest_runner.sh client/python/torch_api_test.py [pytest args...]
set -euo pipefail
root="${TEST_SRCDIR:?run me under bazel test}/${TEST_WORKSPACE:-gradnorm}"
export PYTHONPATH="${root}/client/python"
export PYTHONDONTWRITEBYTECODE=1
export GRADNORM_COORDINATOR="${root}/server/coordinator"
cd "${TEST_TMPDIR:-/tmp}"
exec /usr/bin/python3 -m pytest -q -p no:cacheprovider \
    --rootdir="${root}/client/python" "${root}/$1" "${@:2}"
