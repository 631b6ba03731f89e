"""A libFuzzer target: built only with --config=fuzz (clang), never by //..."""

def gradnorm_fuzzer(name, deps):
    native.cc_binary(
        name = name,
        testonly = True,
        srcs = [name + ".cc"],
        deps = deps,
        tags = ["manual", "fuzzer"],
    )
