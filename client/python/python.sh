#!/usr/bin/env bash
# Runs Debian's /usr/bin/python3 (the one with python3-torch) with the gradnorm
# package of this runfiles tree importable. Arguments go to python3.
set -euo pipefail
self="$(readlink -f "$0")"
runfiles="${RUNFILES_DIR:-${0}.runfiles}"
[[ -d "$runfiles" ]] || runfiles="${self}.runfiles"
export PYTHONPATH="${runfiles}/gradnorm/client/python${PYTHONPATH:+:${PYTHONPATH}}"
exec /usr/bin/python3 "$@"
