"""An identity provider we run ourselves, for the token attack suite.

``IssuerServer`` serves a real discovery document and a real JWKS over HTTP (uvicorn on a
loopback port, in the test's event loop) and signs tokens with the keys it publishes, with
any claims a test needs: expired, not yet valid, without ``exp``, with other audiences.
It counts every request per path, and can be told to fail its JWKS endpoint or to serve a
discovery document naming another issuer; its introspection endpoint is always down.
``forge`` signs with keys it never publishes: an attacker's keys.

Only the attack suite uses it; every "happy path" test uses the real oidc-provider.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from tests.integration.stack import serve
from tests.processes import free_port

ACCESS_TOKEN_TYPE = "at+jwt"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    """A compact JWT assembled by hand, for tokens no library would produce."""
    parts = [json.dumps(header).encode(), json.dumps(claims).encode()]
    return ".".join([*(b64url(p) for p in parts), b64url(signature)])


class IssuerServer:
    """A trusted issuer at ``issuer`` (http://127.0.0.1:PORT) with published keys."""

    def __init__(self, port: int) -> None:
        self.issuer = f"http://127.0.0.1:{port}"
        self.rsa = RSAKey.generate_key(2048, parameters=_params("RS256"))
        self.ec = ECKey.generate_key("P-256", parameters=_params("ES256"))
        self.published: list[RSAKey | ECKey] = [self.rsa, self.ec]
        self.attacker = RSAKey.generate_key(2048, parameters=_params("RS256"))
        self.requests: Counter[str] = Counter()
        self.is_jwks_down = False
        self.discovery_issuer: str | None = None

    @property
    def jwks_uri(self) -> str:
        return self.issuer + "/jwks"

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """Valid access-token claims for ``audience`` urn:enclave; ``None`` removes a claim."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": "partner-user",
            "aud": "urn:enclave",
            "exp": now + 300,
            "iat": now,
            "tenant": "partner",
            "groups": ["enclave-admins"],
        }
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not None}

    def token(
        self, key: RSAKey | ECKey | None = None, header: dict[str, Any] | None = None, **claims: Any
    ) -> str:
        """A token signed with one of this issuer's keys (default: its published RSA key)."""
        key = key or self.rsa
        alg = str(key.alg)
        full_header = {"alg": alg, "kid": key.kid, "typ": ACCESS_TOKEN_TYPE, **(header or {})}
        return jwt.encode(full_header, self.claims(**claims), key, algorithms=[full_header["alg"]])

    def forge(self, header: dict[str, Any] | None = None, **claims: Any) -> str:
        """A token signed with the attacker's unpublished key; ``header`` may claim any kid."""
        return self.token(self.attacker, header, **claims)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """The ASGI app: discovery, JWKS, everything else 404."""
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": message["type"] + ".complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        path = scope["path"]
        self.requests[path] += 1
        if path == "/.well-known/openid-configuration":
            status, body = (
                200,
                {
                    "issuer": self.discovery_issuer or self.issuer,
                    "jwks_uri": self.jwks_uri,
                    "token_endpoint": self.issuer + "/token",
                    "introspection_endpoint": self.issuer + "/introspect",
                },
            )
        elif path == "/jwks" and not self.is_jwks_down:
            status, body = 200, {"keys": [k.as_dict(private=False) for k in self.published]}
        elif path in ("/jwks", "/introspect"):  # introspection: always down
            status, body = 503, {"error": "temporarily_unavailable"}
        else:
            status, body = 404, {"error": "not_found"}
        payload = json.dumps(body).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def _params(alg: str) -> dict[str, str]:
    return {"kid": f"{alg.lower()}-{uuid.uuid4().hex[:12]}", "alg": alg, "use": "sig"}


@contextlib.asynccontextmanager
async def running_issuer() -> AsyncIterator[IssuerServer]:
    server = IssuerServer(free_port())
    port = int(server.issuer.rsplit(":", 1)[1])
    async with serve(server, port=port):
        yield server
