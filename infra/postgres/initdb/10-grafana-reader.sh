#!/usr/bin/env bash
# Run by the postgres image's entrypoint once, on an empty data volume (it ignores the
# .psql file beside this script, which holds the SQL). Creates GRAFANA_DB_USER (default
# grafana_reader), a read-only login for Grafana, with password GRAFANA_DB_PASSWORD.
set -euo pipefail

: "${GRAFANA_DB_PASSWORD:?set GRAFANA_DB_PASSWORD, the read-only PostgreSQL password of Grafana}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

psql --no-psqlrc --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
  --set ON_ERROR_STOP=1 \
  --set reader_role="${GRAFANA_DB_USER:-grafana_reader}" \
  --set reader_password="${GRAFANA_DB_PASSWORD}" \
  --file "${here}/grafana-reader.psql"
