#!/bin/sh
# Runs once, when the PostgreSQL volume is empty (docker-entrypoint-initdb.d): creates the
# stageflow control DB and its owner beside Temporal's databases (which auto-setup creates).
# The password comes from CONTROL_DB_PASSWORD (deploy/.env); to rotate it later, see
# docs/operations.md ("Tokens and passwords").
set -eu
: "${CONTROL_DB_PASSWORD:?set CONTROL_DB_PASSWORD in deploy/.env}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v control_password="$CONTROL_DB_PASSWORD" <<'SQL'
CREATE ROLE stageflow LOGIN PASSWORD :'control_password';
CREATE DATABASE stageflow OWNER stageflow;
SQL
