"""Plugin suspension in a worker (DESIGN §7): requests, approvals, commands, acks, timeouts,
notifications, evidence and audit around the pure state machine of ``plugwatch.suspension.machine``.

Every change goes through the plugin's one writer (``plugwatch.agents.suspension_log``): the API,
the risk-signal and ack consumers and the command deadlines send an op to ``plugin.suspend.ops``;
the worker that holds the plugin's partition applies it. There the plugin's latest record goes
through one machine event, and the effects it returns are carried out in order -- the command first
(``plugin.suspend.command``, awaited: that is "the command is out" for ``request_to_command``), then
the record's new version on ``plugin.suspend.state`` (which every worker reads), then the audit
record; ClickHouse ``suspensions`` gets the versions behind the work, notifications and the evidence
snapshot follow in the background, and none of them holds up the suspension.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

import orjson

from plugwatch import metrics
from plugwatch.agents.suspension_log import (
    OpsMember,
    StateReplica,
    plugin_key,
    reply_message,
    state_message,
)
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
from plugwatch.sinks.topics import partition_of
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


class SuspensionPending(SuspensionError):
    """The plugin's writer did not answer in time; the op stays queued and will be applied."""

    code = "pending"


class SuspensionRefused(SuspensionError):
    """An error the plugin's writer answered with (its code is the original error's)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


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
        self._stored_numbers: int | None = None  # the highest stored evidence number, read at the first claim
        # Every record read from the state topic (and ClickHouse): suspension_id -> (record, version).
        self.records: dict[str, tuple[Suspension, int]] = {}
        self.latest: dict[tuple[str, str], str] = {}  # plugin -> its latest suspension or resume id
        self.partitions = 0  # of the ops and state topics
        self.owned: set[int] = set()  # partitions whose ops this worker applies
        self.joined = False  # the ops group gave this worker its first (maybe empty) share
        self._rows: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._timers: dict[str, tuple[asyncio.TimerHandle, int]] = {}  # command_id -> (timer, partition)
        self._background: set[asyncio.Task[Any]] = set()
        topics = settings.topics
        self.replica = StateReplica(settings.bootstrap_servers, topics.suspend_state, self._on_state)
        self.ops = OpsMember(settings, topics.suspend_ops, self._apply_op, on_assigned=self._assigned,
                             on_revoked=self._revoked)
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
        # Every plugin's latest record from ClickHouse (what outlived the broker), then the state
        # topic over it: newer versions win. A plugin missing in both has none.
        for data, version in await self.services.clickhouse.latest_suspensions():
            self._remember(Suspension.from_dict(data), version)
        self.partitions = await self.replica.start()
        topics = self.settings.topics
        ops_partitions = await self.services.topics.partition_count(topics.suspend_ops)
        if ops_partitions != self.partitions:
            raise RuntimeError(f"topics {topics.suspend_ops} and {topics.suspend_state} must have the same number "
                               f"of partitions (they have {ops_partitions} and {self.partitions})")
        self._writer = asyncio.ensure_future(self._write_rows())
        self._spawn(self._expire_evidence())
        await self.ops.start()
        await self.acks.start()
        await self.signals.start()

    async def stop(self) -> None:
        await self.signals.stop()
        await self.acks.stop()
        await self.ops.stop()
        await self.replica.stop()
        for handle, _ in self._timers.values():
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
        """A suspend or resume request; the new or merged record's view once the plugin's writer applied it."""
        return await self._submit({
            "op": "request", "kind": kind, "tenant_id": tenant_id, "plugin_id": plugin_id, "force": force,
            "requester": requester, "reason": reason, "severity": severity, "source": source, "mode": mode,
            "request_id": request_id or f"{source}-{uuid.uuid4().hex[:12]}", "at_ms": self.now_ms()})

    async def approve(self, suspension_id: str, principal: str, roles: Any) -> dict[str, Any]:
        record = await self._by_id(suspension_id)
        return await self._submit({
            "op": "approve", "tenant_id": record.tenant_id, "plugin_id": record.plugin_id,
            "suspension_id": suspension_id, "principal": principal, "roles": list(roles), "at_ms": self.now_ms()})

    async def reject(self, suspension_id: str, principal: str, roles: Any, reason: str) -> dict[str, Any]:
        record = await self._by_id(suspension_id)
        return await self._submit({
            "op": "reject", "tenant_id": record.tenant_id, "plugin_id": record.plugin_id,
            "suspension_id": suspension_id, "principal": principal, "roles": list(roles), "reason": reason,
            "at_ms": self.now_ms()})

    async def _submit(self, op: dict[str, Any]) -> dict[str, Any]:
        """Send ``op`` to the plugin's writer and wait for its answer (read from the state topic)."""
        op_id = op["op_id"] = uuid.uuid4().hex
        op["reply"] = True
        answer = self.replica.expect(op_id)
        try:
            await self._send_op(op)
            timeout = self.settings.suspensions.reply_timeout_s
            try:
                reply = await asyncio.wait_for(answer, timeout)
            except asyncio.TimeoutError:
                raise SuspensionPending(f"op {op_id} is queued for {op['tenant_id']}/{op['plugin_id']} but was not "
                                        f"applied within {timeout:g} s; it will be") from None
        finally:
            self.replica.forget(op_id)
        if not reply.get("ok"):
            raise SuspensionRefused(str(reply.get("code") or "conflict"), str(reply.get("message") or "refused"))
        view: dict[str, Any] = reply["view"]
        return view

    async def _send_op(self, op: dict[str, Any]) -> None:
        topic = self.settings.topics.suspend_ops
        key = plugin_key(op["tenant_id"], op["plugin_id"])
        await retry_forever(f"op to {topic}", lambda: self.services.topics.send(topic, orjson.dumps(op), key=key))

    async def get(self, suspension_id: str) -> dict[str, Any] | None:
        """The suspension's view, with every change made before the call on any worker in it."""
        held = self.records.get(suspension_id)
        await self._read_up_to_now(None if held is None else {self._partition(held[0].tenant_id, held[0].plugin_id)})
        try:
            return self.view(await self._by_id(suspension_id))
        except SuspensionNotFound:
            return None

    async def plugin(self, tenant_id: str, plugin_id: str) -> dict[str, Any]:
        """The plugin's state (active, suspending, suspended, locked, resuming) and recent records."""
        await self._read_up_to_now({self._partition(tenant_id, plugin_id)})
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

    async def _read_up_to_now(self, partitions: set[int] | None) -> None:
        """Read the state topic's ``partitions`` (all when None) up to where they end now: a change
        that another worker's writer made before a read began is in the read (read your writes
        behind a load balancer). A broker that does not answer in time leaves the read to what this
        worker holds, and the log says so."""
        timeout = self.settings.suspensions.reply_timeout_s
        if not await self.replica.read_to_end(partitions, timeout):
            log.warning("suspensions: answering from what this worker holds; the state topic was not read to its "
                        "end within %g s", timeout)

    def view(self, record: Suspension) -> dict[str, Any]:
        return {**record.as_dict(), "elapsed": record.elapsed()}

    # Acks, timeouts and risk signals ----------------------------------------------------------

    async def _on_ack(self, kafka_record: Any) -> None:
        """An ack goes to its plugin's writer, keyed by the command's key (what the runtime echoes)
        or, for an ack keyed otherwise, by the plugin of its suspension."""
        ack = _json_object(kafka_record.value, "an ack")
        command_id = ack.get("command_id")
        if not isinstance(command_id, str) or command_id.count("-") < 3:
            raise InvalidEventError(f"ack with an unknown command_id {str(command_id)[:80]!r}")
        suspension_id = "-".join(command_id.split("-")[:2])
        tenant_id, _, plugin_id = (kafka_record.key or b"").decode(errors="replace").partition("/")
        if not tenant_id or plugin_id != ack.get("plugin_id"):
            try:
                record = await self._by_id(suspension_id)
            except SuspensionNotFound:
                raise InvalidEventError(f"ack for command {command_id} of no known suspension") from None
            tenant_id, plugin_id = record.tenant_id, record.plugin_id
        await self._send_op({"op": "ack", "tenant_id": tenant_id, "plugin_id": plugin_id,
                             "suspension_id": suspension_id, "ack": ack, "at_ms": self.now_ms()})

    async def _on_signal(self, kafka_record: Any) -> None:
        signal = _json_object(kafka_record.value, "a risk signal")
        masked, _ = self.services.masker.mask(signal)
        for name in ("signal_id", "tenant_id", "plugin_id", "requester"):
            if not isinstance(masked.get(name), str) or not masked[name]:
                raise InvalidEventError(f"a risk signal needs {name}")
        severity = str(masked.get("severity") or "high").lower()
        mode = masked.get("mode") if masked.get("mode") in ("wait", "force") else None
        await self._send_op({
            "op": "request", "kind": "suspend", "tenant_id": masked["tenant_id"], "plugin_id": masked["plugin_id"],
            "force": mode == "force", "requester": masked["requester"], "severity": severity, "mode": mode,
            "reason": str(masked.get("reason") or "risk signal"), "source": "signal",
            "request_id": masked["signal_id"], "at_ms": self.now_ms()})

    def _schedule(self, record: Suspension, command_id: str, deadline_ms: int) -> None:
        """On the plugin's writer: at the deadline, a timeout op (ignored if an ack came first)."""
        partition = self._partition(record.tenant_id, record.plugin_id)
        op = {"op": "timeout", "tenant_id": record.tenant_id, "plugin_id": record.plugin_id,
              "suspension_id": record.suspension_id, "command_id": command_id}

        def fire() -> None:
            self._timers.pop(command_id, None)
            self._spawn(self._send_op({**op, "at_ms": self.now_ms()}))

        delay = max(0.0, (deadline_ms - self.now_ms()) / 1000)
        self._timers[command_id] = (asyncio.get_running_loop().call_later(delay, fire), partition)

    # The plugin's writer -------------------------------------------------------------------------

    def _partition(self, tenant_id: str, plugin_id: str) -> int:
        """The plugin's partition of the ops and state topics (and so its writer)."""
        return partition_of(plugin_key(tenant_id, plugin_id), self.partitions)

    async def _assigned(self, partitions: set[int]) -> None:
        """Ops of ``partitions`` are ours from now: first everything their last writer wrote."""
        await self.replica.caught_up(partitions)
        self.owned |= partitions
        held = 0
        for record, version in list(self.records.values()):
            if self._partition(record.tenant_id, record.plugin_id) not in partitions:
                continue
            held += 1
            # ClickHouse may lack versions its writer had not inserted yet: they are written again
            # (the table keeps the newest version of a record).
            self._rows.put_nowait(self.services.clickhouse.suspension_row(record.as_dict(), version, record.updated_ms))
            command = record.current_command
            if record.is_open and command is not None and command.get("deadline"):
                self._schedule(record, command["command_id"], int(command["deadline"]))
        self.joined = True
        log.info("suspensions: applying the ops of partitions %s (%d records)", sorted(partitions), held)

    def _revoked(self, partitions: set[int]) -> None:
        self.owned -= partitions
        for command_id, (handle, partition) in list(self._timers.items()):
            if partition in partitions:
                handle.cancel()
                del self._timers[command_id]

    def _on_state(self, data: dict[str, Any], version: int) -> None:
        self._remember(Suspension.from_dict(data), version)

    async def _apply_op(self, kafka_record: Any) -> None:
        op = _json_object(kafka_record.value, "an op")
        tenant_id, plugin_id, name = op.get("tenant_id"), op.get("plugin_id"), op.get("op")
        if not isinstance(tenant_id, str) or not isinstance(plugin_id, str):
            await self.services.deadletter_record(kafka_record, InvalidEventError("an op needs tenant_id and plugin_id"))
            return
        try:
            record = await self._apply(op)
        except SuspensionError as exc:
            if op.get("source") == "signal":
                await self.services.audit.record("suspend.refused", str(op.get("requester")), tenant_id=tenant_id,
                                                 plugin_id=plugin_id, target=str(op.get("request_id")),
                                                 outcome="refused", details={"reason": str(exc)})
                log.warning("risk signal %s refused: %s", op.get("request_id"), exc)
            elif name == "ack":
                await self.services.deadletter_record(kafka_record, exc)
            if op.get("reply"):
                await self._reply(tenant_id, plugin_id, op, code=exc.code, message=str(exc))
            return
        except Exception as exc:
            log.exception("op %s for %s/%s failed", name, tenant_id, plugin_id)
            await self.services.deadletter_record(kafka_record, exc)
            if op.get("reply"):
                await self._reply(tenant_id, plugin_id, op, code="internal", message=f"the op failed: {exc}"[:300])
            return
        if op.get("reply"):
            await self._reply(tenant_id, plugin_id, op, view=self.view(record))

    async def _apply(self, op: dict[str, Any]) -> Suspension:
        tenant_id, plugin_id, name, at_ms = op["tenant_id"], op["plugin_id"], op.get("op"), op.get("at_ms")
        if name == "request":
            def event(existing: Suspension | None) -> machine.Result:
                common = dict(request_id=op["request_id"], tenant_id=tenant_id, plugin_id=plugin_id,
                              requester=op["requester"], reason=op.get("reason"), at_ms=at_ms, policy=self.policies)
                if op.get("kind") == "resume":
                    return machine.resume_request(existing, **common)
                return machine.request(existing, severity=op.get("severity"), mode=op.get("mode"),
                                       force=bool(op.get("force")), **common)
            return await self._change(tenant_id, plugin_id, None, event)
        suspension_id = op.get("suspension_id")
        if not isinstance(suspension_id, str):
            raise InvalidEventError(f"op {name!r} needs a suspension_id")
        if name == "approve":
            changed = await self._change(tenant_id, plugin_id, suspension_id, lambda s: machine.approve(
                s, principal=op["principal"], roles=op.get("roles") or (), at_ms=at_ms, policy=self.policies))
            if changed.kind == "resume" and changed.status != "requested":
                metrics.RESUME_APPROVAL_DURATION.observe(max(0, self.now_ms() - changed.created_ms) / 1000)
            return changed
        if name == "reject":
            return await self._change(tenant_id, plugin_id, suspension_id, lambda s: machine.reject(
                s, principal=op["principal"], roles=op.get("roles") or (), at_ms=at_ms, reason=op.get("reason")))
        if name == "ack":
            return await self._change(tenant_id, plugin_id, suspension_id, lambda s: machine.ack(s, op["ack"], at_ms))
        if name == "timeout":
            return await self._change(tenant_id, plugin_id, suspension_id,
                                      lambda s: machine.timeout(s, str(op.get("command_id")), self.now_ms()))
        raise InvalidEventError(f"unknown op {str(name)[:40]!r}")

    async def _reply(self, tenant_id: str, plugin_id: str, op: dict[str, Any], **answer: Any) -> None:
        key, value = reply_message(tenant_id, plugin_id, str(op.get("op_id")), **answer)
        await self._send_state(tenant_id, plugin_id, key, value)

    async def _send_state(self, tenant_id: str, plugin_id: str, key: bytes, value: bytes) -> None:
        topic = self.settings.topics.suspend_state
        partition = self._partition(tenant_id, plugin_id)
        await retry_forever(f"state to {topic}", lambda: self.services.topics.send(
            topic, value, key=key, partition=partition))

    # The one way records change (on the plugin's writer, one op of a plugin at a time) ----------

    async def _change(self, tenant_id: str, plugin_id: str, suspension_id: str | None, event: Any) -> Suspension:
        if suspension_id is None:
            current, version = await self._latest(tenant_id, plugin_id)
        else:
            current, version = await self._load(suspension_id)
            if (current.tenant_id, current.plugin_id) != (tenant_id, plugin_id):
                raise InvalidEventError(f"{suspension_id} is not a suspension of {tenant_id}/{plugin_id}")
        new, effects = event(current)
        if new is current and not effects:
            return new
        if current is None or new.suspension_id != current.suspension_id:
            version = 0
        for effect in effects:  # the command goes out first: that is what the requester waits for
            if isinstance(effect, SendCommand):
                await self._send_command(effect.command)
        data = new.as_dict()
        self._remember(new, version + 1)
        await self._send_state(tenant_id, plugin_id, *state_message(data, version + 1))
        self._rows.put_nowait(self.services.clickhouse.suspension_row(data, version + 1, new.updated_ms))
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
        """Hold ``record`` unless a newer version of it is held (the writer's own versions come
        back from the state topic). Suspensions are few: every one read is held."""
        sid, key = record.suspension_id, (record.tenant_id, record.plugin_id)
        held = self.records.get(sid)
        if held is not None and held[1] >= version:
            return
        self.records[sid] = (record, version)
        latest = self.latest.get(key)
        if latest is None or latest == sid or record.created_ms >= self.records[latest][0].created_ms:
            self.latest[key] = sid

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
            self._schedule(record, effect.command_id, effect.deadline_ms)
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
        """A number no other worker gets: the offset of a claim on the one-partition numbers topic.

        A topic younger than the stored evidence (the embedded broker forgets everything when it
        stops) would hand out numbers again: it is first filled up to the highest stored number."""
        topic = self.settings.topics.evidence_numbers
        producer = self.services.topics.producer
        number = (await (await producer.send(topic, b"{}", partition=0))).offset + 1
        if self._stored_numbers is None:
            try:
                self._stored_numbers = await self.services.clickhouse.highest_evidence_number()
            except Exception as exc:  # the evidence is not held up: checked again at the next claim
                log.warning("stored evidence numbers not read (%s); claim %d taken unchecked", exc, number)
                return number
        if number <= self._stored_numbers:
            log.warning("topic %s is behind the stored evidence (claim %d, stored up to %d): filling it up",
                        topic, number, self._stored_numbers)
            await self.services.topics.send_many(topic, [(None, b"{}")] * (self._stored_numbers - number))
            number = (await (await producer.send(topic, b"{}", partition=0))).offset + 1
        self._stored_numbers = 0  # from here on, every claim is past what was stored
        return number

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
