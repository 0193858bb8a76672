"""The compliance console: web pages for auditors and admins behind the organisation's
single sign-on (``router.console_router``), wired into the app by ``gateway.app``."""
