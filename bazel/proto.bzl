"""Generates C++ (messages, gRPC services, gMock mocks) for .proto files with the
system protoc and grpc_cpp_plugin.

    load("//bazel:proto.bzl", "cc_grpc_proto_library")
    cc_grpc_proto_library(
        name = "coordinator_cc_proto",
        srcs = ["gradnorm/v1/coordinator.proto"],
    )

Paths in srcs are relative to the package, which is the proto root: a file
`proto/gradnorm/v1/coordinator.proto` is included as
`#include "gradnorm/v1/coordinator.grpc.pb.h"`. Mocks are in
`gradnorm/v1/coordinator_mock.grpc.pb.h`, in the testonly target `<name>_mock`.
"""

def cc_grpc_proto_library(name, srcs, deps = [], grpc = True, **kwargs):
    outs = []
    for src in srcs:
        base = src[:-len(".proto")]
        outs += [base + ".pb.h", base + ".pb.cc"]
        if grpc:
            outs += [base + ".grpc.pb.h", base + ".grpc.pb.cc", base + "_mock.grpc.pb.h"]

    root = native.package_name() or "."
    out_root = "$(GENDIR)/" + native.package_name() if native.package_name() else "$(GENDIR)"
    grpc_flags = ""
    if grpc:
        grpc_flags = ("--plugin=protoc-gen-grpc=$$(command -v grpc_cpp_plugin) " +
                      "--grpc_out=generate_mock_code=true:%s " % out_root)
    native.genrule(
        name = name + "_codegen",
        srcs = srcs + [d + "_srcs" for d in deps],
        outs = outs,
        cmd = ("command -v protoc >/dev/null || { echo 'protoc not found: run ./scripts/setup' >&2; exit 1; }; " +
               "protoc -I%s --cpp_out=%s %s" % (root, out_root, grpc_flags) +
               " ".join(["%s/%s" % (root, s) for s in srcs])),
        message = "protoc %s" % " ".join(srcs),
    )
    native.filegroup(name = name + "_srcs", srcs = srcs)
    native.cc_library(
        name = name,
        srcs = [o for o in outs if o.endswith(".cc")],
        hdrs = [o for o in outs if o.endswith(".h") and not o.endswith("_mock.grpc.pb.h")],
        includes = ["."],
        deps = deps + ["@system//:protobuf"] + (["@system//:grpcpp"] if grpc else []),
        **kwargs
    )
    if grpc:
        # Mocks live apart so production targets never link gMock.
        native.cc_library(
            name = name + "_mock",
            hdrs = [o for o in outs if o.endswith("_mock.grpc.pb.h")],
            includes = ["."],
            deps = [":" + name, "@system//:gmock"],
            testonly = True,
            **kwargs
        )
