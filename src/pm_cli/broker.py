"""pm commands: broker (the OpenAlgo simulator for demos, tests and benchmarks)."""

from __future__ import annotations

import click


@click.command("simulate-broker")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=5099, show_default=True, type=click.IntRange(0, 65535))
@click.option("--seed", default=42, show_default=True, help="Seed of every random choice.")
@click.option(
    "--api-key",
    "api_keys",
    multiple=True,
    help="Accepted OpenAlgo API key (repeatable; default: test-key).",
)
@click.option(
    "--rate-limit/--no-rate-limit",
    default=False,
    show_default=True,
    help="Emulate OpenAlgo's 10/s order and 50/s read limits (429s).",
)
@click.option("--access-log/--no-access-log", default=False, show_default=True)
def simulate_broker(
    host: str,
    port: int,
    seed: int,
    api_keys: tuple[str, ...],
    rate_limit: bool,
    access_log: bool,
) -> None:
    """Serve a fake OpenAlgo (REST v1 plus /_simulator/ controls) until interrupted."""
    # Imported here: production commands never load the simulator.
    from pm_adapters.openalgo.simulator import run_simulator

    keys = api_keys or ("test-key",)
    click.echo(
        f"OpenAlgo simulator on http://{host}:{port} (seed {seed}, {len(keys)} API key(s))",
        err=True,
    )
    run_simulator(
        host=host,
        port=port,
        seed=seed,
        api_keys=keys,
        rate_limit=rate_limit,
        access_log=access_log,
    )


COMMANDS: list[click.Command] = [simulate_broker]
