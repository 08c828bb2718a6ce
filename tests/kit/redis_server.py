"""Throwaway redis-server fixtures (filled in by the coordination issue)."""
