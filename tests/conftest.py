"""Fixtures shared by every test folder. Backends for the port contract suites are plugins in
`tests/fixtures/`: each contributes factories under a name the contract suites are parametrised by."""

pytest_plugins = ["tests.fixtures.backends", "tests.fixtures.azure", "tests.fixtures.aws"]
