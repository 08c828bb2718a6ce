"""pm_adapters: the port implementations (memory, paper, sql, redis, openalgo) and bootstrap."""
