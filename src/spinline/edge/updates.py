"""Model updates at the edge: fetch the desired state over HTTP, verify it with TUF, hot-swap, report.

The cloud publishes, per mill, a TUF repository (``spinline.cloud.models.tuf_repo``) whose targets are
the model artefacts and one desired-state file per edge (``desired/<edge>.json``: for each asset the
model name, version, sequence number, kind, target path and its sha256). ``ModelUpdater.check_once``:

1. **refresh** TUF metadata with ``tuf.ngclient.Updater`` (root chain, timestamp, snapshot, targets) over
   the edge's own HTTP credentials (``EdgeFetcher``: every request signed with the edge secret);
2. **download** ``desired/<edge>.json`` and each model it names that this edge does not run yet; TUF
   checks each file's length and hash against the signed targets;
3. **check** the model against what the edge runs: a lower sequence number of the same model line
   is a rollback and is refused unless the signed desired state says ``allow_rollback`` (the cloud's
   own, recorded rollback); the artefact must name the asset's model line and load (the slot's
   validation hook);
4. **install** through ``ModelSlot.replace`` (public API only): the slot writes the new record and
   bumps its generation, and the scorer swaps models on the asset's next snapshot, keeping its alarm
   state: scoring never pauses. The record that was there is kept (``updates/previous/``) so a
   rollback to it needs no download;
5. **report** to the cloud what runs on each asset, what it replaced, what was refused and the
   evidence per model version (snapshots scored, alarms, scoring errors, inference time).

Refusals (``REASONS``): ``tampered`` (hash/length mismatch), ``rollback`` (older metadata replayed, or an
older model not asked for), ``expired`` (stale metadata: a freeze attack, or a cloud that stopped
signing), ``bad_signature`` (signed by no key the current root trusts, e.g. a revoked one),
``invalid_metadata`` (any other TUF refusal) and ``invalid_model`` (the artefact does not fit or load).
Each is counted, logged once per (reason, what) until it stops, and shown in ``status()``; an
unreachable cloud is not a refusal (``state="offline"``) and the edge keeps running what it has.

An edge offline for a week converges on its first check back: TUF walks any root versions it missed,
the new timestamp replaces its expired one, and the desired state is the latest one.

``ApprovedModels`` is the slots' verifier: ``ModelSlot.replace`` accepts only a record whose
(asset, version, sha256) this updater has just verified, so nothing else on the edge can install a
registry model around TUF. All I/O here is blocking (TUF's client is synchronous): the agent runs
``check_once`` in a worker thread.

Size: the five steps above form one verified path (refresh, download, check, install, report) that must
not be entered half-way; each refusal is counted at the step that makes it, so they stay together.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx
from tuf.api import exceptions as tuf_exc
from tuf.ngclient import FetcherInterface, Updater

from spinline.core.aio import wait_event
from spinline.core.errors import StorageError
from spinline.core.modelspec import ARTEFACT_FORMAT, DESIRED_FORMAT, TOPIC_MODELS, artefact_bytes, desired_path
from spinline.core.request_auth import sign_request

from .models import ModelRecord, ModelRejected, ModelSlot, atomic_write, slot_filename

log = logging.getLogger(__name__)

TUF_PREFIX = "/api/v1/tuf"
REPORT_PATH = "/api/v1/tuf/report"
REASONS = ("tampered", "rollback", "expired", "bad_signature", "invalid_metadata", "invalid_model")
Reason = Literal["tampered", "rollback", "expired", "bad_signature", "invalid_metadata", "invalid_model"]
STATE_FILE = "state.json"


def refusal_reason(exc: BaseException) -> Reason | None:
    """Which refusal a TUF error is; None for a download failure (the cloud is unreachable, not lying)."""
    if isinstance(exc, tuf_exc.ExpiredMetadataError):
        return "expired"
    if isinstance(exc, tuf_exc.BadVersionNumberError):
        return "rollback"
    if isinstance(exc, tuf_exc.UnsignedMetadataError):
        return "bad_signature"
    if isinstance(exc, tuf_exc.LengthOrHashMismatchError | tuf_exc.DownloadLengthMismatchError):
        return "tampered"
    if isinstance(exc, tuf_exc.RepositoryError):
        return "invalid_metadata"
    return None


class EdgeFetcher(FetcherInterface):
    """TUF's network interface over httpx, each request signed with the edge's secret."""

    def __init__(self, client: httpx.Client, edge: str, secret: bytes, clock: Callable[[], int] = time.time_ns) -> None:
        self.client, self.edge, self.secret, self.clock = client, edge, secret, clock
        #: Bytes received (metadata and models) and requests answered, for the uplink accounting.
        self.bytes_in = 0
        self.responses = 0
        #: The path of the last request answered 404 (a mill with nothing published has no timestamp).
        self.last_404: str | None = None

    def _fetch(self, url: str) -> Iterator[bytes]:
        path = httpx.URL(url).raw_path.decode()
        headers = sign_request(self.secret, self.edge, "GET", path, self.clock())
        try:
            r = self.client.get(url, headers=headers)
        except httpx.HTTPError as exc:
            raise tuf_exc.DownloadError(f"GET {path}: {exc!r}") from None
        self.responses += 1
        if r.status_code == 404:
            self.last_404 = path
        if r.status_code != 200:
            raise tuf_exc.DownloadHTTPError(f"GET {path}: HTTP {r.status_code}", r.status_code)
        self.bytes_in += len(r.content)
        return iter([r.content])


class ApprovedModels:
    """The slots' ``ModelVerifier``: only what the updater verified through TUF may be installed."""

    def __init__(self) -> None:
        self._approved: set[tuple[str, str, str]] = set()
        self._lock = threading.Lock()

    def approve(self, asset: str, version: str, sha256: str) -> None:
        with self._lock:
            self._approved.add((asset, version, sha256))

    def verify(self, record: ModelRecord) -> None:
        key = (record.asset, record.version, record.signature or "")
        with self._lock:
            if key not in self._approved:
                raise ModelRejected(f"{record.asset}: model {record.version} was not verified by the update client")
            self._approved.discard(key)


@dataclass
class Evidence:
    """What one model version did on one asset (cumulative; persisted with the updater state)."""

    scored: int = 0
    alarms: int = 0
    errors: int = 0
    latency_s_sum: float = 0.0
    latency_s_max: float = 0.0
    first_ns: int = field(default_factory=time.time_ns)


@dataclass
class CheckResult:
    state: Literal["ok", "offline", "refused", "not_configured"]
    installed: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    detail: str = ""


class ModelUpdater:
    """One edge's update client (see module docstring)."""

    def __init__(self, *, base_url: str, edge: str, mill: str, secret: bytes, data_dir: str | Path,
                 slots: Mapping[str, ModelSlot], approvals: ApprovedModels, trusted_root: bytes | None = None,
                 timeout_s: float = 15.0, verify_tls: bool = True, report_every_s: float = 900.0,
                 clock: Callable[[], int] = time.time_ns,
                 traffic: Callable[[Literal["models_in", "model_report"], int, int], None] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.edge, self.mill, self.secret = edge, mill, secret
        self.dir = Path(data_dir) / "updates"
        self.slots = dict(slots)
        self.approvals = approvals
        self.trusted_root = trusted_root
        self.timeout_s, self.verify_tls, self.clock = timeout_s, verify_tls, clock
        #: Books the bytes this client moves in the edge's uplink ledger (``TrafficLedger.add``).
        self.traffic = traffic
        #: Reports go up after a check that installed or refused something, else at most this often (the
        #: evidence grows with every snapshot; sending it on every poll would cost more than the features).
        self.report_every_s = report_every_s
        self._reported_ns: int | None = None
        self.last_report_bytes = 0
        self.refusals: dict[str, int] = dict.fromkeys(REASONS, 0)
        self.last_refusal: dict[str, Any] | None = None
        self.last_check_ns: int | None = None
        self.last_state = "never"
        self.checks = 0
        self.bytes_in = 0
        #: Bytes of update reports sent (the uplink accounting; requests' headers not counted).
        self.bytes_out = 0
        #: Per asset: the model line, version, seq and sha256 installed from the registry.
        self.running: dict[str, dict[str, Any]] = {}
        self.previous: dict[str, dict[str, Any]] = {}
        self.evidence: dict[tuple[str, str], Evidence] = {}
        self._logged: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._state_loaded = False

    # --- evidence from the scorer (event loop; no I/O) --------------------------------------------------

    def observe(self, asset: str, version: str, *, latency_s: float | None = None, alarm: bool = False,
                error: bool = False) -> None:
        """Count one snapshot against a model version: scored (``alarm``: its anomaly score was at alarm
        level, above 1), or a scoring ``error``; with the time the model took."""
        with self._lock:
            ev = self.evidence.setdefault((asset, version), Evidence(first_ns=self.clock()))
            if error:
                ev.errors += 1
            else:
                ev.scored += 1
                ev.alarms += int(alarm)
            if latency_s is not None:
                ev.latency_s_sum += latency_s
                ev.latency_s_max = max(ev.latency_s_max, latency_s)

    # --- the check (blocking I/O: a worker thread) ---------------------------------------------------------

    def check_once(self) -> CheckResult:
        """Fetch, verify, install and report once. Never raises for network or TUF failures."""
        self._load_state()
        self.checks += 1
        self.last_check_ns = self.clock()
        meta_dir = self.dir / "metadata"
        meta_dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "targets").mkdir(parents=True, exist_ok=True)
        bootstrap = None
        if not (meta_dir / "root.json").exists():
            if self.trusted_root is None:
                self.last_state = "not_configured"
                return CheckResult("not_configured", detail="no trusted root.json provisioned (--tuf-root)")
            bootstrap = self.trusted_root
        result = CheckResult("ok")
        with httpx.Client(base_url=self.base_url, timeout=self.timeout_s, verify=self.verify_tls) as client:
            fetcher = EdgeFetcher(client, self.edge, self.secret, self.clock)
            try:
                upd = Updater(str(meta_dir), f"{self.base_url}{TUF_PREFIX}/", str(self.dir / "targets"),
                              f"{self.base_url}{TUF_PREFIX}/targets/", fetcher, bootstrap=bootstrap)
                upd.refresh()
                desired = self._desired(upd)
                if desired is not None:
                    self._converge(upd, desired, result)
            except (tuf_exc.RepositoryError, tuf_exc.DownloadError) as exc:
                reason = refusal_reason(exc)
                if reason is None and (fetcher.last_404 or "").endswith("/timestamp.json"):
                    result = CheckResult("ok", detail="nothing published for this mill yet")
                elif reason is None:
                    result = CheckResult("offline", detail=str(exc))
                    self._log_once("offline", "", logging.WARNING, "model updates: cloud unreachable (%s)", exc)
                else:
                    self._refuse(result, reason, "metadata", repr(exc))
            except OSError as exc:
                raise StorageError(f"model updates: cannot write under {self.dir}: {exc}") from exc
            finally:
                self.bytes_in += fetcher.bytes_in
                if self.traffic is not None and fetcher.responses:
                    self.traffic("models_in", fetcher.bytes_in, fetcher.responses)
            if result.state != "offline":
                self._log_clear("offline", "", "model updates: cloud reachable again")
                self._save_state()
                due = self._reported_ns is None or (self.clock() - self._reported_ns) >= self.report_every_s * 1e9
                if due or result.installed or result.refused:
                    self._report(client, result)
        if not result.refused and result.state == "ok":
            for key in [k for k in self._logged if k[0] != "offline"]:
                self._logged.discard(key)
        self.last_state = result.state
        return result

    def _desired(self, upd: Updater) -> dict[str, Any] | None:
        info = upd.get_targetinfo(desired_path(self.edge))
        if info is None:
            return None   # nothing desired for this edge yet: keep what runs
        path = upd.download_target(info)
        doc = json.loads(Path(path).read_bytes())
        if not isinstance(doc, dict) or doc.get("format") != DESIRED_FORMAT or doc.get("edge") != self.edge \
                or doc.get("mill") != self.mill or not isinstance(doc.get("assets"), dict):
            raise tuf_exc.RepositoryError(f"desired state for {doc.get('edge') if isinstance(doc, dict) else '?'}"
                                          f" is not this edge's ({self.edge}/{self.mill}) or not format "
                                          f"{DESIRED_FORMAT}")
        return doc

    def _converge(self, upd: Updater, desired: Mapping[str, Any], result: CheckResult) -> None:
        for asset, want in sorted(desired["assets"].items()):
            slot = self.slots.get(asset)
            if slot is None:
                continue   # an asset this edge does not score (a stale desired state): nothing to do
            try:
                name, version, seq = str(want["name"]), str(want["version"]), int(want["seq"])
                target, sha = str(want["target"]), str(want["sha256"])
            except (KeyError, TypeError, ValueError) as exc:
                self._refuse(result, "invalid_model", asset, f"desired entry is malformed: {exc!r}")
                continue
            cur = self.running.get(asset)
            if slot.version == version and cur is not None and cur.get("sha256") == sha:
                continue   # converged
            if cur is not None and cur.get("name") == name and seq < int(cur.get("seq", 0)) \
                    and not bool(want.get("allow_rollback")):
                self._refuse(result, "rollback", asset,
                             f"{name} seq {seq} ({version}) is older than the running seq {cur.get('seq')} "
                             f"({cur.get('version')}) and the desired state does not ask for a rollback")
                continue
            data = self._from_previous(asset, version, sha)
            if data is None:
                info = upd.get_targetinfo(target)
                if info is None:
                    self._refuse(result, "invalid_metadata", asset, f"{target} is not in the signed targets")
                    continue
                if info.hashes.get("sha256") != sha:
                    self._refuse(result, "tampered", asset, f"{target}: the desired sha256 differs from the "
                                                            "signed targets'")
                    continue
                data = Path(upd.download_target(info)).read_bytes()   # TUF verifies length and hashes
            self._install(asset, slot, want, data, result)

    def _install(self, asset: str, slot: ModelSlot, want: Mapping[str, Any], data: bytes,
                 result: CheckResult) -> None:
        name, version, seq, sha = str(want["name"]), str(want["version"]), int(want["seq"]), str(want["sha256"])
        try:
            art = json.loads(data)
            if not isinstance(art, dict) or art.get("format") != ARTEFACT_FORMAT:
                raise ValueError(f"not a format-{ARTEFACT_FORMAT} model artefact")
            if art.get("name") != name or art.get("version") != version or int(art.get("seq", -1)) != seq:
                raise ValueError(f"artefact is {art.get('name')} {art.get('version')}, desired {name} {version}")
            params, kind = art["params"], str(art["kind"])
            if not isinstance(params, dict):
                raise TypeError("params must be a JSON object")
        except (ValueError, KeyError, TypeError) as exc:
            self._refuse(result, "invalid_model", asset, repr(exc))
            return
        before = slot.record
        self.approvals.approve(asset, version, sha)
        try:
            slot.replace(version, params, sha, kind=kind)
        except ModelRejected as exc:
            self._refuse(result, "invalid_model", asset, str(exc))
            return
        if before is not None and before.version != version:
            prev_path = self.dir / "previous" / slot_filename(asset)
            atomic_write(prev_path, json.dumps({"record": before.to_dict(), "meta": self.running.get(asset)},
                                               allow_nan=True).encode())
            self.previous[asset] = {"version": before.version, "source": before.source,
                                    **{k: v for k, v in (self.running.get(asset) or {}).items()
                                       if k in ("name", "seq", "sha256")}}
        self.running[asset] = {"name": name, "version": version, "seq": seq, "sha256": sha, "kind": kind,
                               "role": str(want.get("role", "active")), "since_ns": self.clock()}
        result.installed.append(f"{asset}={version}")
        log.info("model update: %s now runs %s %s (seq %d, %s)", asset, name, version, seq,
                 want.get("role", "active"))

    def _from_previous(self, asset: str, version: str, sha: str) -> bytes | None:
        """The kept previous model as an artefact, when it is exactly the one desired (a fast rollback)."""
        prev = self.previous.get(asset)
        if prev is None or prev.get("version") != version or prev.get("sha256") != sha:
            return None
        try:
            saved = json.loads((self.dir / "previous" / slot_filename(asset)).read_bytes())
            rec = ModelRecord.from_dict(saved["record"])
            meta = saved["meta"] or {}
        except (OSError, ValueError, KeyError, TypeError):
            return None
        try:
            data = artefact_bytes(str(meta.get("name")), rec.version, int(meta.get("seq", -1)), rec.kind, rec.params)
        except (TypeError, ValueError):
            return None
        if hashlib.sha256(data).hexdigest() != sha:
            return None   # the kept copy is not byte-identical to the signed one: download instead
        return data

    # --- refusals, state, report ---------------------------------------------------------------------------

    def _refuse(self, result: CheckResult, reason: Reason, what: str, detail: str) -> None:
        self.refusals[reason] += 1
        self.last_refusal = {"reason": reason, "what": what, "detail": detail[:500], "ts_ns": self.clock()}
        result.refused.append((reason, detail))
        if result.state == "ok":
            result.state = "refused"
        self._log_once(reason, what, logging.ERROR, "model update REFUSED (%s) for %s: %s", reason, what, detail)

    def _log_once(self, reason: str, what: str, level: int, msg: str, *args: object) -> None:
        if (reason, what) not in self._logged:
            self._logged.add((reason, what))
            log.log(level, msg, *args)

    def _log_clear(self, reason: str, what: str, msg: str) -> None:
        if (reason, what) in self._logged:
            self._logged.discard((reason, what))
            log.info(msg)

    def status(self) -> dict[str, Any]:
        """For the edge's status message and the fleet view."""
        with self._lock:
            return {"state": self.last_state, "last_check_ns": self.last_check_ns, "checks": self.checks,
                    "running": {a: {k: v for k, v in r.items() if k != "sha256"} for a, r in self.running.items()},
                    "previous": dict(self.previous), "refusals": dict(self.refusals),
                    "last_refusal": self.last_refusal, "bytes_in": self.bytes_in, "bytes_out": self.bytes_out}

    def report_body(self) -> dict[str, Any]:
        with self._lock:
            ev = [{"asset": a, "version": v, **vars(e)} for (a, v), e in self.evidence.items()]
        return {"edge": self.edge, "mill": self.mill, **self.status(), "evidence": ev,
                "slots": {a: s.version for a, s in self.slots.items()}}

    def _report(self, client: httpx.Client, result: CheckResult) -> None:
        body = json.dumps(self.report_body(), separators=(",", ":"), default=str).encode()
        headers = {"Content-Type": "application/json",
                   **sign_request(self.secret, self.edge, "POST", REPORT_PATH, self.clock(), body)}
        self.bytes_out += len(body)
        self.last_report_bytes = len(body)
        try:
            r = client.post(REPORT_PATH, content=body, headers=headers)
        except httpx.HTTPError as exc:
            self._log_once("report", "", logging.WARNING, "model update report not delivered: %r", exc)
            return
        if self.traffic is not None:
            self.traffic("model_report", len(body), 1)
        if r.status_code == 204:
            self._reported_ns = self.clock()
        if r.status_code != 204:
            self._log_once("report", "", logging.WARNING, "model update report refused: HTTP %d %s",
                           r.status_code, r.text[:200])
        else:
            self._log_clear("report", "", "model update reports delivered again")

    def _load_state(self) -> None:
        if self._state_loaded:
            return
        self._state_loaded = True
        path = self.dir / STATE_FILE
        try:
            d = json.loads(path.read_bytes())
            self.running = dict(d.get("running") or {})
            self.previous = dict(d.get("previous") or {})
            for r, n in (d.get("refusals") or {}).items():
                if r in self.refusals:
                    self.refusals[r] = int(n)
            for e in d.get("evidence") or []:
                self.evidence[(str(e["asset"]), str(e["version"]))] = Evidence(
                    **{k: e[k] for k in ("scored", "alarms", "errors", "latency_s_sum", "latency_s_max", "first_ns")})
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("model update state %s is unusable (%s): starting from the slots as they are", path, exc)

    def _save_state(self) -> None:
        with self._lock:
            ev = [{"asset": a, "version": v, **vars(e)} for (a, v), e in self.evidence.items()]
            d = {"running": self.running, "previous": self.previous, "refusals": self.refusals, "evidence": ev}
        with contextlib.suppress(StorageError):
            atomic_write(self.dir / STATE_FILE, json.dumps(d, separators=(",", ":"), allow_nan=True).encode())


class FeatureScorerLike(Protocol):
    """What the vibration connector calls (``connectors.mqtt.vibration.FeatureScorer``), plus the model
    version per asset (``EdgeScoring``)."""

    def score(self, machine: str, channel: str, ts_ns: int, shaft_hz: float,
              features: Mapping[str, float]) -> Mapping[str, float]: ...


class ObservedScorer:
    """Wraps the edge's scorer: every snapshot scored is evidence for the model version that scored it
    (time taken, alarm level, scoring error). Hand this to the vibration connector instead of the scorer.

    ``version_of(machine, channel)`` names the asset and the version running there (``EdgeScoring``'s
    ``assets[(machine, channel)]``); ``errors_of()`` is the scorer's error count (it swallows numerical
    failures of one asset so the others keep going; a rise during a call is that asset's error).
    """

    def __init__(self, scorer: FeatureScorerLike, updater: ModelUpdater,
                 version_of: Callable[[str, str], tuple[str, str] | None], errors_of: Callable[[], int]) -> None:
        self.scorer, self.updater, self.version_of, self.errors_of = scorer, updater, version_of, errors_of

    def score(self, machine: str, channel: str, ts_ns: int, shaft_hz: float,
              features: Mapping[str, float]) -> Mapping[str, float]:
        errors = self.errors_of()
        t0 = time.perf_counter()
        out = self.scorer.score(machine, channel, ts_ns, shaft_hz, features)
        dt = time.perf_counter() - t0
        who = self.version_of(machine, channel)
        if who is None:
            return out
        asset, version = who
        if self.errors_of() > errors:
            self.updater.observe(asset, version, error=True)
        elif out and version != "commissioning":
            score = out.get("anomaly_score")
            self.updater.observe(asset, version, latency_s=dt,
                                 alarm=score is not None and score == score and score > 1.0)
        return out


async def run_updates(updater: ModelUpdater, every_s: float, nudge: asyncio.Event | None = None) -> None:
    """Check for model updates every ``every_s`` (or at once when ``nudge`` is set), off the event loop.

    Runs until cancelled; a failure of one check (disk full) is logged once and retried next time.
    """
    failing = False
    while True:
        try:
            await asyncio.to_thread(updater.check_once)
            if failing:
                log.info("model update checks recovered")
            failing = False
        except StorageError as exc:
            if not failing:
                log.error("model update check failed: %s", exc)
            failing = True
        if nudge is None:
            await asyncio.sleep(every_s)
            continue
        await wait_event(nudge, every_s)
        nudge.clear()


async def listen_nudges(host: str, port: int, mill: str, edge: str, nudge: asyncio.Event, *,
                        username: str | None = None, password: str | None = None,
                        reconnect_s: float = 5.0) -> None:
    """Set ``nudge`` whenever the cloud says this edge's models changed (``TOPIC_MODELS``); runs until
    cancelled. The nudge only makes ``run_updates`` check at once; what is installed is what TUF verifies."""
    import aiomqtt

    topic = TOPIC_MODELS.format(mill=mill, edge=edge)
    failing = False
    while True:
        try:
            async with aiomqtt.Client(host, port, username=username, password=password,
                                      identifier=f"spinline-edge-{mill}-{edge}-models", keepalive=30) as client:
                await client.subscribe(topic, qos=1)
                if failing:
                    log.info("model nudges: subscribed again")
                failing = False
                async for _msg in client.messages:
                    nudge.set()
        except aiomqtt.MqttError as exc:
            if not failing:
                log.warning("model nudges unavailable (%s): checking by polling only", exc)
            failing = True
            await asyncio.sleep(reconnect_s)
