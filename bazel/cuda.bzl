"""Macros for CUDA code: nvcc objects in a normal cc_library, and GPU tests.

    load("//bazel:cuda.bzl", "cuda_library")
    cuda_library(
        name = "partial_norm_cuda",
        srcs = ["partial_norm_cuda.cu"],
        hdrs = ["partial_norm_cuda.h"],
        cu_hdrs = ["internal/cuda_reduce.cuh"],
    )

Each .cu is compiled by nvcc for sm_80 and sm_90 plus compute_90 PTX (so newer
GPUs JIT it) into a position-independent object that a cc_library links. Without a
CUDA toolkit (see cuda_configure.bzl) the macros declare nothing: dependants must
themselves be declared under `if CUDA_AVAILABLE:`.
"""

load("@local_cuda//:defs.bzl", "CUDA_AVAILABLE", "NVCC")

CUDA_GENCODE = [
    "-gencode=arch=compute_80,code=sm_80",
    "-gencode=arch=compute_90,code=sm_90",
    "-gencode=arch=compute_90,code=compute_90",
]

def cuda_library(name, srcs, hdrs = [], cu_hdrs = [], deps = [], nvcc_flags = [], **kwargs):
    """A cc_library whose .cu srcs are compiled by nvcc; no-op without CUDA."""
    if not CUDA_AVAILABLE:
        return
    objects = []
    for src in srcs:
        obj = "_%s_objs/%s.pic.o" % (name, src.replace(".cu", ""))
        native.genrule(
            name = "%s_%s_nvcc" % (name, src.replace("/", "_").replace(".", "_")),
            srcs = [src] + hdrs + cu_hdrs,
            outs = [obj],
            cmd = " ".join([
                NVCC,
                "-c",
                "-O3",
                "-std=c++17",
                "--expt-relaxed-constexpr",
                "-Xcompiler=-fPIC",
                "-I.",
                "-I$(GENDIR)",
            ] + CUDA_GENCODE + nvcc_flags + [
                "-o $@",
                "$(location %s)" % src,
            ]),
            message = "nvcc %s" % src,
        )
        objects.append(obj)
    native.cc_library(
        name = name,
        srcs = objects,
        hdrs = hdrs,
        deps = deps + ["@local_cuda//:cudart"],
        # The static CUDA runtime's symbols are local to each link: code that
        # calls it must be linked into the executable (or libgradnorm.so)
        # itself, never into a per-library shared object of a test.
        linkstatic = True,
        alwayslink = True,
        **kwargs
    )

def cuda_test(name, tags = [], **kwargs):
    """A cc_test that needs a GPU: tagged requires-gpu; no-op without CUDA."""
    if not CUDA_AVAILABLE:
        return
    native.cc_test(
        name = name,
        tags = tags + ["requires-gpu"],
        **kwargs
    )
