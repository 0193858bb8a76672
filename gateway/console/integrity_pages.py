"""The console's integrity page, for the ``auditor`` role: the newest signed checkpoints
with their signatures, and a button that verifies the whole log as ``enclave audit verify``
does (the compliance API's ``POST /audit/verify``, the same code and the same record).

GET  /console/audit/integrity   the newest checkpoints and the button
POST /console/audit/integrity   verify the log; the same page, with the result
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.response import Template

from gateway.api.compliance import require_auditor, verify_whole_log
from gateway.api.intake import Intake, record_action
from gateway.audit.compliance import Compliance
from gateway.console.access import ConsoleServices, Visit, console_call
from gateway.inference import InferenceService

INTEGRITY_PAGE = "/console/audit/integrity"
CHECKPOINTS_SHOWN = 10


def note_parts(note: str) -> tuple[str, list[str]]:
    """A signed note's text and its signature lines (C2SP signed-note: a blank line
    separates them)."""
    split = note.rfind("\n\n")
    if split < 0:
        return note, []
    return note[: split + 1], note[split + 2 :].splitlines()


async def integrity_page(
    inference: InferenceService,
    intake: Intake,
    compliance: Compliance,
    visit: Visit,
    **page: Any,
) -> dict[str, Any]:
    """The newest checkpoints, each with whether its signature holds; the look is recorded
    before it is shown."""
    stored = await compliance.recent_checkpoints(CHECKPOINTS_SHOWN)
    await record_action(
        inference,
        intake,
        target="audit:checkpoints",
        change={"shown": [c.size for c in stored]},
        event="audit",
    )
    checkpoints = [
        {
            "size": c.size,
            "created_at": c.created_at.isoformat(timespec="seconds"),
            "text": note_parts(c.note)[0],
            "signatures": note_parts(c.note)[1],
            "is_signed": compliance.is_signed(c.note),
        }
        for c in stored
    ]
    key_id = compliance.verifier.key_id if compliance.verifier else None
    return visit.context(
        checkpoints=checkpoints,
        key_id=key_id,
        tree_size=await compliance.tree_size(),
        **page,
    )


class IntegrityPageController(Controller):
    path = INTEGRITY_PAGE

    @get()
    async def integrity(
        self,
        request: Request[Any, Any, Any],
        console: NamedDependency[ConsoleServices],
        compliance: NamedDependency[Compliance],
    ) -> Template:
        async with console_call(request, console, INTEGRITY_PAGE, require_auditor) as (
            intake,
            _,
            visit,
        ):
            context = await integrity_page(console.inference, intake, compliance, visit)
        return Template("audit_integrity.html.jinja", context=context)

    @post(status_code=200)
    async def verify(
        self,
        request: Request[Any, Any, Any],
        console: NamedDependency[ConsoleServices],
        compliance: NamedDependency[Compliance],
    ) -> Template:
        """Recompute chain and tree and check every checkpoint; the page with the result."""
        async with console_call(request, console, INTEGRITY_PAGE, require_auditor) as (
            intake,
            _,
            visit,
        ):
            result = await verify_whole_log(console.inference, intake, compliance)
            context = await integrity_page(
                console.inference, intake, compliance, visit, result=result
            )
        return Template("audit_integrity.html.jinja", context=context)
