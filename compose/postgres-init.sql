-- rtmanager's PostgreSQL roles and schema: run once per database, as a
-- superuser (or a role with CREATEROLE that may create schemas).
--
--   * rtmanager_owner  owns schema rtmanager and everything in it; it runs
--                      the migrations (`rest-gateway migrate`, or the jobs
--                      themselves with RTMANAGER_POSTGRES_MIGRATIONS=auto).
--   * rtmanagerservice the jobs' role (the Go service's name): it may read and
--                      write the rows of the owner's tables, nothing else;
--                      the jobs run with RTMANAGER_POSTGRES_MIGRATIONS=off.
--
-- The postgres image runs this file from /docker-entrypoint-initdb.d on its
-- first start; elsewhere (Kubernetes, a managed server):
--
--   psql "$ADMIN_DSN" -v ON_ERROR_STOP=1 \
--        -v owner_password="$OWNER_PASSWORD" -v service_password="$SERVICE_PASSWORD" \
--        -f compose/postgres-init.sql
--
-- Passwords: the psql variables owner_password and service_password, else
-- the environment variables POSTGRES_OWNER_PASSWORD and
-- POSTGRES_SERVICE_PASSWORD of the psql process (the postgres image's
-- container environment; psql 15 or newer reads them). Without either the
-- roles are created without a password (trust or certificate auth only),
-- and the operator sets one later:
--   ALTER ROLE rtmanagerservice PASSWORD '...';
-- No secret is kept in this file. Running it again changes nothing but the
-- passwords given.

\set ON_ERROR_STOP on

\if :{?owner_password}
\else
  \getenv owner_password POSTGRES_OWNER_PASSWORD
\endif
\if :{?service_password}
\else
  \getenv service_password POSTGRES_SERVICE_PASSWORD
\endif

SELECT 'CREATE ROLE rtmanager_owner LOGIN'
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rtmanager_owner') \gexec
SELECT 'CREATE ROLE rtmanagerservice LOGIN'
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rtmanagerservice') \gexec

\if :{?owner_password}
  ALTER ROLE rtmanager_owner PASSWORD :'owner_password';
\endif
\if :{?service_password}
  ALTER ROLE rtmanagerservice PASSWORD :'service_password';
\endif

-- Both find the tables without a search_path in their DSN.
ALTER ROLE rtmanager_owner SET search_path = rtmanager;
ALTER ROLE rtmanagerservice SET search_path = rtmanager;

-- The owner may create the schema's objects; nobody else may create
-- anything in the public schema (PostgreSQL 15's default, stated for older
-- servers).
CREATE SCHEMA IF NOT EXISTS rtmanager AUTHORIZATION rtmanager_owner;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
REVOKE ALL ON SCHEMA rtmanager FROM PUBLIC;
GRANT USAGE ON SCHEMA rtmanager TO rtmanagerservice;

-- DML on every table and sequence the owner's migrations create (the
-- migrations' bookkeeping table `_sqlx_migrations` included, which the jobs
-- read to check the schema is current), and on any already there.
ALTER DEFAULT PRIVILEGES FOR ROLE rtmanager_owner IN SCHEMA rtmanager
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO rtmanagerservice;
ALTER DEFAULT PRIVILEGES FOR ROLE rtmanager_owner IN SCHEMA rtmanager
    GRANT USAGE, SELECT ON SEQUENCES TO rtmanagerservice;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA rtmanager TO rtmanagerservice;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA rtmanager TO rtmanagerservice;
