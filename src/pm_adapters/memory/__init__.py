"""In-memory adapters (tests, single-process use)."""

from pm_adapters.memory.uow import MemoryStore, MemoryUnitOfWork, MemoryUnitOfWorkFactory

__all__ = ["MemoryStore", "MemoryUnitOfWork", "MemoryUnitOfWorkFactory"]
