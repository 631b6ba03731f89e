#!/usr/bin/env bash
# Bazel test wrapper: runs one pytest file with Debian's /usr/bin/python3 and
# the gradnorm package of the build tree (client/python/gradnorm, with
# client/c_api/libgradnorm.so) importable.
#   pytest_runner.sh client/python/torch_api_test.py [pytest args...]
# (tests/python uses it too, for the suites that start a coordinator).
set -euo pipefail
root="${TEST_SRCDIR:?run me under bazel test}/${TEST_WORKSPACE:-gradnorm}"
export PYTHONPATH="${root}/client/python"
export PYTHONDONTWRITEBYTECODE=1
export GRADNORM_COORDINATOR="${root}/server/coordinator"
cd "${TEST_TMPDIR:-/tmp}"
# Under --config=asan libgradnorm.so needs the ASan runtime loaded first, into
# an interpreter that is not instrumented: preload it, with libstdc++
# (python3 does not link it, and ASan must find its __cxa_throw at start).
# Leak checking stays off (CPython and torch keep their allocations until
# exit, by design).
libs="$(ldd "${root}/client/c_api/libgradnorm.so" 2>/dev/null || true)"
asan="$(awk '/libasan/ {print $3; exit}' <<<"${libs}")"
if [[ -n "${asan}" ]]; then
  export LD_PRELOAD="${asan} $(awk '/libstdc\+\+/ {print $3; exit}' <<<"${libs}")"
  export ASAN_OPTIONS="detect_leaks=0:${ASAN_OPTIONS:-}"
fi
exec /usr/bin/python3 -m pytest -q -p no:cacheprovider \
    --rootdir="$(dirname "${root}/$1")" "${root}/$1" "${@:2}"
