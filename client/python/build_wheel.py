"""Builds gradnorm's wheel: the Python package, libgradnorm.so and every
shared library it needs that a plain Debian or Ubuntu system with Python
lacks, laid out as ``auditwheel repair`` does: the libraries beside
libgradnorm.so in gradnorm/lib/, each renamed with a hash of its contents
(libssl.so.3 -> libssl-1a2b3c4d.so.3, SONAME and every reference to it
rewritten) and with an RPATH of $ORIGIN, so they are found there and never
confused with a copy of the same name the process has loaded from the
system (Python's own _ssl, say). glibc, libstdc++ and libgcc_s stay outside,
as do the CUDA driver, runtime and NCCL of the user's CUDA stack.

    python3 build_wheel.py --library libgradnorm.so --version 0.4.0 \
        --readme README.wheel.md --source gradnorm/__init__.py ... --out X.whl

Needs ldd and patchelf. Deterministic: fixed timestamps and order.
"""

import argparse
import base64
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile

# Libraries every Linux system with Python has (glibc, the C++ runtime), and
# those of the user's CUDA stack: never bundled.
_SYSTEM = re.compile(
    r"^(linux-vdso|ld-linux|libc|libm|libdl|libpthread|librt|libutil|"
    r"libstdc\+\+|libgcc_s|libcuda|libcudart|libnccl)\.so")
_TAG = "py3-none-linux_x86_64"
_EPOCH = (2026, 1, 1, 0, 0, 0)


def _needed(library):
    """(name, path) of every library ldd resolves for `library`; fails on
    any it cannot resolve."""
    out = subprocess.run(["ldd", library], check=True, capture_output=True,
                         text=True).stdout
    libs = []
    for line in out.splitlines():
        line = line.strip()
        if "=> not found" in line:
            sys.exit(f"build_wheel: {library} needs {line.split()[0]}, which "
                     "ldd cannot find")
        m = re.match(r"(\S+) => (\S+) \(", line)
        if m:
            libs.append((m.group(1), m.group(2)))
    return libs


def _hashed_name(name, path):
    """libfoo.so.3 -> libfoo-<8 hex digits of its sha256>.so.3"""
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:8]
    base, _, version = name.partition(".so")
    return f"{base}-{digest}.so{version}"


def _patchelf(*args):
    subprocess.run(["patchelf", *args], check=True)


def _patch(path, renames, soname=None, force_rpath=False):
    """One patchelf call per change: combined, patchelf 0.14 garbles them."""
    needed = subprocess.run(["patchelf", "--print-needed", path], check=True,
                            capture_output=True, text=True).stdout.split()
    for old in needed:
        if old in renames:
            _patchelf("--replace-needed", old, renames[old], path)
    if soname is not None:
        _patchelf("--set-soname", soname, path)
    # DT_RPATH on libgradnorm.so (--force-rpath): also searched for the
    # libraries of the libraries it loads, before LD_LIBRARY_PATH.
    _patchelf(*(["--force-rpath"] if force_rpath else []), "--set-rpath",
              "$ORIGIN", path)


def _record_line(root, rel):
    with open(os.path.join(root, rel), "rb") as f:
        data = f.read()
    digest = base64.urlsafe_b64encode(
        hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{rel},sha256={digest},{len(data)}"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--library", required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--readme", required=True)
    parser.add_argument("--source", action="append", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if shutil.which("patchelf") is None:
        sys.exit("build_wheel: patchelf is missing (Debian package patchelf; "
                 "./scripts/setup installs it)")

    root = tempfile.mkdtemp(prefix="gradnorm-wheel-")
    try:
        package = os.path.join(root, "gradnorm")
        lib_dir = os.path.join(package, "lib")
        os.makedirs(lib_dir)
        for source in args.source:
            shutil.copy(source, os.path.join(package, os.path.basename(source)))
        shutil.copy(args.library, os.path.join(lib_dir, "libgradnorm.so"))
        renames = {}
        for name, path in _needed(args.library):
            if _SYSTEM.match(name):
                continue
            if re.match(r"^lib(torch|c10|python)", name):
                sys.exit(f"build_wheel: libgradnorm.so must not need {name}")
            renames[name] = _hashed_name(name, path)
            shutil.copy(path, os.path.join(lib_dir, renames[name]))
        soname_of = {new: new for new in renames.values()}
        for name in sorted(os.listdir(lib_dir)):
            path = os.path.join(lib_dir, name)
            os.chmod(path, 0o755)
            _patch(path, renames, soname=soname_of.get(name),
                   force_rpath=name == "libgradnorm.so")

        dist_info = f"gradnorm-{args.version}.dist-info"
        os.makedirs(os.path.join(root, dist_info))
        with open(args.readme) as f:
            readme = f.read()
        files = {
            "METADATA": (
                "Metadata-Version: 2.1\n"
                "Name: gradnorm\n"
                f"Version: {args.version}\n"
                "Summary: The true global gradient norm of distributed "
                "training, and clipping by it\n"
                "Requires-Python: >=3.9\n"
                "Description-Content-Type: text/markdown\n\n" + readme),
            "WHEEL": (
                "Wheel-Version: 1.0\n"
                "Generator: gradnorm build_wheel.py\n"
                "Root-Is-Purelib: false\n"
                f"Tag: {_TAG}\n"),
            "top_level.txt": "gradnorm\n",
        }
        for name, text in files.items():
            with open(os.path.join(root, dist_info, name), "w") as f:
                f.write(text)

        entries = []
        for dirpath, _, names in os.walk(root):
            for name in names:
                entries.append(os.path.relpath(os.path.join(dirpath, name), root))
        entries.sort()
        record = f"{dist_info}/RECORD"
        lines = [_record_line(root, rel) for rel in entries] + [f"{record},,"]
        with open(os.path.join(root, record), "w") as f:
            f.write("\n".join(lines) + "\n")
        entries.append(record)

        with zipfile.ZipFile(args.out, "w", zipfile.ZIP_DEFLATED) as whl:
            for rel in entries:
                info = zipfile.ZipInfo(rel, date_time=_EPOCH)
                mode = os.stat(os.path.join(root, rel)).st_mode & 0o777
                info.external_attr = (0o100000 | mode) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                with open(os.path.join(root, rel), "rb") as f:
                    whl.writestr(info, f.read())
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
