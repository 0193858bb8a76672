"""``enclave audit …``: make the checkpoint signing key, sign a checkpoint, verify the log."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from gateway.audit.checkpointer import write_checkpoint, write_once
from gateway.audit.checkpoints import (
    CheckpointError,
    SigningKeyError,
    Verifier,
    generate_signer,
    load_signer,
)
from gateway.audit.export import verify_export
from gateway.audit.verify import Report, verify_log
from gateway.db.session import create_engine
from gateway.settings import Settings


def cmd_keygen(settings: Settings, args: argparse.Namespace) -> int:
    """Write a new signing key (mode 0600, never overwritten); print its verifier key."""
    private, public = generate_signer(settings.audit.origin)
    path = Path(args.out)
    try:
        write_once(path, private + "\n", mode=0o600)
    except FileExistsError:
        print(f"enclave audit keygen: {path} exists; not overwritten", file=sys.stderr)
        return 1
    print(public)
    print(
        f"Signing key written to {path}. Set ENCLAVE_AUDIT__SIGNING_KEY_FILE={path} on the "
        "gateways; give auditors the verifier key above (ENCLAVE_AUDIT__VERIFIER_KEY).",
        file=sys.stderr,
    )
    return 0


def verifier_of(settings: Settings) -> Verifier:
    if settings.audit.verifier_key:
        return Verifier.from_key_string(settings.audit.verifier_key)
    if settings.audit.signing_key_file is None:
        raise SystemExit(
            "enclave audit: set ENCLAVE_AUDIT__VERIFIER_KEY (or ENCLAVE_AUDIT__SIGNING_KEY_FILE)"
        )
    return load_signer(settings.audit.signing_key_file).verifier()


def cmd_checkpoint(settings: Settings, args: argparse.Namespace) -> int:
    if settings.audit.signing_key_file is None:
        print("enclave audit checkpoint: set ENCLAVE_AUDIT__SIGNING_KEY_FILE", file=sys.stderr)
        return 2
    signer = load_signer(settings.audit.signing_key_file)

    async def run() -> None:
        engine = create_engine(settings.audit_database_url)
        try:
            checkpoint = await write_checkpoint(
                engine, signer, settings.audit.origin, settings.audit.checkpoint_dir
            )
        finally:
            await engine.dispose()
        print(
            f"checkpoint {checkpoint.size} signed"
            if checkpoint
            else "the newest checkpoint already covers the log"
        )

    asyncio.run(run())
    return 0


def cmd_verify(settings: Settings, args: argparse.Namespace) -> int:
    """Exit 0 when everything verifies, 1 naming the first fault."""
    verifier = verifier_of(settings)
    notes = [Path(path).read_text(encoding="utf-8") for path in args.checkpoint or ()]

    async def run() -> Report:
        engine = create_engine(settings.audit_database_url)
        try:
            return await verify_log(engine, verifier, settings.audit.origin, notes)
        finally:
            await engine.dispose()

    report = asyncio.run(run())
    if report.fault is None:
        purged = f" ({report.purged} purged after retention)" if report.purged else ""
        print(
            f"ok: {report.size} records{purged}, {report.checkpoints} signed checkpoints verified"
        )
        return 0
    fault = report.fault
    where = f"first bad record: {fault.seq}" if fault.seq is not None else "checkpoints"
    if fault.first_possible is not None:
        where = f"first bad record between {fault.first_possible} and {fault.seq}"
    print(f"FAILED: {fault.reason} ({where})")
    return 1


def cmd_verify_export(settings: Settings, args: argparse.Namespace) -> int:
    """Check an export file offline: exit 0 when every record is proven, 1 naming the fault."""
    try:
        verifier = Verifier.from_key_string(args.key) if args.key else verifier_of(settings)
    except (CheckpointError, SigningKeyError) as exc:
        print(f"enclave audit verify-export: {exc.message}", file=sys.stderr)
        return 2
    try:
        # surrogateescape: bytes that are not UTF-8 become a fault on their line, not a crash
        with open(args.file, encoding="utf-8", errors="surrogateescape", newline="\n") as file:
            report = verify_export(file, verifier, settings.audit.origin)
    except OSError as exc:
        print(
            f"enclave audit verify-export: cannot read {args.file}: {exc.strerror}", file=sys.stderr
        )
        return 2
    if report.fault is None:
        print(f"ok: {report.records} records verified against checkpoint {report.tree_size}")
        return 0
    fault = report.fault
    record = "" if fault.seq is None else f" (record {fault.seq})"
    print(f"FAILED: {fault.reason} at line {fault.line}{record}: {fault.detail}")
    return 1


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = commands.add_parser("audit", help="the tamper-evident audit log").add_subparsers(
        dest="audit_command", required=True
    )
    keygen = audit.add_parser("keygen", help="create the checkpoint signing key")
    keygen.add_argument("--out", required=True, help="where to write the private key")
    keygen.set_defaults(handler=cmd_keygen)
    audit.add_parser("checkpoint", help="sign the current tree head").set_defaults(
        handler=cmd_checkpoint
    )
    verify = audit.add_parser("verify", help="verify chain, tree and checkpoints")
    verify.add_argument(
        "--checkpoint", action="append", help="a checkpoint file kept outside the database"
    )
    verify.set_defaults(handler=cmd_verify)
    export = audit.add_parser("verify-export", help="verify an export file offline")
    export.add_argument("file", help="the export (JSON Lines)")
    export.add_argument("--key", help="the verifier key (default: as configured)")
    export.set_defaults(handler=cmd_verify_export)
