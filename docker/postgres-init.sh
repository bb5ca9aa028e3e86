#!/usr/bin/env bash
# One database per service, each owned by the service's own login role, which is no superuser,
# cannot create databases or roles, and cannot connect to the other service's database
# (CONNECT is revoked from PUBLIC). docker-compose.yml runs this once, on an empty cluster, from
# /docker-entrypoint-initdb.d (psql as the superuser); tests/tests/postgres_roles.rs runs it
# against the test server with names of its own. The services still call ensure_database at
# start: it finds the database here and creates nothing.
#
#   PRODUCTS_DB / PRODUCTS_DB_USER / PRODUCTS_DB_PASSWORD   products / product_service / product-service-dev
#   ORDERS_DB   / ORDERS_DB_USER   / ORDERS_DB_PASSWORD     orders   / order_service   / order-service-dev
# psql connects to ADMIN_DATABASE_URL (default: the database `postgres`, server and superuser
# from the usual PG* variables).
set -euo pipefail
psql -v ON_ERROR_STOP=1 -q -d "${ADMIN_DATABASE_URL:-postgres}" \
  -v products_db="${PRODUCTS_DB:-products}" \
  -v products_user="${PRODUCTS_DB_USER:-product_service}" \
  -v products_password="${PRODUCTS_DB_PASSWORD:-product-service-dev}" \
  -v orders_db="${ORDERS_DB:-orders}" \
  -v orders_user="${ORDERS_DB_USER:-order_service}" \
  -v orders_password="${ORDERS_DB_PASSWORD:-order-service-dev}" <<'SQL'
CREATE ROLE :"products_user" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'products_password';
CREATE DATABASE :"products_db" OWNER :"products_user";
REVOKE ALL ON DATABASE :"products_db" FROM PUBLIC;
CREATE ROLE :"orders_user" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'orders_password';
CREATE DATABASE :"orders_db" OWNER :"orders_user";
REVOKE ALL ON DATABASE :"orders_db" FROM PUBLIC;
SQL
