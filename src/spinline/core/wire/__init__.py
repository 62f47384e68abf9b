"""The edge <-> cloud wire contract, imported by both sides so they cannot drift apart.

Split by concern; every public name is re-exported here, so ``from spinline.core import wire`` and
``wire.encode(...)`` keep working:

- ``batches``: the binary, columnar, zlib-compressed and HMAC-signed batch payload (``encode`` /
  ``decode``, ``Envelope``, the refusal ``REASONS``);
- ``status``: edge status JSON and its HTTP signature (``sign_status``);
- ``events``: edge events (alarms, diagnoses, model changes) and their acks;
- ``acks``: how every ack the cloud sends is signed and checked (``sign_ack`` / ``verify_ack``);
- ``topics``: MQTT topics, HTTP paths, content types, and parsing a topic back (``parse_up_topic``).

What is signed: batches (32-byte HMAC-SHA256 trailer), events (hex HMAC trailer), status over HTTP
(``X-Spinline-Signature``; over MQTT it rides on the broker's auth), and every ack (``sig``).
"""

from .acks import (
    ACK_SIG_FIELD,
    MAX_RETRY_POINTS,
    ack_signing_bytes,
    retry_rows,
    sign_ack,
    signed_events_ack,
    verify_ack,
)
from .batches import (
    CLOUD_STATE_REASONS,
    FLAG_HAS_SEQ,
    FLAG_MAC,
    FLAG_ZLIB,
    INT64_MAX,
    INT64_MIN,
    MAC_SIZE,
    MAGIC,
    MAX_INCARNATION,
    MAX_PAYLOAD_BYTES,
    MAX_ROWS,
    META_REBUFFERS,
    REASONS,
    ROW_BYTES,
    VERSION,
    BatchKind,
    Envelope,
    KeyLookup,
    SignedPayloadError,
    UnverifiedPayload,
    decode,
    encode,
    max_batch_rows,
    peek_edge,
)
from .events import (
    EVENT_KINDS,
    EVENT_SEVERITIES,
    EVENTS_VERSION,
    MAX_ALARM_KEY,
    MAX_EVENT_TS_NS,
    MAX_EVENTS,
    MAX_EVENTS_BYTES,
    EdgeEvent,
    EventKind,
    EventsAck,
    EventSeverity,
    EventsPayload,
    decode_events,
    decode_events_ack,
    encode_events,
    encode_events_ack,
)
from .snapshots import (
    MAX_SNAPSHOT_BYTES,
    SNAPSHOT_REASONS,
    CloudAnswer,
    SnapshotUpload,
    decode_answers,
    decode_snapshot_samples,
    decode_snapshot_upload,
    encode_snapshot_upload,
)
from .status import (
    STATUS_SIGNATURE_HEADER,
    decode_status,
    encode_status,
    public_status,
    sign_status,
    verify_signed_status,
)
from .topics import (
    API_PREFIX,
    BATCH_CONTENT_TYPE,
    EVENTS_CONTENT_TYPE,
    EVENTS_PATH,
    INGEST_PATH,
    SNAPSHOT_CONTENT_TYPE,
    SNAPSHOTS_PATH,
    STATUS_PATH,
    TOPIC_ACK,
    TOPIC_BATCH,
    TOPIC_EVENTS,
    TOPIC_EVENTS_ACK,
    TOPIC_REQUESTS,
    TOPIC_SNAPSHOT,
    TOPIC_SNAPSHOT_ACK,
    TOPIC_STATUS,
    UP_KINDS,
    UpKind,
    UpTopic,
    parse_up_topic,
    up_filter,
)

__all__ = [
    "ACK_SIG_FIELD", "API_PREFIX", "CLOUD_STATE_REASONS", "META_REBUFFERS",
    "BATCH_CONTENT_TYPE", "EVENTS_CONTENT_TYPE", "EVENTS_PATH", "EVENTS_VERSION",
    "EVENT_KINDS", "EVENT_SEVERITIES", "FLAG_HAS_SEQ", "FLAG_MAC", "FLAG_ZLIB", "INGEST_PATH", "INT64_MAX",
    "INT64_MIN", "MAC_SIZE", "MAGIC", "MAX_ALARM_KEY", "MAX_EVENTS", "MAX_EVENTS_BYTES", "MAX_EVENT_TS_NS",
    "MAX_INCARNATION", "MAX_PAYLOAD_BYTES", "MAX_ROWS", "REASONS", "ROW_BYTES", "STATUS_PATH",
    "STATUS_SIGNATURE_HEADER", "TOPIC_ACK", "TOPIC_BATCH", "TOPIC_EVENTS", "TOPIC_EVENTS_ACK", "TOPIC_STATUS",
    "UP_KINDS", "VERSION",
    "BatchKind", "EdgeEvent", "Envelope", "EventKind", "EventSeverity", "EventsAck", "EventsPayload", "KeyLookup",
    "SignedPayloadError", "UnverifiedPayload", "UpKind", "UpTopic", "ack_signing_bytes", "decode",
    "decode_events", "decode_events_ack", "decode_status", "encode", "encode_events", "encode_events_ack",
    "encode_status", "parse_up_topic", "peek_edge", "sign_ack", "sign_status", "signed_events_ack", "up_filter",
    "verify_ack", "MAX_SNAPSHOT_BYTES", "SNAPSHOTS_PATH", "SNAPSHOT_CONTENT_TYPE", "SnapshotUpload",
    "TOPIC_REQUESTS", "TOPIC_SNAPSHOT", "TOPIC_SNAPSHOT_ACK", "decode_snapshot_samples", "decode_snapshot_upload",
    "encode_snapshot_upload", "CloudAnswer", "decode_answers", "SNAPSHOT_REASONS",
    "max_batch_rows", "public_status", "verify_signed_status", "MAX_RETRY_POINTS", "retry_rows",
]
