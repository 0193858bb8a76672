"""Who may read a key file: PostgreSQL's rule for its server key.

A key file of one's own must be readable by its owner only (0600). A file owned by root may
also be readable by its group (0640): that is how a secret reaches an unprivileged process
when an orchestrator mounts it, e.g. a Kubernetes Secret volume with ``fsGroup``. No key
file may be readable by others, nor owned by another unprivileged user.
"""

from __future__ import annotations

import os
import stat


def too_open(status: os.stat_result) -> str | None:
    """Why a key file with this status must be refused, or None if it may be used."""
    mode = stat.S_IMODE(status.st_mode)
    if status.st_uid == os.geteuid():
        if mode & 0o077:
            return (
                f"permissions {mode:04o} are too open: "
                "it must be accessible by its owner only (chmod 600)"
            )
        return None
    if status.st_uid == 0:
        if mode & 0o037:
            return (
                f"permissions {mode:04o} are too open: "
                "a key file owned by root may be readable by its group at most (0640)"
            )
        return None
    return (
        f"it is owned by uid {status.st_uid}: "
        f"it must be owned by this user (uid {os.geteuid()}) or root"
    )
