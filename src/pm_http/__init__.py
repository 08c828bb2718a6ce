"""pm_http: the Starlette host (/webhook, /health, /ready, /metrics, read-only views)."""
