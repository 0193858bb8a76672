"""The console's data-subject page, for the ``auditor`` role: a subject's records (the
compliance API's search by user id) and whether a legal hold covers them; for an auditor
who is also ``platform_admin``, the compliance API's own hold, lift and erasure
(``gateway.api.compliance``): the same rules, the same records of every act.

GET  /console/audit/subjects?subject=ID           the subject's records and hold
POST /console/audit/subjects/{subject}/hold       apply a legal hold (a reason)
POST /console/audit/subjects/{subject}/release    lift it (a reason)
POST /console/audit/subjects/{subject}/erase      erase (a reason, the box ticked and the
                                                  subject's id typed again)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Template

from gateway.api.compliance import (
    AuditorScope,
    apply_legal_hold,
    erase_subject_content,
    lift_legal_hold,
    require_auditor,
    search_log,
)
from gateway.api.intake import Intake
from gateway.audit.compliance import Compliance
from gateway.console.access import ConsoleServices, Visit, console_call
from gateway.console.audit_pages import PAGE_SIZE, RECORDS_PAGE, shown
from gateway.errors import InvalidRequest
from gateway.inference import InferenceService

SUBJECTS_PAGE = "/console/audit/subjects"
SUBJECT_PAGE = "/console/audit/subjects/{subject}"
COLUMNS = ("time", "event", "endpoint", "status", "model", "request_id")
Act = Callable[
    [InferenceService, Intake, AuditorScope, Compliance, str, dict[str, str]],
    Awaitable[dict[str, Any]],
]


def confirmed_erasure(subject: str, form: dict[str, str]) -> None:
    """Refuse (400) an erasure whose box is not ticked or whose subject id, typed again,
    is not the one being erased."""
    if form.get("confirm") != "yes":
        raise InvalidRequest("Tick “I understand this cannot be undone” to erase.", param="confirm")
    if form.get("confirm_subject", "").strip() != subject:
        raise InvalidRequest(
            "Type the subject's id exactly as shown to confirm the erasure.",
            param="confirm_subject",
        )


async def subject_page(
    inference: InferenceService,
    intake: Intake,
    scope: AuditorScope,
    compliance: Compliance,
    visit: Visit,
    subject: str,
    **page: Any,
) -> dict[str, Any]:
    """The subject's first records (the search is recorded) and whether a hold covers
    them; an empty ``subject``: the form alone."""
    if not subject:
        return visit.context(subject="", **page)
    query = {"user": subject, "limit": str(PAGE_SIZE)}
    listing = await search_log(inference, intake, scope, compliance, query)
    rows = [
        {"seq": view["seq"], **{c: shown(view["fields"].get(c, "")) for c in COLUMNS}}
        for view in listing["data"]
    ]
    return visit.context(
        subject=subject,
        rows=rows,
        columns=COLUMNS,
        has_more=listing["has_more"],
        all_records_url=f"{RECORDS_PAGE}?{urlencode({'user': subject})}",
        is_held=await compliance.vault.is_held(compliance.log.pseudonym(subject)),
        may_act=scope.may_act,
        **page,
    )


async def act_on_subject(
    request: Request[Any, Any, Any],
    console: ConsoleServices,
    compliance: Compliance,
    subject: str,
    act: Act,
    *,
    is_irreversible: bool = False,
) -> Template:
    """One of the compliance API's acts on ``subject`` with the form's fields (an
    irreversible one only once confirmed); the page again, with what was done."""
    async with console_call(request, console, SUBJECT_PAGE, require_auditor) as (
        intake,
        scope,
        visit,
    ):
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        if is_irreversible:
            confirmed_erasure(subject, form)
        done = await act(console.inference, intake, scope, compliance, subject, form)
        context = await subject_page(
            console.inference, intake, scope, compliance, visit, subject, done=done
        )
    return Template("audit_subject.html.jinja", context=context)


class SubjectPagesController(Controller):
    path = SUBJECTS_PAGE

    @get()
    async def subject(
        self,
        request: Request[Any, Any, Any],
        console: NamedDependency[ConsoleServices],
        compliance: NamedDependency[Compliance],
    ) -> Template:
        async with console_call(request, console, SUBJECTS_PAGE, require_auditor) as (
            intake,
            scope,
            visit,
        ):
            subject = request.query_params.get("subject", "").strip()
            context = await subject_page(
                console.inference, intake, scope, compliance, visit, subject
            )
        return Template("audit_subject.html.jinja", context=context)

    @post("/{subject:str}/hold", status_code=200)
    async def hold(
        self,
        request: Request[Any, Any, Any],
        subject: FromPath[str],
        console: NamedDependency[ConsoleServices],
        compliance: NamedDependency[Compliance],
    ) -> Template:
        return await act_on_subject(
            request,
            console,
            compliance,
            subject,
            apply_legal_hold,
        )

    @post("/{subject:str}/release", status_code=200)
    async def release(
        self,
        request: Request[Any, Any, Any],
        subject: FromPath[str],
        console: NamedDependency[ConsoleServices],
        compliance: NamedDependency[Compliance],
    ) -> Template:
        return await act_on_subject(
            request,
            console,
            compliance,
            subject,
            lift_legal_hold,
        )

    @post("/{subject:str}/erase", status_code=200)
    async def erase(
        self,
        request: Request[Any, Any, Any],
        subject: FromPath[str],
        console: NamedDependency[ConsoleServices],
        compliance: NamedDependency[Compliance],
    ) -> Template:
        """Erase only once confirmed: the box ticked and the id typed again; a hold or a
        missing reason is refused as the API refuses it."""
        return await act_on_subject(
            request,
            console,
            compliance,
            subject,
            erase_subject_content,
            is_irreversible=True,
        )
