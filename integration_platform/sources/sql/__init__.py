"""Relational databases: SqlSource, its extractor, SqlDatabaseResource, the PostgreSQL Arrow path."""
