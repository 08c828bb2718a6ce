"""Redis coordination adapters: signal locks, leader key, heartbeats, rate counters, breaker."""
