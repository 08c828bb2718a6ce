"""Database messages per signal: the round trips the service spends on PostgreSQL.

Unlike the timed benchmarks this figure does not move with the machine's pace, so it shows
what a change to the SQL path saves even when wall-clock runs are too noisy to tell.

It starts a throwaway PostgreSQL 15 (``tests/kit/postgres.py``), runs ``pm migrate`` and
``pm init``, builds one service (``pm_adapters.bootstrap.build``) on it with the paper broker
and every background job slowed to hours, turns on the server's statement log, and sends the
two trades of ``tests/kit/serve.py`` (Gold Mini: base, pyramid, partial exit, exit all; Bank
Nifty: the same with two legs per position) straight to ``SignalService.handle``. Each log
entry is one message from the client: a simple query (which may hold several statements) or
one extended-protocol execution. One instance: with two, most snapshots also fetch the
positions the other instance moved (one more message in most T1 and T2).

Usage: python benchmarks/db_round_trips.py
The last line printed is one JSON object.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

import psycopg  # noqa: E402
from tests.kit.postgres import running_server  # noqa: E402
from tests.kit.serve import bn_trade, gold_trade  # noqa: E402

from pm_adapters.bootstrap import build, load_settings  # noqa: E402
from pm_adapters.paper import PaperBroker  # noqa: E402
from pm_core.model import ReceivedSignal, Signal  # noqa: E402
from pm_core.signal import fingerprint, validate  # noqa: E402

_ENTRY = re.compile(r"LOG:  (?:statement|execute [^:]*): (.*)")
# Background jobs and heartbeats once an hour at most: only the signals' own messages count.
QUIET = {
    "PM_FILL_POLL_MS": "1,5",
    "PM_SWEEP_INTERVAL_S": "3600",
    "PM_LOCK_CLEANUP_S": "3600",
    "PM_STATS_EXPORT_S": "3600",
    "PM_STATS_FLUSH_S": "3600",
    "PM_HEARTBEAT_MS": "3600000",
    "PM_DB_HEARTBEAT_S": "3600",
    "PM_LEADER_LEASE_MS": "3600000",
    "PM_LEADER_RENEW_MS": "1200000",
    "PM_ELECTION_TICK_MS": "600000",
}


def main() -> None:
    with running_server() as server:
        url = server.create_database("trips")
        env = {"PM_DATABASE_URL": url, **QUIET}
        for command in ("migrate", "init"):
            subprocess.run(
                ["pm", command], env={**os.environ, **env}, check=True, capture_output=True
            )
        app = build(load_settings(env), broker=PaperBroker())
        app.start()
        try:
            dsn = url.replace("postgresql+psycopg://", "postgresql://")
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("ALTER SYSTEM SET log_statement = 'all'")
                conn.execute("SELECT pg_reload_conf()")
            time.sleep(0.5)  # the reload reaches every backend
            start = server.log.stat().st_size
            signals = 0
            for payload, _ in [*gold_trade(), *bn_trade()]:
                checked = validate(dict(payload), app.config)
                assert isinstance(checked, Signal), checked
                received = ReceivedSignal(checked, fingerprint(checked), dt.datetime.now(dt.UTC))
                result = app.service.handle(received, f"trips-{signals}")
                assert result.body.get("status") == "executed", result.body
                signals += 1
            time.sleep(0.3)  # the last entries reach the log
            text = server.log.read_bytes()[start:].decode(errors="replace")
        finally:
            app.close()
    messages = [m.group(1) for m in map(_ENTRY.search, text.splitlines()) if m]
    kinds: collections.Counter[str] = collections.Counter(m[:60] for m in messages)
    print(f"{signals} signals (both trades), {len(messages)} database messages")
    for kind, count in kinds.most_common(12):
        print(f"  {count:4d}  {kind}")
    figures: dict[str, Any] = {
        "signals": signals,
        "db_messages": len(messages),
        "db_messages_per_signal": round(len(messages) / signals, 2),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
