"""What a process of learner code may use: one address-space limit, for the check workers and training runs."""

MEMORY_LIMIT = 1 << 30  # bytes of address space a sandbox process may add to what it uses after start-up


def limit_memory(extra: int) -> None:
    """At most `extra` bytes of address space beyond what this process uses now."""
    import resource

    with open("/proc/self/statm") as f:
        used = int(f.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (used + extra, used + extra))
