"""The compliance API, for the ``auditor`` and ``platform_admin`` roles.

GET    /audit/records          search (time range, tenant, user, model, event, outcome,
                               endpoint, request id), in log order, cursor-paginated
GET    /audit/records/{seq}    one record with its inclusion proof under a signed checkpoint
GET    /audit/export           the search as JSONL with proofs (``enclave audit verify-export``)
                               or as CSV (``format=csv``)
POST   /audit/verify           recompute chain and tree, check every checkpoint
GET    /audit/consistency      RFC 6962 consistency proof between two tree sizes (checkpoints)
DELETE /audit/subjects/{id}    erase a data subject's sealed content (crypto-shredding;
                               auditor + platform_admin; ``reason`` required)
PUT    /audit/subjects/{id}/hold, DELETE …/hold   apply or lift a legal hold on a subject

An auditor sees its own tenant's records; a platform_admin sees every tenant's. Acting on the
log (erasure, legal holds) needs both roles: running the platform alone does not let anyone
destroy or freeze evidence (separation of duties). Every call is itself an audit record
(event ``audit``), written before the answer: who watched the watchers.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from litestar import Controller, Request, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Stream

from gateway.api.admin.pages import DEFAULT_LIMIT, MAX_LIMIT
from gateway.api.admin.scope import BEARER
from gateway.api.intake import Intake, authorized_call, record_action
from gateway.audit import proofs
from gateway.audit.compliance import Compliance, record_view
from gateway.audit.content import LegalHold
from gateway.audit.search import MAX_SEQ, Filters, decode_cursor, encode_cursor, find, search
from gateway.auth.authenticator import Authenticator
from gateway.auth.principal import Principal
from gateway.errors import Conflict, InvalidRequest, NotFound, PermissionDenied
from gateway.inference import InferenceService

RECORDS = "/audit/records"
SUBJECT = "/audit/subjects/{subject:str}"
EXPORT = "/audit/export"
VERIFY = "/audit/verify"
CONSISTENCY = "/audit/consistency"
EVENTS = frozenset({"accepted", "outcome", "refused", "admin", "audit"})
MAX_FILTER_LENGTH = 255


@dataclass(frozen=True)
class AuditorScope:
    principal: Principal

    @property
    def tenant_id(self) -> str | None:
        """None: every tenant (a platform_admin)."""
        return self.principal.reach

    @property
    def may_act(self) -> bool:
        """Erase a subject's content, apply or lift a legal hold: auditor and platform_admin."""
        return self.principal.is_platform_admin and "auditor" in self.principal.roles

    def covers(self, tenant_id: str | None) -> bool:
        return self.principal.reaches(tenant_id)


def require_auditor(principal: Principal) -> AuditorScope:
    if "auditor" not in principal.roles and not principal.is_platform_admin:
        raise PermissionDenied("The compliance API requires the auditor or platform_admin role.")
    return AuditorScope(principal)


def auditor_call(
    request: Request[Any, Any, Any],
    inference: InferenceService,
    authenticator: Authenticator,
    endpoint: str,
) -> contextlib.AbstractAsyncContextManager[tuple[Intake, AuditorScope]]:
    """Authenticate an auditor or a platform_admin; every refusal raised inside the block is
    audited."""
    return authorized_call(request, inference, authenticator, endpoint, "audit", require_auditor)


def _time(value: str | None, param: str) -> datetime | None:
    """The time in UTC (naive times are UTC); one whose UTC form is outside the years 1 to
    9999 (``0001-01-01T00:00:00+01:00``) is refused like any other bad time."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
        return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidRequest(
            f"{param} must be an ISO 8601 time such as 2026-01-31T12:00:00Z.", param=param
        ) from None


def _text(value: str | None, param: str) -> str | None:
    if value is not None and (len(value) > MAX_FILTER_LENGTH or not value.isprintable()):
        raise InvalidRequest(
            f"{param} must be printable and at most {MAX_FILTER_LENGTH} characters.", param=param
        )
    return value


def filters_of(query: dict[str, str], scope: AuditorScope, compliance: Compliance) -> Filters:
    """The search filters from the query string, within the auditor's tenant."""
    tenant = _text(query.get("tenant"), "tenant")
    if scope.tenant_id is not None:
        if tenant is not None and tenant != scope.tenant_id:
            raise PermissionDenied("You may search only your own tenant's records.")
        tenant = scope.tenant_id
    event = query.get("event")
    if event is not None and event not in EVENTS:
        raise InvalidRequest(f"event must be one of {', '.join(sorted(EVENTS))}.", param="event")
    outcome = query.get("outcome")
    if outcome not in (None, "success", "error"):
        raise InvalidRequest("outcome must be success or error.", param="outcome")
    user = _text(query.get("user"), "user")
    return Filters(
        since=_time(query.get("since"), "since"),
        until=_time(query.get("until"), "until"),
        tenant_id=tenant,
        user=compliance.log.pseudonym(user) if user is not None else None,
        model=_text(query.get("model"), "model"),
        event=event,
        outcome=outcome,  # type: ignore[arg-type]  # checked above
        endpoint=_text(query.get("endpoint"), "endpoint"),
        request_id=_text(query.get("request_id"), "request_id"),
    )


def _size(query: dict[str, str], param: str) -> int:
    raw = query.get(param, "")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or int(raw) > MAX_SEQ:
        raise InvalidRequest(f"{param} must be a tree size (a whole number).", param=param)
    return int(raw)


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 4 or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be between 1 and {MAX_LIMIT}.", param="limit")
    return int(raw)


async def search_log(
    inference: InferenceService,
    intake: Intake,
    scope: AuditorScope,
    compliance: Compliance,
    query: dict[str, str],
) -> dict[str, Any]:
    """One page of the search ``query`` describes, within the auditor's reach; the search
    is recorded before it is shown (the API and the console both answer with this)."""
    filters = filters_of(query, scope, compliance)
    limit = _limit(query.get("limit"))
    cursor = query.get("cursor")
    after = decode_cursor(cursor) if cursor is not None else None
    async with compliance.engine.connect() as conn:
        found, has_more = await search(conn, filters, after=after, limit=limit)
    await record_action(
        inference,
        intake,
        target="audit:search",
        change={"filters": filters.described(), "results": len(found)},
        event="audit",
    )
    return {
        "object": "list",
        "data": [record_view(f) for f in found],
        "has_more": has_more,
        "next_cursor": encode_cursor(found[-1].seq) if has_more and found else None,
    }


async def look_up_record(
    inference: InferenceService,
    intake: Intake,
    scope: AuditorScope,
    compliance: Compliance,
    seq: int,
) -> dict[str, Any]:
    """Record ``seq`` with its inclusion proof, if within the auditor's reach (else as if
    it did not exist); the look is recorded before it is shown."""
    async with compliance.engine.connect() as conn:
        found = await find(conn, seq)
    if found is None or not scope.covers(found.tenant_id):
        raise NotFound(f"No audit record {seq}.", code="record_not_found")
    await record_action(inference, intake, target=f"audit:record:{seq}", change={}, event="audit")
    return await compliance.record_with_proof(found)


async def export_search(
    inference: InferenceService,
    intake: Intake,
    scope: AuditorScope,
    compliance: Compliance,
    query: dict[str, str],
) -> Stream:
    """The search's records as JSONL with a signed checkpoint and inclusion proofs
    (``format=jsonl``, the default) or as CSV (``format=csv``); the export is recorded
    before it starts (the API and the console both answer with this)."""
    kind: Literal["jsonl", "csv"] | str = query.get("format", "jsonl")
    if kind not in ("jsonl", "csv"):
        raise InvalidRequest("format must be jsonl or csv.", param="format")
    filters = filters_of(query, scope, compliance)
    described: dict[str, Any] = {"filters": filters.described(), "format": kind}
    if kind == "csv":
        await record_action(
            inference, intake, target="audit:export", change=described, event="audit"
        )
        return Stream(
            compliance.export_csv(filters),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": 'attachment; filename="audit.csv"'},
        )
    head = await compliance.export_head()
    if head is None:
        raise Conflict(
            "No signed checkpoint exists yet; configure checkpoint signing "
            "(ENCLAVE_AUDIT__SIGNING_KEY_FILE) to export verifiable records.",
            code="no_checkpoint",
        )
    described["tree_size"] = head.size
    await record_action(inference, intake, target="audit:export", change=described, event="audit")
    return Stream(
        compliance.export_jsonl(head, filters),
        media_type="application/x-ndjson",
        headers={"content-disposition": 'attachment; filename="audit.jsonl"'},
    )


async def verify_whole_log(
    inference: InferenceService, intake: Intake, compliance: Compliance
) -> dict[str, Any]:
    """Recompute the chain and the tree and check every stored checkpoint, as ``enclave
    audit verify`` does; the run and its result are recorded (API and console)."""
    report = await compliance.verify()
    if report is None:
        raise Conflict(
            "No verifier key is configured on this gateway "
            "(ENCLAVE_AUDIT__VERIFIER_KEY or ENCLAVE_AUDIT__SIGNING_KEY_FILE).",
            code="no_verifier_key",
        )
    fault = report.fault
    result: dict[str, Any] = {
        "ok": fault is None,
        "records": report.size,
        "purged": report.purged,
        "checkpoints": report.checkpoints,
        "fault": None
        if fault is None
        else {"reason": fault.reason, "seq": fault.seq, "first_possible": fault.first_possible},
    }
    await record_action(
        inference,
        intake,
        target="audit:verify",
        change={"ok": result["ok"], "records": report.size},
        event="audit",
    )
    return result


class ComplianceController(Controller):
    tags = ("audit",)
    security = (BEARER,)

    @get(RECORDS)
    async def search_records(
        self,
        request: Request[Any, Any, Any],
        inference: NamedDependency[InferenceService],
        authenticator: NamedDependency[Authenticator],
        compliance: NamedDependency[Compliance],
    ) -> dict[str, Any]:
        """Search the log. Query: since, until (ISO 8601), tenant, user (a user id), model,
        event, outcome (success|error), endpoint, request_id, limit (1-1000), cursor."""
        async with auditor_call(request, inference, authenticator, RECORDS) as (intake, scope):
            return await search_log(
                inference, intake, scope, compliance, dict(request.query_params)
            )

    @get(RECORDS + "/{seq:int}")
    async def get_record(
        self,
        request: Request[Any, Any, Any],
        seq: FromPath[int],
        inference: NamedDependency[InferenceService],
        authenticator: NamedDependency[Authenticator],
        compliance: NamedDependency[Compliance],
    ) -> dict[str, Any]:
        """One record with its inclusion proof under the newest signed checkpoint."""
        async with auditor_call(request, inference, authenticator, RECORDS) as (intake, scope):
            return await look_up_record(inference, intake, scope, compliance, seq)

    @get(EXPORT)
    async def export(
        self,
        request: Request[Any, Any, Any],
        inference: NamedDependency[InferenceService],
        authenticator: NamedDependency[Authenticator],
        compliance: NamedDependency[Compliance],
    ) -> Stream:
        """The search's records as JSONL with a signed checkpoint and inclusion proofs
        (``format=jsonl``, the default), or as CSV (``format=csv``). Same filters."""
        async with auditor_call(request, inference, authenticator, EXPORT) as (intake, scope):
            return await export_search(
                inference, intake, scope, compliance, dict(request.query_params)
            )

    @get(CONSISTENCY)
    async def consistency(
        self,
        request: Request[Any, Any, Any],
        inference: NamedDependency[InferenceService],
        authenticator: NamedDependency[Authenticator],
        compliance: NamedDependency[Compliance],
    ) -> dict[str, Any]:
        """The proof that the tree of ``new_size`` records extends that of ``old_size``
        (query parameters): with two checkpoints, anyone can check that the later one
        kept every record the earlier one signed, without the log."""
        async with auditor_call(request, inference, authenticator, CONSISTENCY) as (intake, _):
            query = dict(request.query_params)
            old_size, new_size = _size(query, "old_size"), _size(query, "new_size")
            size = await compliance.tree_size()
            if not 0 < old_size <= new_size <= size:
                raise InvalidRequest(
                    f"Sizes must satisfy 0 < old_size <= new_size <= {size} (the log's size).",
                    param="new_size" if old_size > 0 else "old_size",
                )
            async with compliance.engine.connect() as conn:
                proof = await proofs.consistency_proof(conn, old_size, new_size)
            await record_action(
                inference,
                intake,
                target="audit:consistency",
                change={"old_size": old_size, "new_size": new_size},
                event="audit",
            )
        return {"old_size": old_size, "new_size": new_size, "proof": [h.hex() for h in proof]}

    @post(VERIFY, status_code=200)
    async def verify(
        self,
        request: Request[Any, Any, Any],
        inference: NamedDependency[InferenceService],
        authenticator: NamedDependency[Authenticator],
        compliance: NamedDependency[Compliance],
    ) -> dict[str, Any]:
        """Recompute the chain and the tree and check every stored checkpoint's signature
        and consistency, as ``enclave audit verify`` does."""
        async with auditor_call(request, inference, authenticator, VERIFY) as (intake, _):
            return await verify_whole_log(inference, intake, compliance)


def _reason(fields: dict[str, str]) -> str:
    reason = (fields.get("reason") or "").strip()
    if not reason or len(reason) > MAX_FILTER_LENGTH or not reason.isprintable():
        raise InvalidRequest(
            f"reason is required: printable, at most {MAX_FILTER_LENGTH} characters.",
            param="reason",
        )
    return reason


def _officer_reason(scope: AuditorScope, fields: dict[str, str]) -> str:
    """The act's reason, once it is clear an organisation-wide auditor acts."""
    _require_compliance_officer(scope)
    return _reason(fields)


async def _record_act(
    inference: InferenceService, intake: Intake, subject: str, action: str, reason: str
) -> None:
    """The erasure or hold, recorded before it is done."""
    await record_action(
        inference,
        intake,
        target=f"user:{subject}",
        change={"action": action, "reason": reason},
        event="audit",
    )


async def erase_subject_content(
    inference: InferenceService,
    intake: Intake,
    scope: AuditorScope,
    compliance: Compliance,
    subject: str,
    fields: dict[str, str],
) -> dict[str, Any]:
    """Shred every content key of the user ``subject``, with the ``reason`` in ``fields``;
    LegalHold (409) while a hold covers them, refused before anything is recorded as done
    (the API and the console both answer with this)."""
    reason = _officer_reason(scope, fields)
    pseudonym = compliance.log.pseudonym(subject)
    if await compliance.vault.is_held(pseudonym):
        raise LegalHold("A legal hold covers this data subject; lift it before erasing.")
    await _record_act(inference, intake, subject, "erase_subject", reason)
    shredded = await compliance.vault.erase(pseudonym, reason)
    return {"object": "audit.erasure", "subject": subject, "keys_shredded": shredded}


async def apply_legal_hold(
    inference: InferenceService,
    intake: Intake,
    scope: AuditorScope,
    compliance: Compliance,
    subject: str,
    fields: dict[str, str],
) -> dict[str, Any]:
    """Hold the subject's content: no erasure nor retention shredding until it is lifted."""
    reason = _officer_reason(scope, fields)
    await _record_act(inference, intake, subject, "apply_legal_hold", reason)
    await compliance.vault.hold(compliance.log.pseudonym(subject), reason)
    return {"object": "audit.legal_hold", "subject": subject, "held": True}


async def lift_legal_hold(
    inference: InferenceService,
    intake: Intake,
    scope: AuditorScope,
    compliance: Compliance,
    subject: str,
    fields: dict[str, str],
) -> dict[str, Any]:
    """Lift the subject's own legal hold (a tenant's hold is the tenant admin API's)."""
    reason = _officer_reason(scope, fields)
    await _record_act(inference, intake, subject, "lift_legal_hold", reason)
    await compliance.vault.release(compliance.log.pseudonym(subject))
    return {"object": "audit.legal_hold", "subject": subject, "held": False}


class SubjectsController(Controller):
    """Erasure and legal holds: an organisation-wide compliance officer's acts."""

    tags = ("audit",)
    security = (BEARER,)

    @delete(SUBJECT, status_code=200)
    async def erase_subject(
        self,
        request: Request[Any, Any, Any],
        subject: FromPath[str],
        inference: NamedDependency[InferenceService],
        authenticator: NamedDependency[Authenticator],
        compliance: NamedDependency[Compliance],
    ) -> dict[str, Any]:
        """Destroy every content key of the user ``subject`` (their id): their sealed
        prompts and answers become unreadable; records, chain and proofs stay valid.
        409 legal_hold while a hold covers them. Query: ``reason`` (required)."""
        async with auditor_call(request, inference, authenticator, SUBJECT) as (intake, scope):
            return await erase_subject_content(
                inference, intake, scope, compliance, subject, dict(request.query_params)
            )

    @put(SUBJECT + "/hold", status_code=200)
    async def hold_subject(
        self,
        request: Request[Any, Any, Any],
        subject: FromPath[str],
        inference: NamedDependency[InferenceService],
        authenticator: NamedDependency[Authenticator],
        compliance: NamedDependency[Compliance],
    ) -> dict[str, Any]:
        """Apply a legal hold: no erasure nor retention shredding until it is lifted."""
        async with auditor_call(request, inference, authenticator, SUBJECT) as (intake, scope):
            return await apply_legal_hold(
                inference, intake, scope, compliance, subject, dict(request.query_params)
            )

    @delete(SUBJECT + "/hold", status_code=200)
    async def release_subject(
        self,
        request: Request[Any, Any, Any],
        subject: FromPath[str],
        inference: NamedDependency[InferenceService],
        authenticator: NamedDependency[Authenticator],
        compliance: NamedDependency[Compliance],
    ) -> dict[str, Any]:
        """Lift a subject's legal hold. Query: ``reason`` (required)."""
        async with auditor_call(request, inference, authenticator, SUBJECT) as (intake, scope):
            return await lift_legal_hold(
                inference, intake, scope, compliance, subject, dict(request.query_params)
            )


def _require_compliance_officer(scope: AuditorScope) -> None:
    if not scope.may_act:
        raise PermissionDenied("Erasure and legal holds need the auditor and platform_admin roles.")
