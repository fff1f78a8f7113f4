"""LakeResource: the Dagster resource that opens the lake's store (a local folder or S3).

The stores themselves (two-phase writes, key confinement, staging clean-up) are
:mod:`integration_platform.core.lake`; this module only turns configuration into one.
"""

from pathlib import Path

import dagster as dg
from dagster_aws.s3 import S3Resource
from pydantic import Field

from integration_platform.core.lake import LakeStore, LocalLake, S3Lake


class LakeResource(dg.ConfigurableResource):
    """Where streams land: a local folder (default ``.data/lake``) or ``s3://bucket/prefix``.

    For S3 the boto3 client comes from the nested dagster-aws ``S3Resource`` (endpoint,
    region and credentials through its own fields, typically ``dg.EnvVar``). Raises
    ``ValueError`` for a URL scheme other than a path, ``file://`` or ``s3://``.
    """

    url: str = Field(default=".data/lake", description="Lake root: a folder path or s3://bucket/prefix.")
    s3: S3Resource = Field(default_factory=S3Resource, description="S3 client settings for s3:// lakes.")

    def store(self) -> LakeStore:
        """The object store behind :attr:`url`."""
        if self.url.startswith("s3://"):
            bucket, _, prefix = self.url[len("s3://") :].partition("/")
            if not bucket:
                raise ValueError(f"lake URL {self.url!r} names no bucket")
            return S3Lake(self.s3.get_client(), bucket, prefix)
        if "://" in self.url and not self.url.startswith("file://"):
            raise ValueError(f"lake URL {self.url!r}: use a folder path, file:// or s3://bucket/prefix")
        return LocalLake(Path(self.url.removeprefix("file://")))
