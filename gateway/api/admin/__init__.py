"""The admin API (``/admin/v1``): tenants, users and keys, for tenant and platform admins.

Every call needs ``tenant_admin`` (its own tenant only) or ``platform_admin`` (every
tenant); every change is audited (event ``admin``) before it is committed, every refusal
is audited too. ``scope`` holds who may act where, ``pages`` the listings' cursors,
``bodies`` how request bodies are read and described.
"""

from gateway.api.admin.keys import AdminKeysController
from gateway.api.admin.limits import AdminLimitsController
from gateway.api.admin.tenants import AdminTenantsController
from gateway.api.admin.users import AdminUsersController

__all__ = [
    "AdminKeysController",
    "AdminLimitsController",
    "AdminTenantsController",
    "AdminUsersController",
]
