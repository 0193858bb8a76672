"""What a gateway's registry keeps of an accepted request, and the outcome a sweeper
writes from it."""

from __future__ import annotations

from gateway.audit.records import AuditEntry
from gateway.custody import GATEWAY_LOST, lost_outcome, registry_value


def test_the_lost_outcome_names_the_request_as_its_accepted_record_did() -> None:
    accepted = AuditEntry(
        request_id="req-1",
        event="accepted",
        endpoint="/api/chat",
        status=202,
        tenant_id="acme",
        user_id="u-1",
        key_id="k-1",
        model="llama",
        prompt_sha256="ab" * 32,
        prompt_sealed={"sealed": "not kept in Redis"},
    )

    outcome = lost_outcome(registry_value(accepted))

    assert outcome == AuditEntry(
        request_id="req-1",
        event="outcome",
        endpoint="/api/chat",
        status=502,
        tenant_id="acme",
        user_id="u-1",
        key_id="k-1",
        model="llama",
        prompt_sha256="ab" * 32,
        error_code=GATEWAY_LOST,
    )
    assert b"sealed" not in registry_value(accepted)


def test_a_request_without_a_user_or_key_keeps_them_empty() -> None:
    accepted = AuditEntry(
        request_id="req-2", event="accepted", endpoint="/v1/embeddings", status=202
    )

    outcome = lost_outcome(registry_value(accepted))

    assert (outcome.user_id, outcome.key_id, outcome.tenant_id) == (None, None, None)
    assert (outcome.request_id, outcome.endpoint) == ("req-2", "/v1/embeddings")
