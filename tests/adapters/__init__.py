"""Contract tests: every assumption the adapters make about a dependency's internals, pinned by name."""
