"""lbspeaker-speaker: layer-2 announcement of LoadBalancer IPs (see `main.py` for the wiring).

`membership` (Leases + heartbeats -> live speakers), `heartbeat` (UDP codec and
socket), `strictarp` (kube-proxy config), `status` (ServiceL2Status + Events),
`metrics`, `health`; the pure planning lives in `lbspeaker.plan`.
"""
