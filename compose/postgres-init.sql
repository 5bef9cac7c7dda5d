-- Run once by the postgres image on an empty data directory
-- (/docker-entrypoint-initdb.d), in database POSTGRES_DB (galaxy).
-- rtmanager never creates its schema: the operator provisions it, as for the
-- Go service. start-job's migrations then create the tables inside it.
CREATE SCHEMA IF NOT EXISTS rtmanager;
