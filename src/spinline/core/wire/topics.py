"""Where the wire's messages go: MQTT topics and HTTP paths, and their parsing, for both sides.

The edge formats its topics and posts to these paths; the cloud subscribes to the same topics with
wildcards (``up_filter``), mounts its routes at the same paths and reads (mill, edge, kind) back
out of a topic with ``parse_up_topic``. A change of layout is one edit here.

MQTT (``{mill}`` and ``{edge}`` are ids; the cloud subscribes to ``$share/<group>/spinline/up/+/+/batch``
so several ingest workers split the load)::

    spinline/up/{mill}/{edge}/batch | status | events | snapshot       edge -> cloud
    spinline/down/{mill}/{edge}/ack | events-ack | snapshot-ack | requests   cloud -> edge

HTTP: ``POST /api/v1/ingest`` (a batch; the answer is its ack), ``/api/v1/edge-status``,
``/api/v1/edge-events`` (events; the answer is the events ack), ``/api/v1/edge-snapshots`` (one raw
evidence snapshot; the answer is its ack, plus any snapshot requests for this edge).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TOPIC_BATCH = "spinline/up/{mill}/{edge}/batch"
TOPIC_STATUS = "spinline/up/{mill}/{edge}/status"
TOPIC_EVENTS = "spinline/up/{mill}/{edge}/events"
TOPIC_ACK = "spinline/down/{mill}/{edge}/ack"
TOPIC_EVENTS_ACK = "spinline/down/{mill}/{edge}/events-ack"
TOPIC_SNAPSHOT = "spinline/up/{mill}/{edge}/snapshot"
TOPIC_SNAPSHOT_ACK = "spinline/down/{mill}/{edge}/snapshot-ack"
TOPIC_REQUESTS = "spinline/down/{mill}/{edge}/requests"

#: The API's prefix; the cloud's routers are mounted under it, so a route is ``PATH.removeprefix(API_PREFIX)``.
API_PREFIX = "/api/v1"
INGEST_PATH = "/api/v1/ingest"
STATUS_PATH = "/api/v1/edge-status"
EVENTS_PATH = "/api/v1/edge-events"
BATCH_CONTENT_TYPE = "application/x-spinline-batch"
EVENTS_CONTENT_TYPE = "application/x-spinline-events"
SNAPSHOTS_PATH = "/api/v1/edge-snapshots"
SNAPSHOT_CONTENT_TYPE = "application/x-spinline-snapshot"

UpKind = Literal["batch", "status", "events"]
UP_KINDS: tuple[UpKind, ...] = ("batch", "status", "events")


@dataclass(frozen=True, slots=True)
class UpTopic:
    """An edge -> cloud topic read back: whose and what kind."""

    mill: str
    edge: str
    kind: str


def up_filter(template: str) -> str:
    """The wildcard subscription of every mill's and edge's ``template`` topic (``spinline/up/+/+/batch``)."""
    return template.format(mill="+", edge="+")


def parse_up_topic(topic: str) -> UpTopic | None:
    """(mill, edge, kind) of ``spinline/up/{mill}/{edge}/{kind}`` (namespace already removed); None: not one.

    ``kind`` is returned as found; the caller decides what an unknown kind means.
    """
    parts = topic.split("/")
    if len(parts) != 5:
        return None
    return UpTopic(mill=parts[2], edge=parts[3], kind=parts[4])
