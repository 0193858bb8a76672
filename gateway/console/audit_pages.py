"""The console's audit pages, for the ``auditor`` role: the compliance API's search, export and
record view (``gateway.api.compliance``), rendered; the same reach, the same records of
every look.

GET /console/audit/records          search form, results, pages
GET /console/audit/records/{seq}    one record, its inclusion proof and whether it verifies
GET /console/audit/export           the search as a download: JSONL with proofs, or CSV
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Stream, Template

from gateway.api.compliance import export_search, look_up_record, require_auditor, search_log
from gateway.audit.compliance import Compliance
from gateway.console.access import ConsoleServices, console_call

RECORDS_PAGE = "/console/audit/records"
RECORD_PAGE = "/console/audit/records/{seq}"
EXPORT = "/console/audit/export"
EXPORT_FORMATS = ("jsonl", "csv")
PAGE_SIZE = 50
FILTERS = ("since", "until", "tenant", "user", "model", "event", "outcome", "endpoint")
SEARCH_PARAMS = (*FILTERS, "request_id", "cursor", "limit")
COLUMNS = ("time", "event", "endpoint", "status", "model", "tenant_id", "request_id")


def search_query(params: dict[str, str]) -> dict[str, str]:
    """The search the form asks for: its non-empty fields; pages of PAGE_SIZE unless a
    ``limit`` is asked for (the compliance API bounds it)."""
    query = {name: params[name].strip() for name in SEARCH_PARAMS if params.get(name, "").strip()}
    return {"limit": str(PAGE_SIZE), **query}


def next_page_url(query: dict[str, str], cursor: str | None) -> str | None:
    """The same search, continued after ``cursor``; None on the last page."""
    if cursor is None:
        return None
    kept = {name: value for name, value in query.items() if name != "cursor"}
    if kept.get("limit") == str(PAGE_SIZE):
        del kept["limit"]
    return f"{RECORDS_PAGE}?{urlencode({**kept, 'cursor': cursor})}"


def first_page_url(query: dict[str, str]) -> str:
    kept = {k: v for k, v in query.items() if k != "cursor" and (k, v) != ("limit", str(PAGE_SIZE))}
    return f"{RECORDS_PAGE}?{urlencode(kept)}" if kept else RECORDS_PAGE


def export_urls(query: dict[str, str]) -> dict[str, str]:
    """Format -> the download of the whole search (every page of it, not only this one)."""
    kept = {name: value for name, value in query.items() if name not in ("cursor", "limit")}
    return {kind: f"{EXPORT}?{urlencode({**kept, 'format': kind})}" for kind in EXPORT_FORMATS}


def shown(value: Any) -> str:
    """A record field as text: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


class AuditPagesController(Controller):
    path = "/console/audit"

    @get("/records")
    async def records(
        self,
        request: Request[Any, Any, Any],
        console: NamedDependency[ConsoleServices],
        compliance: NamedDependency[Compliance],
    ) -> Template:
        async with console_call(request, console, RECORDS_PAGE, require_auditor) as (
            intake,
            scope,
            visit,
        ):
            query = search_query(dict(request.query_params))
            listing = await search_log(console.inference, intake, scope, compliance, query)
        rows = [
            {"seq": view["seq"], **{c: shown(view["fields"].get(c, "")) for c in COLUMNS}}
            for view in listing["data"]
        ]
        return Template(
            "audit_records.html.jinja",
            context=visit.context(
                query=query,
                rows=rows,
                columns=COLUMNS,
                custom_limit=query["limit"] if query["limit"] != str(PAGE_SIZE) else None,
                next_url=next_page_url(query, listing["next_cursor"]),
                first_url=first_page_url(query) if "cursor" in query else None,
                own_tenant=scope.tenant_id,
                exports=export_urls(query),
            ),
        )

    @get("/export")
    async def export(
        self,
        request: Request[Any, Any, Any],
        console: NamedDependency[ConsoleServices],
        compliance: NamedDependency[Compliance],
    ) -> Stream:
        """The compliance API's export of the same search, as a file to save."""
        params = dict(request.query_params)
        async with console_call(request, console, EXPORT, require_auditor) as (intake, scope, _):
            query = {**search_query(params), "format": params.get("format", "jsonl")}
            return await export_search(console.inference, intake, scope, compliance, query)

    @get("/records/{seq:int}")
    async def record(
        self,
        request: Request[Any, Any, Any],
        seq: FromPath[int],
        console: NamedDependency[ConsoleServices],
        compliance: NamedDependency[Compliance],
    ) -> Template:
        async with console_call(request, console, RECORD_PAGE, require_auditor) as (
            intake,
            scope,
            visit,
        ):
            view = await look_up_record(console.inference, intake, scope, compliance, seq)
        return Template(
            "audit_record.html.jinja",
            context=visit.context(
                view=view,
                fields=[(name, shown(value)) for name, value in sorted(view["fields"].items())],
                verified_size=compliance.verified_checkpoint(view),
            ),
        )
