#!/usr/bin/env bash
# The coordinator's container image, built and started for real:
#   tests/deploy/image_test.sh BAZEL_BIN
# (./scripts/test runs it after `bazel build //...`, with that build's
# binaries). It builds the image with deploy/image/build, checks what it
# holds and its config, and starts it. No container engine runs containers on
# the test machine (podman's crun cannot set up its cgroups there), so the
# image's own root file system, unpacked by umoci, runs under unshare (mount
# and PID namespaces) and chroot, as its config says: its user (10001), its
# entrypoint and arguments. The root is mounted read-only with a writable
# data volume and /tmp, as the Kubernetes manifests mount it. Then health
# must answer SERVING, a report must round-trip, the database must belong to
# the image's user, and SIGTERM must end it cleanly.
# Prints "image: ok" or "image: FAILED: why"; needs root.
set -uo pipefail
cd "$(dirname "$0")/../.."
bin="${1:?usage: $0 BAZEL_BIN}"

fail() {
  echo "image: FAILED: $*"
  exit 1
}
[[ $(id -u) -eq 0 ]] || fail "needs root (mmdebstrap, umoci, unshare, chroot)"

work="$(mktemp -d)"
pid=""
cleanup() {
  [[ -n "$pid" ]] && kill -KILL "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

version="$(sed -n 's/^GRADNORM_VERSION = "\(.*\)"$/\1/p' version.bzl)"
deploy/image/build "$bin/server/coordinator" \
  "$bin/tools/gradnormctl/gradnormctl" "$version" "$work/out" \
  >"$work/build.log" 2>&1 || fail "deploy/image/build: $(tail -5 "$work/build.log")"

# The image, as an OCI runtime bundle: config.json and rootfs/.
umoci unpack --image "$work/out/oci:$version" "$work/bundle" >/dev/null ||
  fail "umoci unpack of tag $version"
root="$work/bundle/rootfs"
config="$work/bundle/config.json"

# What it holds: the two binaries and libraries; no shell, package manager,
# compiler or Python.
for absent in bin/sh usr/bin/sh usr/bin/bash usr/bin/apt-get usr/bin/dpkg \
  usr/bin/gcc usr/bin/cc usr/bin/g++ usr/bin/python3; do
  [[ -e "$root/$absent" ]] && fail "the image holds /$absent"
done
found="$(find "$root" -name 'torch*' -o -name 'libcuda*' -o -name 'libnccl*' | head -1)"
[[ -z "$found" ]] || fail "the image holds ${found#"$root"}"
for present in usr/local/bin/coordinator usr/local/bin/gradnormctl; do
  [[ -x "$root/$present" ]] || fail "the image lacks /$present"
done
size_mb=$(($(du -sm "$root" | cut -f1)))
[[ $size_mb -lt 150 ]] || fail "the root file system is ${size_mb} MB (expected < 150)"

# Its config: user, entrypoint and arguments.
read -r uid gid < <(/usr/bin/python3 -c '
import json, sys
p = json.load(open(sys.argv[1]))["process"]
print(p["user"]["uid"], p["user"]["gid"])' "$config")
[[ "$uid" == 10001 && "$gid" == 10001 ]] || fail "runs as $uid:$gid, expected 10001:10001"
mapfile -t args < <(/usr/bin/python3 -c '
import json, sys
for a in json.load(open(sys.argv[1]))["process"]["args"]: print(a)' "$config")
[[ "${args[0]}" == /usr/local/bin/coordinator ]] || fail "entrypoint ${args[0]}"

# Free loopback ports for the gRPC and HTTP listeners (the image's defaults,
# 50051 and 9464, may be taken on the host network this shares).
ports=($(/usr/bin/python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])'))
grpc_port=${ports[0]} http_port=${ports[1]}
mkdir -p "$work/data"
chown 10001:10001 "$work/data"

# The image's process, its arguments then the test's listeners (later flags
# win), in namespaces of its own, on a read-only root.
unshare --mount --pid --fork --propagation private /usr/bin/env \
  ROOT="$root" DATA="$work/data" UIDGID="$uid:$gid" bash -c '
    set -e
    mount --bind "$ROOT" "$ROOT"
    mount -o remount,bind,ro "$ROOT"
    mount --bind "$DATA" "$ROOT/var/lib/gradnorm"
    mount -t tmpfs -o mode=1777 tmpfs "$ROOT/tmp"
    mount -t proc proc "$ROOT/proc"
    exec chroot --userspec="$UIDGID" "$ROOT" "$@"' image "${args[@]}" \
  "--listen=127.0.0.1:$grpc_port" "--http_listen=127.0.0.1:$http_port" \
  >"$work/coordinator.log" 2>&1 &
pid=$!

ctl="$bin/tools/gradnormctl/gradnormctl"
health=""
for _ in $(seq 100); do
  health="$("$ctl" --target="127.0.0.1:$grpc_port" --timeout=1 health 2>&1)" && break
  kill -0 "$pid" 2>/dev/null || fail "the coordinator exited: $(tail -5 "$work/coordinator.log")"
  sleep 0.2
done
[[ "$health" == *SERVING* && "$health" != *NOT_SERVING* ]] ||
  fail "health: $health; log: $(tail -5 "$work/coordinator.log")"
"$bin/tests/deploy/report_round_trip" --target="127.0.0.1:$grpc_port" \
  >"$work/round.log" 2>&1 || fail "$(cat "$work/round.log")"
history="$("$ctl" --target="127.0.0.1:$grpc_port" history image-check 2>&1)" ||
  fail "gradnormctl history: $history"
[[ "$(stat -c %u "$work/data/gradnorm.db")" == 10001 ]] ||
  fail "the database belongs to uid $(stat -c %u "$work/data/gradnorm.db")"
curl -sf "http://127.0.0.1:$http_port/metrics" | grep -q '^gradnorm_rounds_total' ||
  fail "no gradnorm_rounds_total on /metrics"

# unshare ignores SIGTERM while it waits; the signal goes to the coordinator
# (PID 1 of its namespace, as in a pod), whose exit status unshare returns.
kill -TERM "$(pgrep -P "$pid")"
wait "$pid"
code=$?
pid=""
[[ $code -eq 0 ]] || fail "SIGTERM: exit code $code; log: $(tail -5 "$work/coordinator.log")"
grep -q "shut down cleanly" "$work/coordinator.log" || fail "no clean shutdown in the log"
echo "image: gradnorm-coordinator:$version, ${size_mb} MB, user $uid, root read-only: $(cat "$work/round.log")"
echo "image: ok"
