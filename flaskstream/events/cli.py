"""``flask events ...``: publish from scripts and cron, apply retention by hand."""

from __future__ import annotations

import json

import click
from flask import current_app
from flask.cli import with_appcontext

from flaskstream import db
from flaskstream.events import store
from flaskstream.events.broker import get_broker, publish


def register(group: click.Group) -> None:
    group.add_command(publish_command)
    group.add_command(prune_command)


@click.command("publish")
@click.argument("channel")
@click.argument("data")
@click.option("--event", "event", default=None, help="SSE event name (default: message)")
@click.option("--json", "as_json", is_flag=True, help="parse DATA as JSON before sending")
@click.option("--key", default=None, help="idempotency key: a repeat returns the first id")
@with_appcontext
def publish_command(channel: str, data: str, event: str | None, as_json: bool,
                    key: str | None) -> None:
    """Publish DATA on CHANNEL to every subscriber on every worker; print its id."""
    value: object = data
    if as_json:
        try:
            value = json.loads(data)
        except RecursionError:
            raise click.BadParameter("nested too deeply", param_hint="DATA") from None
        except ValueError as exc:  # JSONDecodeError: its position is useful, its class is not
            where = f" (line {exc.lineno}, column {exc.colno})" \
                if isinstance(exc, json.JSONDecodeError) else ""
            raise click.BadParameter(f"not valid JSON{where}", param_hint="DATA") from None
    try:
        event_id = publish(channel, value, event, key=key, strict=True)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    click.echo(event_id)


@click.command("prune")
@with_appcontext
def prune_command() -> None:
    """Apply retention now (EVENTS_RETENTION_COUNT / EVENTS_RETENTION_SECONDS)."""
    broker = get_broker()
    with db.get_database(current_app).connection() as con:
        deleted = store.prune(con, broker.keep_count, broker.keep_seconds)
    click.echo(f"removed {deleted} events")
