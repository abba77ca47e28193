"""Plugin suspension in a worker (DESIGN §7): requests, approvals, commands, acks, timeouts,
notifications, evidence and audit around the pure state machine of ``plugwatch.suspension.machine``.

Every change of one plugin's suspension runs under that plugin's lock: the plugin's latest record
(memory, else ClickHouse ``suspensions``) goes through one machine event, and the effects it
returns are carried out in order -- the command first (``plugin.suspend.command``, awaited: that
is "the command is out" for ``request_to_command``), then the record saved (version + 1), then
the audit record; notifications and the evidence snapshot follow in the background and never hold
up the suspension. Acks (``plugin.suspend.ack``) and risk signals (``plugin.risk.signal``) come
through consumer groups of their own that commit after each record.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import orjson

from plugwatch import metrics
from plugwatch.evidence import (
    DirectoryStore,
    EvidenceNumbers,
    Retention,
    build_bundle,
    evidence_record,
    evidence_row,
    put_with_retry,
)
from plugwatch.notify import Dispatcher, NotificationConfig, build_channels
from plugwatch.sinks.retry import retry_forever
from plugwatch.streams.ordered import OrderedConsumer
from plugwatch.suspension import machine
from plugwatch.suspension.machine import (
    Audit,
    Completed,
    InvalidEventError,
    Notify,
    RaiseAlert,
    ScheduleTimeout,
    SendCommand,
    SnapshotEvidence,
    Suspension,
    SuspensionError,
)
from plugwatch.suspension.policy import SuspendPolicies
from plugwatch.tables.keeper import SIGNALS

if TYPE_CHECKING:
    from plugwatch.app import Services

log = logging.getLogger(__name__)

NOTIFY_KINDS = {
    "suspend.requested": "suspension_requested", "suspend.executing": "suspension_executing",
    "suspend.escalated": "suspension_executing", "suspend.suspended": "plugin_suspended",
    "suspend.locked": "plugin_locked", "suspend.failed": "suspension_failed", "suspend.rejected": "suspension_rejected",
    "resume.requested": "resume_requested", "resume.executing": "suspension_approved",
    "resume.resumed": "plugin_resumed", "resume.failed": "suspension_failed", "resume.rejected": "suspension_rejected",
}


class SuspensionNotFound(SuspensionError):
    code = "not_found"


class SuspensionService:
    def __init__(self, services: Services):
        self.services = services
        settings = services.settings
        self.settings = settings
        plugins, config = settings.config_dir / "plugins", settings.suspensions
        self.policies = SuspendPolicies.from_file(config.policies or plugins / "suspend_policies.yaml")
        notifications = NotificationConfig.from_file(config.notifications or plugins / "notifications.yaml")
        self.dispatcher = Dispatcher(notifications, build_channels(notifications), services.masker.mask_text)
        self.store = DirectoryStore(config.evidence_dir or settings.data_dir / "evidence")
        self.retention = Retention.from_file(config.evidence_retention or plugins / "evidence_retention.yaml")
        self.numbers = EvidenceNumbers(self._claim_number)
        self.records: dict[str, tuple[Suspension, int]] = {}  # suspension_id -> (record, version)
        self.latest: dict[tuple[str, str], str] = {}  # plugin -> its latest suspension or resume id
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, list[int]]] = {}  # plugin -> (lock, users)
        self._rows: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._background: set[asyncio.Task[Any]] = set()
        topics = settings.topics
        self.acks = OrderedConsumer.for_worker(settings, topics.suspend_ack, "suspend-acks", self._on_ack,
                                               on_failure=services.deadletter_record)
        self.signals = OrderedConsumer.for_worker(settings, topics.risk_signals, "risk", self._on_signal,
                                                  on_failure=services.deadletter_record)
        self.finished = {"suspended": 0, "failed": 0}

    @staticmethod
    def now_ms() -> int:
        return int(time.time() * 1000)

    # Lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        # Every plugin's latest record: a plugin missing here has none, with no query on the request path.
        for data, version in await self.services.clickhouse.latest_suspensions():
            record = Suspension.from_dict(data)
            self._remember(record, version)
            command = record.current_command
            if record.is_open and command is not None and command.get("deadline"):
                self._schedule(record.suspension_id, command["command_id"], int(command["deadline"]))
        self._writer = asyncio.ensure_future(self._write_rows())
        self._spawn(self._expire_evidence())
        await self.acks.start()
        await self.signals.start()

    async def stop(self) -> None:
        await self.signals.stop()
        await self.acks.stop()
        for handle in self._timers.values():
            handle.cancel()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.dispatcher.aclose()
        if self._writer is not None:
            try:
                await asyncio.wait_for(self._rows.join(), 10)
            except asyncio.TimeoutError:
                log.warning("%d suspension rows not written to ClickHouse at shutdown", self._rows.qsize())
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)

    async def _expire_evidence(self, every_s: float = 3600) -> None:
        """Bundles past their retention leave the store (the ``evidence`` rows by their TTL)."""
        while True:
            try:
                gone = await self.store.expire(self.now_ms(), self.retention)
                if gone:
                    await self.services.audit.record("evidence.expired", "plugwatch", target=f"{len(gone)} bundles",
                                                     details={"sha256": gone[:100]})
            except Exception as exc:
                log.warning("evidence expiry failed: %s", exc)
            await asyncio.sleep(every_s)

    async def evidence(self, evidence_id: str) -> dict[str, Any] | None:
        return await self.services.clickhouse.evidence(evidence_id)

    async def evidence_bundle(self, record: dict[str, Any], actor: str) -> bytes:
        """The stored bundle of an evidence record (hash verified); the download is audited."""
        data = await self.store.get(record["sha256"])
        await self.services.audit.record("evidence.download", actor, tenant_id=record["tenant_id"],
                                         plugin_id=record["plugin_id"], target=record["evidence_id"],
                                         details={"sha256": record["sha256"], "size": len(data)})
        return data

    async def _write_rows(self) -> None:
        """Records to ClickHouse behind the work, many per insert: the requester waits for the
        command, not for ClickHouse (versions keep the newest of each record)."""
        while True:
            rows = [await self._rows.get()]
            while not self._rows.empty():
                rows.append(self._rows.get_nowait())
            await retry_forever("suspensions to ClickHouse", lambda: self.services.clickhouse.insert_rows("suspensions", rows))
            for _ in rows:
                self._rows.task_done()

    # Requests in -------------------------------------------------------------------------------

    async def request(self, *, tenant_id: str, plugin_id: str, kind: str, force: bool, requester: str,
                      roles: Any, reason: str, severity: str, source: str, request_id: str | None = None,
                      mode: str | None = None) -> dict[str, Any]:
        request_id = request_id or f"{source}-{uuid.uuid4().hex[:12]}"
        now = self.now_ms()

        def event(existing: Suspension | None) -> machine.Result:
            if kind == "resume":
                return machine.resume_request(existing, request_id=request_id, tenant_id=tenant_id,
                                              plugin_id=plugin_id, requester=requester, reason=reason, at_ms=now,
                                              policy=self.policies)
            return machine.request(existing, request_id=request_id, tenant_id=tenant_id, plugin_id=plugin_id,
                                   severity=severity, mode=mode, requester=requester, reason=reason, at_ms=now,
                                   policy=self.policies, force=force)

        record = await self._change(tenant_id, plugin_id, None, event)
        return self.view(record)

    async def approve(self, suspension_id: str, principal: str, roles: Any) -> dict[str, Any]:
        record = await self._by_id(suspension_id)
        now = self.now_ms()
        changed = await self._change(record.tenant_id, record.plugin_id, suspension_id, lambda s: machine.approve(
            s, principal=principal, roles=roles, at_ms=now, policy=self.policies))
        if changed.kind == "resume" and changed.status != "requested":
            metrics.RESUME_APPROVAL_DURATION.observe(max(0, now - changed.created_ms) / 1000)
        return self.view(changed)

    async def reject(self, suspension_id: str, principal: str, roles: Any, reason: str) -> dict[str, Any]:
        record = await self._by_id(suspension_id)
        now = self.now_ms()
        return self.view(await self._change(record.tenant_id, record.plugin_id, suspension_id, lambda s: machine.reject(
            s, principal=principal, roles=roles, at_ms=now, reason=reason)))

    async def get(self, suspension_id: str) -> dict[str, Any] | None:
        try:
            return self.view(await self._by_id(suspension_id))
        except SuspensionNotFound:
            return None

    async def plugin(self, tenant_id: str, plugin_id: str) -> dict[str, Any]:
        """The plugin's state (active, suspending, suspended, locked, resuming) and recent records."""
        rows = await self.services.clickhouse.suspensions_of(tenant_id, plugin_id)
        records = [Suspension.from_dict(data) for data, _ in rows]
        latest = self.latest.get((tenant_id, plugin_id))
        if latest in self.records:
            current = self.records[latest][0]
            records = [current] + [r for r in records if r.suspension_id != current.suspension_id]
        state = "active"
        if records:
            top = records[0]
            if top.kind == "resume":
                state = "resuming" if top.is_open else ("active" if top.status == "resumed" else "suspended")
            elif top.is_open:
                state = "suspending"
            elif top.status in ("suspended", "locked"):
                state = top.status
        return {"tenant_id": tenant_id, "plugin_id": plugin_id, "state": state,
                "current": self.view(records[0]) if records else None,
                "recent": [{"suspension_id": r.suspension_id, "kind": r.kind, "status": r.status,
                            "created_ms": r.created_ms} for r in records[:20]]}

    def view(self, record: Suspension) -> dict[str, Any]:
        return {**record.as_dict(), "elapsed": record.elapsed()}

    # Acks, timeouts and risk signals ----------------------------------------------------------

    async def _on_ack(self, kafka_record: Any) -> None:
        ack = _json_object(kafka_record.value, "an ack")
        command_id = ack.get("command_id")
        if not isinstance(command_id, str) or command_id.count("-") < 3:
            raise InvalidEventError(f"ack with an unknown command_id {str(command_id)[:80]!r}")
        suspension_id = "-".join(command_id.split("-")[:2])
        try:
            record = await self._by_id(suspension_id)
        except SuspensionNotFound:
            raise InvalidEventError(f"ack for command {command_id} of no known suspension") from None
        now = self.now_ms()
        await self._change(record.tenant_id, record.plugin_id, suspension_id, lambda s: machine.ack(s, ack, now))

    async def _on_signal(self, kafka_record: Any) -> None:
        signal = _json_object(kafka_record.value, "a risk signal")
        masked, _ = self.services.masker.mask(signal)
        for name in ("signal_id", "tenant_id", "plugin_id", "requester"):
            if not isinstance(masked.get(name), str) or not masked[name]:
                raise InvalidEventError(f"a risk signal needs {name}")
        severity = str(masked.get("severity") or "high").lower()
        mode = masked.get("mode") if masked.get("mode") in ("wait", "force") else None
        try:
            await self.request(tenant_id=masked["tenant_id"], plugin_id=masked["plugin_id"], kind="suspend",
                               force=mode == "force", requester=masked["requester"], roles=(),
                               reason=str(masked.get("reason") or "risk signal"), severity=severity, source="signal",
                               request_id=masked["signal_id"], mode=mode)
        except SuspensionError as exc:
            await self.services.audit.record("suspend.refused", masked["requester"], tenant_id=masked["tenant_id"],
                                             plugin_id=masked["plugin_id"], target=masked["signal_id"],
                                             outcome="refused", details={"reason": str(exc)})
            log.warning("risk signal %s refused: %s", masked["signal_id"], exc)

    def _schedule(self, suspension_id: str, command_id: str, deadline_ms: int) -> None:
        loop = asyncio.get_running_loop()
        delay = max(0.0, (deadline_ms - self.now_ms()) / 1000)
        self._timers[command_id] = loop.call_later(delay, lambda: self._spawn(self._timeout(suspension_id, command_id)))

    async def _timeout(self, suspension_id: str, command_id: str) -> None:
        self._timers.pop(command_id, None)
        record = await self._by_id(suspension_id)
        now = self.now_ms()
        await self._change(record.tenant_id, record.plugin_id, suspension_id,
                           lambda s: machine.timeout(s, command_id, now))

    # The one way records change ----------------------------------------------------------------

    @asynccontextmanager
    async def _plugin_lock(self, key: tuple[str, str]) -> AsyncIterator[None]:
        lock, users = self._locks.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[key]

    async def _change(self, tenant_id: str, plugin_id: str, suspension_id: str | None, event: Any) -> Suspension:
        async with self._plugin_lock((tenant_id, plugin_id)):
            if suspension_id is None:
                current, version = await self._latest(tenant_id, plugin_id)
            else:
                current, version = await self._load(suspension_id)
            new, effects = event(current)
            if new is current and not effects:
                return new
            if current is None or new.suspension_id != current.suspension_id:
                version = 0
            for effect in effects:  # the command goes out first: that is what the requester waits for
                if isinstance(effect, SendCommand):
                    await self._send_command(effect.command)
            self._remember(new, version + 1)
            self._rows.put_nowait(self.services.clickhouse.suspension_row(new.as_dict(), version + 1, new.updated_ms))
            for effect in effects:
                await self._effect(new, effect)
            return new

    async def _latest(self, tenant_id: str, plugin_id: str) -> tuple[Suspension | None, int]:
        sid = self.latest.get((tenant_id, plugin_id))
        return (None, 0) if sid is None else await self._load(sid)

    async def _load(self, suspension_id: str) -> tuple[Suspension, int]:
        held = self.records.get(suspension_id)
        if held is not None:
            return held
        found = await self.services.clickhouse.suspension(suspension_id)
        if found is None:
            raise SuspensionNotFound(f"no suspension {suspension_id}")
        record = Suspension.from_dict(found[0])
        self._remember(record, found[1])
        return record, found[1]

    async def _by_id(self, suspension_id: str) -> Suspension:
        return (await self._load(suspension_id))[0]

    def _remember(self, record: Suspension, version: int) -> None:
        """Hold every plugin's latest record and every open one; finished records a newer one
        replaced are served from ClickHouse."""
        sid, key = record.suspension_id, (record.tenant_id, record.plugin_id)
        self.records[sid] = (record, version)
        latest = self.latest.get(key)
        if latest is None or latest == sid or record.created_ms >= self.records[latest][0].created_ms:
            self.latest[key] = sid
            if latest is not None and latest != sid and not self.records[latest][0].is_open:
                del self.records[latest]
        elif not record.is_open:
            del self.records[sid]

    # Effects -----------------------------------------------------------------------------------

    async def _send_command(self, command: dict[str, Any]) -> None:
        topic = self.settings.topics.suspend_command
        key = f"{command['tenant_id']}/{command['plugin_id']}".encode()
        await retry_forever(f"command to {topic}", lambda: self.services.topics.send(topic, orjson.dumps(command), key=key))
        if command.get("action") == "force_suspend":
            metrics.SUSPEND_FORCE.inc()
        log.info("command %s %s for %s/%s (mode %s, requester %s, approvers %s)", command["action"],
                 command["command_id"], command["tenant_id"], command["plugin_id"], command.get("mode"),
                 command.get("requester"), ",".join(command.get("approvers") or []))

    async def _effect(self, record: Suspension, effect: Any) -> None:
        if isinstance(effect, SendCommand):
            return
        if isinstance(effect, ScheduleTimeout):
            self._schedule(effect.suspension_id, effect.command_id, effect.deadline_ms)
        elif isinstance(effect, Audit):
            await self.services.audit.record(effect.action, effect.actor, tenant_id=effect.tenant_id,
                                             plugin_id=effect.plugin_id, target=effect.target,
                                             outcome=effect.outcome, details=effect.details)
        elif isinstance(effect, Notify):
            self._spawn(self._notify(record, effect))
        elif isinstance(effect, SnapshotEvidence):
            self._spawn(self.snapshot(effect.tenant_id, effect.plugin_id, effect.suspension_id, record.severity,
                                      reason=f"suspension {effect.status}", actor="plugwatch"))
        elif isinstance(effect, RaiseAlert):
            await self._raise_alert(effect)
        elif isinstance(effect, Completed):
            await self._completed(record, effect.record)

    async def _completed(self, record: Suspension, data: dict[str, Any]) -> None:
        topic = self.settings.topics.suspend_completed
        masked, _ = self.services.masker.mask(data)
        key = f"{record.tenant_id}/{record.plugin_id}".encode()
        await retry_forever(f"completion to {topic}", lambda: self.services.topics.send(topic, orjson.dumps(masked), key=key))
        if record.kind == "suspend":
            if record.status == "suspended":
                self.finished["suspended"] += 1
            elif record.status in ("failed", "locked"):
                self.finished["failed"] += 1
            total = sum(self.finished.values())
            if total:
                metrics.SUSPEND_SUCCESS_RATE.set(self.finished["suspended"] / total)
            if record.request_to_completed_ms is not None and record.status != "rejected":
                metrics.SUSPEND_RESPONSE_TIME.observe(record.request_to_completed_ms / 1000)
        log.info("%s %s of %s/%s %s in %s ms", record.kind, record.suspension_id, record.tenant_id, record.plugin_id,
                 record.status, record.request_to_completed_ms)

    async def _raise_alert(self, effect: RaiseAlert) -> None:
        alert = {"alert_id": f"ALR-{effect.suspension_id}-{effect.kind}", "ts": self.now_ms(),
                 "tenant_id": effect.tenant_id, "plugin_id": effect.plugin_id, "severity": effect.severity,
                 "kind": effect.kind, "summary": effect.summary}
        topic = self.settings.topics.alerts
        await retry_forever(f"alert to {topic}", lambda: self.services.topics.send(
            topic, orjson.dumps(alert), key=f"{effect.tenant_id}/{effect.plugin_id}".encode()))

    async def _notify(self, record: Suspension, effect: Notify) -> None:
        kind = NOTIFY_KINDS.get(effect.kind)
        if kind is None:
            return
        context = {"tenant_id": record.tenant_id, "plugin_id": record.plugin_id, "suspension_id": record.suspension_id,
                   "mode": record.mode, "requester": record.requester, "approvers": ", ".join(record.approvers),
                   "reason": record.reason, "severity": record.severity, "status": record.status,
                   "elapsed_ms": record.request_to_completed_ms, **effect.details}
        event_id = f"{record.suspension_id}-{effect.kind}-{len(record.history)}"
        records = await self.dispatcher.notify(kind, record.tenant_id, record.plugin_id, context, event_id)
        await retry_forever("notifications to ClickHouse", lambda: self.services.clickhouse.insert_rows(
            "notifications", [r.as_row() for r in records]))
        for sent in records:
            await self.services.audit.record(
                f"notification.{sent.status}", "plugwatch", tenant_id=record.tenant_id, plugin_id=record.plugin_id,
                target=record.suspension_id, outcome="ok" if sent.status == "sent" else "failed",
                details={"channel": sent.channel, "kind": kind, "attempts": sent.attempts, "error": sent.error})

    async def snapshot(self, tenant_id: str, plugin_id: str, suspension_id: str, severity: str, *, reason: str,
                       actor: str) -> dict[str, Any] | None:
        """The evidence bundle of a plugin now: masked telemetry from the window (and ClickHouse),
        its environment; stored content-addressed; recorded on ``plugin.evidence`` and ClickHouse."""
        now = self.now_ms()
        evidence_id = await self.numbers.next_id()
        sections = await self._evidence_sections(tenant_id, plugin_id, now)
        header = {"evidence_id": evidence_id, "tenant_id": tenant_id, "plugin_id": plugin_id,
                  "suspension_id": suspension_id, "created_at": now, "severity": severity, "reason": reason}
        bundle = build_bundle(header, sections, mask=lambda value: self.services.masker.mask(value)[0])

        async def failed(exc: Exception) -> None:
            await self.services.audit.record("evidence.failed", actor, tenant_id=tenant_id, plugin_id=plugin_id,
                                             target=evidence_id, outcome="failed", details={"error": str(exc)[:300]})
            await self._raise_alert(RaiseAlert("evidence_failed", "high", tenant_id, plugin_id, suspension_id,
                                               f"evidence {evidence_id} could not be stored", {}))

        stored = await put_with_retry(self.store, bundle, attempts=5, first_delay_s=0.5, on_failure=failed)
        if stored is None:
            return None
        record = evidence_record(
            evidence_id=evidence_id, stored=stored, tenant_id=tenant_id, plugin_id=plugin_id,
            suspension_id=suspension_id, reason=reason, created_at=now,
            expires_at=self.retention.expires_at(tenant_id, severity, now),
            counts={name: len(items) for name, items in sections.items()}, created_by=actor, severity=severity,
        )
        topic = self.settings.topics.evidence
        key = f"{tenant_id}/{plugin_id}".encode()
        await retry_forever(f"evidence to {topic}", lambda: self.services.topics.send(topic, orjson.dumps(record), key=key))
        await retry_forever("evidence to ClickHouse", lambda: self.services.clickhouse.insert_rows(
            "evidence", [evidence_row(record)]))
        await self.services.audit.record("evidence.write", actor, tenant_id=tenant_id, plugin_id=plugin_id,
                                         target=evidence_id, details={"sha256": stored.sha256, "size": stored.size,
                                                                      "suspension_id": suspension_id})
        log.info("evidence %s of %s/%s stored (%d bytes)", evidence_id, tenant_id, plugin_id, stored.size)
        return record

    async def _evidence_sections(self, tenant_id: str, plugin_id: str, now: int) -> dict[str, list[dict[str, Any]]]:
        key = f"{tenant_id}/{plugin_id}"
        lo = now - self.settings.window.ms
        sections: dict[str, list[dict[str, Any]]] = {signal: [] for signal in SIGNALS}
        for entry in self.services.tail.slice(key, lo, now + 60_000).entries:
            sections[entry.signal].append({"corrected_ts": entry.corrected_ts, "raw_ts": entry.raw_ts,
                                           "source": entry.source, "record": entry.data()})
        if not any(sections.values()):  # nothing in this worker's window: what ClickHouse holds
            for signal in SIGNALS:
                try:
                    rows = await self.services.clickhouse.telemetry(signal, tenant_id, plugin_id, lo, now, 5_000)
                except Exception as exc:
                    log.warning("evidence: ClickHouse %s of %s not read: %s", signal, key, exc)
                    continue
                sections[signal] = [{"record": orjson.loads(raw)} for raw in rows]
        versions, flags, hosts = set(), {}, set()
        for items in sections.values():
            for item in items:
                record = item["record"]
                attrs = record.get("attributes") if isinstance(record.get("attributes"), dict) else {}
                for value in (record.get("plugin_version"), attrs.get("service.version")):
                    if isinstance(value, str):
                        versions.add(value)
                if isinstance(record.get("host"), str):
                    hosts.add(record["host"])
                for source in (record.get("feature_flags"), attrs.get("feature_flags")):
                    if isinstance(source, dict):
                        flags.update(source)
        sections["environment"] = [{"plugin_versions": sorted(versions), "hosts": sorted(hosts),
                                    "feature_flags": flags}]
        return sections

    async def _claim_number(self) -> int:
        """A number no other worker gets: the offset of a claim on the one-partition numbers topic."""
        topic = self.settings.topics.evidence_numbers
        metadata = await (await self.services.topics.producer.send(topic, b"{}", partition=0))
        return metadata.offset + 1

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)

        def done(finished: asyncio.Task[Any]) -> None:
            self._background.discard(finished)
            if not finished.cancelled() and finished.exception() is not None:
                log.error("suspension background work failed: %r", finished.exception())

        task.add_done_callback(done)


def _json_object(raw: bytes | None, what: str) -> dict[str, Any]:
    try:
        value = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        raise InvalidEventError(f"{what} must be a JSON object") from None
    if not isinstance(value, dict):
        raise InvalidEventError(f"{what} must be a JSON object")
    return value
