"""pytest fixtures shared by the gradnorm Python suites, which run against
the build tree (pytest_runner.sh) or an installed wheel (wheel_test.sh).

coordinator_binary: the coordinator executable, from $GRADNORM_COORDINATOR
(set by both runners) or a Bazel runfiles tree.
"""

import os

import pytest


@pytest.fixture(scope="session")
def coordinator_binary():
    path = os.environ.get("GRADNORM_COORDINATOR")
    if not path:
        root = os.path.join(os.environ.get("TEST_SRCDIR", ""),
                            os.environ.get("TEST_WORKSPACE", "gradnorm"))
        path = os.path.join(root, "server", "coordinator")
    if not os.access(path, os.X_OK):
        pytest.fail(f"no coordinator binary at {path}; set GRADNORM_COORDINATOR")
    return path
