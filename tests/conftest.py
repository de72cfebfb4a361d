"""Shared fixtures. Real servers live in tests/fixtures/ and are registered here."""

pytest_plugins = [
    "tests.fixtures.s3",
    "tests.fixtures.mariadb",
    "tests.fixtures.sshd",
    "tests.fixtures.dagster",
    "tests.fixtures.postgres",
    "tests.fixtures.docker",
]
