"""Tables for DSGVO erasure: the salted hashes of erased addresses and the salt itself."""

from __future__ import annotations

import secrets

import duckdb


def ensure_erasure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute("create schema if not exists mail")
    conn.execute(
        """
        create table if not exists mail.erasures (
            email_hash varchar primary key,   -- sha256(salt || lower(email)); the address itself is gone
            erased_at timestamp not null,
            sendgrid_erasure_requested boolean not null default false
        )
        """
    )
    conn.execute("create table if not exists mail.erasure_salt (salt varchar not null)")
    if not conn.execute("select count(*) from mail.erasure_salt").fetchone()[0]:
        # Random per warehouse: the hashes cannot be matched against a precomputed table of addresses.
        conn.execute("insert into mail.erasure_salt values (?)", [secrets.token_hex(16)])
