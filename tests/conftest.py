"""Fixtures shared by every test folder. Backends for the port contract suites are plugins in
`tests/fixtures/`: each contributes factories under a name the contract suites are parametrised by."""

pytest_plugins = [
    "tests.fixtures.backends",
    "tests.fixtures.azure",
    "tests.fixtures.aws",
    "tests.fixtures.fault_schedule",
]


def pytest_report_header() -> str:
    """The memory the run starts with: a machine whose RAM or /dev/shm is already taken gets
    workers OOM-killed midway, and this line is what tells that apart from a bug."""
    fields: dict[str, int] = {}
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                name, _, rest = line.partition(":")
                fields[name] = int(rest.split()[0]) >> 10
    except OSError:
        return "memory: unknown"
    return f"memory: {fields.get('MemAvailable', 0):,} MiB available, {fields.get('Shmem', 0):,} MiB in tmpfs/shm"
