"""Throwaway PostgreSQL server fixtures (filled in by the state issue)."""
