"""Registry credentials for pulls, found where Docker's own client keeps them.

Order, first match wins: `CRC_REGISTRY_USERNAME` + `CRC_REGISTRY_PASSWORD` (for CI secrets; optionally
limited to one registry by `CRC_REGISTRY`), then the Docker config (`$DOCKER_CONFIG/config.json`, else
`~/.docker/config.json`): a credential helper for the host (`credHelpers`), the default store
(`credsStore`), or an `auths` entry (`auth` = base64 "user:password", or `username`/`password`).

Credentials only ever travel to the engine in the pull request's header: they are never logged, put in a
message, a Plan, a report or a recording.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import subprocess
from pathlib import Path

DOCKER_HUB = "https://index.docker.io/v1/"


class CredentialsError(Exception):
    """The configuration names credentials that cannot be read (the message never contains a secret)."""


def config_path() -> Path:
    """Where the Docker client's config lives."""
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


def credentials_for(registry: str | None) -> dict[str, str] | None:
    """`{"username", "password", "serveraddress"}` for `registry` (None: Docker Hub), or None if none known."""
    host = registry or DOCKER_HUB
    user, password = os.environ.get("CRC_REGISTRY_USERNAME"), os.environ.get("CRC_REGISTRY_PASSWORD")
    if user and password is not None and os.environ.get("CRC_REGISTRY", host) == host:
        return {"username": user, "password": password, "serveraddress": host}
    path = config_path()
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CredentialsError(f"cannot read the Docker config {path}: {type(e).__name__}") from None
    if not isinstance(cfg, dict):
        raise CredentialsError(f"the Docker config {path} is not a JSON object")
    helpers = cfg.get("credHelpers") or {}
    helper = helpers.get(host) if isinstance(helpers, dict) else None
    if helper is None and isinstance(cfg.get("credsStore"), str):
        helper = cfg["credsStore"]
    if isinstance(helper, str) and helper:
        found = _from_helper(helper, host)
        if found is not None:
            return found
    auths = cfg.get("auths") or {}
    entry = auths.get(host) if isinstance(auths, dict) else None
    if entry is None and isinstance(auths, dict):  # entries may be written with a scheme: "https://host"
        entry = next((v for k, v in auths.items() if k.split("://", 1)[-1].rstrip("/") == host), None)
    if not isinstance(entry, dict):
        return None
    if isinstance(entry.get("auth"), str) and entry["auth"]:
        try:
            user, sep, password = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise CredentialsError(f"the `auth` of {host} in {path} is not base64 of user:password") from None
        if not sep:
            raise CredentialsError(f"the `auth` of {host} in {path} is not base64 of user:password")
        return {"username": user, "password": password, "serveraddress": host}
    if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
        return {"username": entry["username"], "password": entry["password"], "serveraddress": host}
    return None


def _from_helper(helper: str, host: str) -> dict[str, str] | None:
    """Ask `docker-credential-HELPER get` (Docker's credential helper protocol: host in, JSON out)."""
    program = f"docker-credential-{helper}"
    try:
        out = subprocess.run([program, "get"], input=host.encode(), capture_output=True, timeout=30, check=False)
    except FileNotFoundError:
        raise CredentialsError(f"the Docker config names the credential helper `{program}`, which is not "
                               "installed") from None
    except subprocess.TimeoutExpired:
        raise CredentialsError(f"the credential helper `{program}` did not answer within 30 s") from None
    if out.returncode != 0:
        return None  # "credentials not found in native keychain": no credentials for this host
    try:
        data = json.loads(out.stdout)
        return {"username": str(data["Username"]), "password": str(data["Secret"]), "serveraddress": host}
    except (ValueError, KeyError, TypeError):
        raise CredentialsError(f"the credential helper `{program}` answered something that is not "
                               "its JSON") from None
