"""Tables of the model registry, in the metadata database (SQLite file or the PostgreSQL schema).

Their own ``MetaData`` (created by ``ModelStore.create_schema``, like the health pipeline's state), every
table prefixed ``models_``. Times are integers, nanoseconds since the Unix epoch (UTC), like the data.

* ``models_versions``: one row per model version: what it is for (``scope_kind`` machine_type | asset,
  ``scope``), its kind and artefact (JSON parameters or ONNX bytes, never a pickle), what it was trained on
  (mills, span, features), its held-out metrics and the comparison with the model it would replace, its
  parent (lineage) and its status (candidate -> canary -> active -> retired).
* ``models_transitions``: every status change of a version: from, to, who, when, why. Nothing is updated
  in place without a row here.
* ``models_desired``: which version the cloud wants run where: a selector (mill, machine type, edge or
  asset, always inside one mill) and a role (``active`` or ``canary``).
* ``models_reports``: what each edge last said it runs, what it refused and its per-version evidence.
* ``models_evidence``: per (mill, asset, version) counters the edges report: snapshots scored, alarms
  raised, scoring errors, inference time; the canary judge compares them.
* ``models_tuf_keys`` / ``models_tuf_metadata`` / ``models_tuf_targets``: The Update Framework repository
  (``tuf_repo``): online keys sealed under the server key, signed metadata per mill, target files.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

versions = Table(
    "models_versions", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    #: The model line this version belongs to, e.g. ``ring_frame/mahalanobis`` or ``mill-a/rf01/spindle``.
    Column("name", String(200), nullable=False),
    #: Increases by one per version of a name: the edge refuses a lower one it was not told to roll back to.
    Column("seq", Integer, nullable=False),
    Column("version", String(64), nullable=False),
    Column("scope_kind", String(16), nullable=False),
    Column("scope", String(200), nullable=False),
    #: Owning mill of a per-asset model; NULL for a fleet model of a machine type.
    Column("mill", String(64), nullable=True),
    Column("kind", String(64), nullable=False),
    Column("format", String(8), nullable=False),
    Column("artefact", LargeBinary, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size", Integer, nullable=False),
    Column("features", Text, nullable=False, default="[]"),
    Column("train_mills", Text, nullable=False, default="[]"),
    Column("train_start_ns", BigInteger, nullable=True),
    Column("train_end_ns", BigInteger, nullable=True),
    Column("metrics", Text, nullable=False, default="{}"),
    Column("comparison", Text, nullable=False, default="{}"),
    Column("parent", String(64), nullable=True),
    Column("status", String(16), nullable=False),
    Column("created_ns", BigInteger, nullable=False),
    Column("created_by", String(64), nullable=False),
    UniqueConstraint("name", "version", name="uq_models_versions_name_version"),
    UniqueConstraint("name", "seq", name="uq_models_versions_name_seq"),
)

transitions = Table(
    "models_transitions", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_id", Integer, ForeignKey("models_versions.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("from_status", String(16), nullable=True),
    Column("to_status", String(16), nullable=False),
    Column("actor", String(64), nullable=False),
    Column("reason", Text, nullable=False),
    Column("ts_ns", BigInteger, nullable=False),
)

desired = Table(
    "models_desired", metadata,
    Column("mill", String(64), primary_key=True),
    #: mill | machine_type | edge | asset (most specific wins: asset > edge > machine_type > mill).
    Column("selector_kind", String(16), primary_key=True),
    Column("selector", String(200), primary_key=True),
    Column("role", String(8), primary_key=True),
    Column("model_id", Integer, ForeignKey("models_versions.id", ondelete="CASCADE"), nullable=False),
    #: Share of the matching assets that run a canary (1.0 = all of them).
    Column("share", Float, nullable=False, default=1.0),
    Column("updated_ns", BigInteger, nullable=False),
    Column("updated_by", String(64), nullable=False),
)

reports = Table(
    "models_reports", metadata,
    Column("edge", String(64), primary_key=True),
    Column("mill", String(64), nullable=False, index=True),
    #: The edge's last update report (JSON): running versions per asset, previous versions, refusals.
    Column("report", Text, nullable=False),
    Column("received_ns", BigInteger, nullable=False),
)

evidence = Table(
    "models_evidence", metadata,
    Column("mill", String(64), primary_key=True),
    Column("asset", String(200), primary_key=True),
    Column("version", String(64), primary_key=True),
    Column("edge", String(64), nullable=False),
    Column("scored", BigInteger, nullable=False, default=0),
    Column("alarms", BigInteger, nullable=False, default=0),
    Column("errors", BigInteger, nullable=False, default=0),
    Column("latency_s_sum", Float, nullable=False, default=0.0),
    Column("latency_s_max", Float, nullable=False, default=0.0),
    Column("first_ns", BigInteger, nullable=False),
    Column("updated_ns", BigInteger, nullable=False),
)

tuf_keys = Table(
    "models_tuf_keys", metadata,
    Column("keyid", String(128), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("public", Text, nullable=False),
    #: PEM of the private key sealed with the server key (AES-256-GCM); NULL for the root key (offline).
    Column("private_sealed", Text, nullable=True),
    Column("created_ns", BigInteger, nullable=False),
    Column("revoked_ns", BigInteger, nullable=True),
)

tuf_metadata = Table(
    "models_tuf_metadata", metadata,
    #: '' for root (one root for every mill), else the mill whose targets/snapshot/timestamp these are.
    Column("scope", String(64), primary_key=True),
    Column("role", String(16), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("data", LargeBinary, nullable=False),
    Column("expires_ns", BigInteger, nullable=False),
    Column("created_ns", BigInteger, nullable=False),
    Index("ix_models_tuf_metadata_latest", "scope", "role", "version"),
)

tuf_targets = Table(
    "models_tuf_targets", metadata,
    Column("mill", String(64), primary_key=True),
    Column("path", String(300), primary_key=True),
    Column("data", LargeBinary, nullable=False),
    Column("current", Boolean, nullable=False, default=True),
)
