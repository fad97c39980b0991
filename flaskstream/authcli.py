"""``flask auth``: mint a token, sign a URL, revoke a token (for tests and small sites).

Sites with their own identity provider mint JWTs in their backend (README, "Access
control"); ``flask auth token`` is for the rest, and needs ``JWT_SECRET`` (a site that
configured only ``JWT_PUBLIC_KEY`` keeps its private key elsewhere, as it should).
"""

from __future__ import annotations

import time
import uuid

import click
from flask import current_app
from flask.cli import AppGroup

from flaskstream import auth, db
from flaskstream.access import jwts, signing

group = AppGroup("auth", help="Access tokens, signed URLs and revocation.")


@group.command("token")
@click.option("--sub", help="who the bearer is (owner of what they create)")
@click.option("--subscribe", multiple=True, help="channel selector: name, '*', 'prefix.*'")
@click.option("--publish", multiple=True, help="channel selector")
@click.option("--read", multiple=True, help="path selector: '/uploads/*', '/media/film.mp4'")
@click.option("--write", multiple=True, help="path selector")
@click.option("--ttl", type=click.IntRange(1), default=3600, show_default=True,
              help="seconds until exp")
@click.option("--jti", help="token id for `flask auth revoke` (default: a random one)")
def token_command(sub: str | None, subscribe: tuple[str, ...], publish: tuple[str, ...],
                  read: tuple[str, ...], write: tuple[str, ...], ttl: int,
                  jti: str | None) -> None:
    """Print an HS256 JWT signed with JWT_SECRET."""
    secret = current_app.config["JWT_SECRET"]
    if not secret:
        raise click.ClickException("FLASKSTREAM_JWT_SECRET is not set: cannot sign a token")
    now = int(time.time())
    claims: dict[str, object] = {"iat": now, "exp": now + ttl, "jti": jti or uuid.uuid4().hex}
    if current_app.config["JWT_AUDIENCE"]:
        claims["aud"] = current_app.config["JWT_AUDIENCE"]
    if sub:
        claims["sub"] = sub
    for name, value in (("subscribe", subscribe), ("publish", publish), ("read", read),
                        ("write", write)):
        if value:
            claims[name] = list(value)
    click.echo(jwts.mint(str(secret), claims))


@group.command("sign")
@click.argument("path")
@click.option("--ttl", type=click.IntRange(1), default=3600, show_default=True)
def sign_command(path: str, ttl: int) -> None:
    """Print PATH?expires=...&sig=... readable by anyone until it expires."""
    if not path.startswith("/"):
        raise click.ClickException("PATH is a URL path such as /media/film.mp4")
    key = auth.signing_key(current_app)
    if not key:
        raise click.ClickException("set FLASKSTREAM_URL_SIGNING_KEY (or JWT_SECRET) first")
    click.echo(signing.signed_url(key, path, int(time.time()) + ttl))


@group.command("revoke")
@click.argument("jti")
def revoke_command(jti: str) -> None:
    """Refuse the token with this jti from now on (every worker, every host)."""
    with db.connection() as con:
        con.run(f"INSERT INTO {db.qualified('auth_revoked')} (jti) VALUES (:jti) "
                "ON CONFLICT (jti) DO NOTHING", jti=jti)
    click.echo(f"revoked {jti}")
