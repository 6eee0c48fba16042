#!/bin/sh
# One-shot (temporalio/admin-tools): create Temporal's databases on the PostgreSQL service and bring
# their schemas to the version the admin-tools image ships. Safe to run on every `docker compose up`:
# existing databases are kept and only missing schema versions are applied.
set -eu

: "${POSTGRES_SEEDS:=postgresql}"
: "${DB_PORT:=5432}"
: "${POSTGRES_USER:=temporal}"
: "${SQL_PASSWORD:?SQL_PASSWORD (the PostgreSQL password) must be set}"
: "${TEMPORAL_DB:=temporal}"
: "${TEMPORAL_VISIBILITY_DB:=temporal_visibility}"
SCHEMA_DIR=/etc/temporal/schema/postgresql/v12

sql_tool() {
    temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "$DB_PORT" -u "$POSTGRES_USER" "$@"
}

attempt=0
until nc -z "$POSTGRES_SEEDS" "$DB_PORT"; do
    attempt=$((attempt + 1))
    [ "$attempt" -lt 60 ] || { echo "PostgreSQL at $POSTGRES_SEEDS:$DB_PORT never answered" >&2; exit 1; }
    sleep 1
done

for pair in "$TEMPORAL_DB:temporal" "$TEMPORAL_VISIBILITY_DB:visibility"; do
    db=${pair%%:*}
    schema=${pair#*:}
    # `create` fails when the database exists (a restart); a real problem fails setup-schema next.
    sql_tool --db "$db" create || echo "database $db exists"
    sql_tool --db "$db" setup-schema -v 0.0
    sql_tool --db "$db" update-schema -d "$SCHEMA_DIR/$schema/versioned"
done
echo "Temporal schemas are up to date"
