"""lbspeaker.io API: constants, address parsing and the pydantic models of every kind.

Models live in `lbspeaker.api.models`; the CRD YAML is generated from them by
`python -m lbspeaker.api.crdgen`.
"""

from lbspeaker.api.models import (
    KINDS,
    BGPAdvertisement,
    BGPPeer,
    Community,
    Condition,
    CustomResource,
    IPAddressPool,
    L2Advertisement,
    LabelSelector,
    ServiceBGPStatus,
    ServiceL2Status,
    parse_duration,
    parse_object,
)

__all__ = [
    "KINDS",
    "BGPAdvertisement",
    "BGPPeer",
    "Community",
    "Condition",
    "CustomResource",
    "IPAddressPool",
    "L2Advertisement",
    "LabelSelector",
    "ServiceBGPStatus",
    "ServiceL2Status",
    "parse_duration",
    "parse_object",
]
