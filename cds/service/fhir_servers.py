"""Which `fhirServer` a hook call may make us fetch from, decided before any fetch.

A caller who names `fhirServer` makes this service send requests (with the access token it was
given) to that URL. So, with authentication on, only the FHIR base URLs listed for the caller's
issuer in the trusted-issuer file (`fhir_servers`) are accepted. Whatever the mode, a server whose
address is loopback, private, link-local or otherwise not globally routable is refused unless its
network is listed in CDS_FHIR_PRIVATE_NETWORKS (hospital FHIR servers often sit in 10.0.0.0/8: the
operator lists that range). Development mode (CDS_AUTH=off) has no issuer list: any public
fhirServer is accepted, and loopback (127.0.0.0/8, ::1) too, for a FHIR server on the developer's
machine; other private ranges still need CDS_FHIR_PRIVATE_NETWORKS.

The host name is resolved here and every address it resolves to must be allowed. The fetch
resolves it again, so a DNS answer that changes in between (rebinding) is not caught here; listing
exact base URLs per issuer is what bounds that (docs/security.md).
"""
from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from cds.errors import CdsError
from cds.service.auth import normalised_base_url

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


class FhirServerRefused(CdsError):
    """The call names a fhirServer we will not contact; `status` 400 (or 401: not for this issuer)."""

    def __init__(self, reason: str, status: int = 400):
        super().__init__(reason)
        self.status = status


def parse_networks(text: str | None, variable: str = "CDS_FHIR_PRIVATE_NETWORKS") -> tuple[Network, ...]:
    """'10.0.0.0/8, 127.0.0.1/32' → networks; a clear start-up error for anything else."""
    networks = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise CdsError(f"{variable}: {item!r} is not a network such as 10.0.0.0/8 or 127.0.0.1/32") from None
    return tuple(networks)


class FhirServerPolicy:
    def __init__(self, private_networks: Iterable[Network] = (), *, development: bool = False,
                 resolve=socket.getaddrinfo):
        self.allowed_private = tuple(private_networks) + (LOOPBACK if development else ())
        self.development = development
        self._resolve = resolve

    def check(self, fhir_server: str, allowed_bases: frozenset[str] | None) -> str:
        """The normalised base URL, or FhirServerRefused. `allowed_bases` is the issuer's list
        (None in development mode, where no issuer is known)."""
        base = normalised_base_url(fhir_server)
        if base is None:
            raise FhirServerRefused("'fhirServer' must be a plain http(s) base URL (no credentials, query or fragment)")
        if allowed_bases is not None and base not in allowed_bases:
            raise FhirServerRefused(f"fhirServer {base} is not one of the FHIR servers configured for this "
                                    "EHR's issuer (fhir_servers in the trusted-issuer file)", status=401)
        host = urlsplit(base).hostname
        port = urlsplit(base).port or (443 if base.startswith("https") else 80)
        try:
            addresses = {info[4][0] for info in self._resolve(host, port, type=socket.SOCK_STREAM)}
        except (socket.gaierror, UnicodeError, OSError):
            raise FhirServerRefused(f"fhirServer host {host} does not resolve") from None
        for raw in addresses:
            address = ipaddress.ip_address(raw.split("%")[0])
            if address.is_global and not address.is_multicast:
                continue
            if any(address in network for network in self.allowed_private):
                continue
            raise FhirServerRefused(f"fhirServer {base} resolves to {address}, a loopback, private or reserved "
                                    "address this service does not contact unless its network is listed in "
                                    "CDS_FHIR_PRIVATE_NETWORKS")
        return base
