"""Pushing rows out: broker publishing and HTTP sync (reverse ETL), both on the outbound core
(:mod:`integration_platform.core.outbound`: rows since the mark, ids, acknowledged-only marks)."""
