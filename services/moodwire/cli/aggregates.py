"""CLI: `moodwire aggregates rebuild`: the Redis aggregates again, from the Postgres rollups."""

from __future__ import annotations

import typer

from moodwire.settings import MissingServerError, get_settings

group = typer.Typer(
    name="aggregates",
    help="The live aggregates: Postgres rollups (the truth) and their Redis copy.",
    no_args_is_help=True,
)


@group.command("rebuild")
def rebuild(
    model_version: str | None = typer.Option(
        None,
        "--model-version",
        help="Rebuild only this model version's aggregates (default: every version, and "
        "mark the copy whole for the running Redis).",
    ),
) -> None:
    """Replace the Redis aggregates with the Postgres rollups. Safe while workers run:
    their writes wait for the rebuild and then apply on top of it."""
    import psycopg2
    import redis
    from sqlalchemy.exc import SQLAlchemyError

    from moodwire.aggregates.rebuild import RebuildBusy
    from moodwire.aggregates.rebuild import rebuild as run_rebuild
    from moodwire.db.engine import make_engine
    from moodwire.redis_client import connect

    settings = get_settings()
    try:
        engine = make_engine(settings, pool_size=1, max_overflow=0)
        client = connect(settings)
    except MissingServerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        report = run_rebuild(engine, client, model_version)
    except RebuildBusy as exc:
        typer.echo(f"error: {exc}; wait for it to finish", err=True)
        raise typer.Exit(1) from None
    except (SQLAlchemyError, psycopg2.Error, redis.RedisError) as exc:
        first_line = (str(exc).strip().splitlines() or [""])[0][:300]
        typer.echo(f"error: {type(exc).__name__}: {first_line}", err=True)
        raise typer.Exit(1) from None
    finally:
        client.close()
        engine.dispose()
    for version, buckets in sorted(report.versions.items()):
        typer.echo(f"{version}: {buckets:,} buckets")
    typer.echo(
        f"rebuilt {len(report.versions)} version(s) in {report.seconds:.1f} s"
        + ("; the copy is whole" if report.marked_whole else "")
    )


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.add_typer(group)
