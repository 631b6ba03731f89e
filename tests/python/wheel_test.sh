#!/usr/bin/env bash
# The Python suite against the installed wheel, as a user installs it:
#   python3 -m venv --system-site-packages V && V/bin/pip install --no-index W
# then every test file, run from a folder outside the source tree, must
# import gradnorm from V; and ldd of every library in the wheel shows no
# libtorch, no libpython and nothing unresolved.
set -euo pipefail
root="${TEST_SRCDIR:?run me under bazel test}/${TEST_WORKSPACE:-gradnorm}"
tmp="${TEST_TMPDIR:-$(mktemp -d)}"
wheel="$(ls "${root}"/client/python/dist/gradnorm-*-py3-none-linux_x86_64.whl)"
unset PYTHONPATH GRADNORM_LIBRARY
export PYTHONDONTWRITEBYTECODE=1

# A sanitizer build's library needs its runtime preloaded into an
# uninstrumented interpreter, which no user's pip install does: the wheel
# is a release artifact, checked in normal builds.
if /usr/bin/python3 -c 'import re, sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
sys.exit(0 if any(re.match(r"gradnorm/lib/lib(a|t|ub)san", n) for n in names) else 1)' "${wheel}"; then
  echo "wheel_test: skipped in a sanitizer build (the wheel bundles its runtime)"
  exit 0
fi

/usr/bin/python3 -m venv --system-site-packages "${tmp}/venv"
"${tmp}/venv/bin/pip" install --quiet --no-index --no-deps "${wheel}"

installed="$("${tmp}/venv/bin/python" -c \
    'import gradnorm, os; print(os.path.dirname(gradnorm.__file__))')"
library="$("${tmp}/venv/bin/python" -c \
    'import gradnorm; print(gradnorm._lib.lib._name)')"
if [[ "${installed}" != "${tmp}/venv/"* || "${library}" != "${installed}/lib/libgradnorm.so" ]]; then
  echo "wheel_test: gradnorm imported from ${installed} with ${library}, not the venv's" >&2
  exit 1
fi
echo "gradnorm $("${tmp}/venv/bin/python" -c 'import gradnorm; print(gradnorm.__version__)') installed in ${installed}"

status=0
for lib in "${installed}"/lib/*.so*; do
  deps="$(ldd "${lib}")"
  if grep -qE 'not found|libtorch|libc10|libpython' <<<"${deps}"; then
    echo "wheel_test: $(basename "${lib}") needs:" >&2
    grep -E 'not found|libtorch|libc10|libpython' <<<"${deps}" >&2
    status=1
  fi
  # Bundled libraries must come from the wheel, not the system.
  if grep -E '=> /' <<<"${deps}" | grep -vE "=> ${installed}/lib/|/(libc|libm|libdl|libpthread|librt|libstdc\+\+|libgcc_s)\.so" \
      | grep -vE 'ld-linux' >&2; then
    echo "wheel_test: $(basename "${lib}") resolves the libraries above outside the wheel" >&2
    status=1
  fi
done
[[ ${status} -eq 0 ]] || exit 1
echo "ldd: every library in the wheel resolves inside it or to glibc/libstdc++"

run="${tmp}/run"
mkdir -p "${run}"
cp "${root}"/client/python/*_test.py "${root}"/client/python/dtensor_stand_in.py \
   "${root}"/tests/python/*_test.py "${root}"/tests/python/conftest.py "${run}/"
cd "${run}"
export GRADNORM_COORDINATOR="${root}/server/coordinator"
exec "${tmp}/venv/bin/python" -m pytest -q -p no:cacheprovider "${run}"
