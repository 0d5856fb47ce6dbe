"""Dagster resources: the warehouse, the landing folder, the run clock, link signing and SendGrid.

Secrets are read from the environment at run time only (never at import, never from files in the repo,
never echoed): the resources hold the *name* of the variable, so the key never enters run config, the
Dagster UI or the event log.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb

from nachfass.core import engine, paths
from nachfass.core.engine import current_engine
from nachfass.core.links import LinkSigner, signer_from_env
from nachfass.core.pgconn import PgConnection
from nachfass.core.shop import ShopSettings, load_shop_settings


class WarehouseResource(dg.ConfigurableResource):
    """The warehouse the engine setting names (nachfass/core/engine.py): the DuckDB file ($NACHFASS_WAREHOUSE,
    the same variable dbt's profiles.yml reads) or the PostgreSQL database of the libpq variables."""

    path: str | None = None

    def engine(self) -> str:
        return current_engine()

    def describe(self) -> str:
        return engine.describe() if self.engine() == "postgres" else f"DuckDB file {self.resolved_path()}"

    def resolved_path(self) -> Path:
        return Path(self.path).resolve() if self.path else paths.warehouse_path()

    def staging_path(self) -> Path:
        """On PostgreSQL: the local DuckDB file the exports are parsed in (``paths.staging_path``)."""
        return paths.staging_path()

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection | PgConnection]:
        # DuckDB allows one writing process: every writer opens, works and closes within its step, and the
        # job runs its steps one after another (in-process executor), so dbt's own connection never collides.
        # PostgreSQL takes several writers: transactions keep them apart, the ledger's unique key keeps every
        # send at most once, and decision_lock.py keeps overlapping runs' decisions apart.
        with engine.connect(read_only, duckdb_path=self.resolved_path()) as conn:
            yield conn


class LandingResource(dg.ConfigurableResource):
    """The landing folder the shop drops exports into (one sub-folder per table)."""

    path: str | None = None

    def resolved_path(self) -> Path:
        return Path(self.path).resolve() if self.path else paths.landing_dir()


class RunClockResource(dg.ConfigurableResource):
    """The run's logical time. Set ``as_of`` (ISO 8601) to replay any moment; default: when the run was
    created, so every step of one run agrees on "now"."""

    as_of: str | None = None

    def resolve(
        self,
        context: dg.AssetExecutionContext | dg.OpExecutionContext | dg.AssetCheckExecutionContext,
    ) -> datetime:
        if self.as_of:
            return parse_as_of(self.as_of)
        record = context.instance.get_run_record_by_id(context.run.run_id)
        created = record.create_timestamp if record else datetime.now(UTC)
        return created.astimezone(UTC)


def parse_as_of(value: str) -> datetime:
    """ISO 8601 → aware UTC datetime; a value without offset is taken as UTC."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


class ShopResource(dg.ConfigurableResource):
    """Shop settings (sender, Impressum, base URLs) from config/shop.yaml or $NACHFASS_SHOP_CONFIG, and
    the mail templates (mail_templates/ or $NACHFASS_TEMPLATES, e.g. a shop's own branded copy)."""

    config_path: str | None = None
    templates_dir: str | None = None

    def settings(self) -> ShopSettings:
        return load_shop_settings(Path(self.config_path) if self.config_path else None)

    def resolved_templates_dir(self) -> Path:
        return Path(self.templates_dir) if self.templates_dir else paths.templates_dir()


class LinkSignerResource(dg.ConfigurableResource):
    """HMAC key for signed links, from the environment variable named here."""

    key_env: str = "NACHFASS_LINK_SIGNING_KEY"

    def is_configured(self) -> bool:
        return bool(os.environ.get(self.key_env))

    def signer(self) -> LinkSigner:
        return signer_from_env(self.key_env)


class SendGridResource(dg.ConfigurableResource):
    """SendGrid settings. The API key comes only from the environment variable named by ``api_key_env``;
    without it the send step writes to the outbox folder instead and says so."""

    api_key_env: str = "SENDGRID_API_KEY"
    # Default SendGrid's global host; "eu" data residency uses https://api.eu.sendgrid.com. Tests and the
    # demo point this at the local SendGrid-compatible server.
    api_host: str | None = None
    data_residency: str | None = None  # None (global) or "eu"
    sandbox_mode: bool = False
    rate_limit_per_s: float | None = 600.0
    # Concurrent requests (one keep-alive connection each): throughput <= concurrency / API latency, so
    # 32 capped a run at 640 mails/s at 50 ms and ~160 at 200 ms, below the rate limit above; 128 leaves the
    # rate limit as the bound (bench/bench_send.py: ~1,900 mails/s at 50 ms without a rate limit).
    concurrency: int = 128
    chunk_size: int = 500
    timeout_s: float = 15.0
    outbox_dir: str | None = None

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) or None

    def resolved_host(self) -> str:
        host = self.api_host or os.environ.get("SENDGRID_API_HOST")
        if host:
            return host.rstrip("/")
        residency = self.data_residency or os.environ.get("SENDGRID_DATA_RESIDENCY")
        return "https://api.eu.sendgrid.com" if residency == "eu" else "https://api.sendgrid.com"

    def resolved_outbox(self) -> Path:
        return Path(self.outbox_dir).resolve() if self.outbox_dir else paths.outbox_dir()
