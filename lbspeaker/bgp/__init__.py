"""BGP announcement through ExaBGP.

* `config` (pure): BGPPeer-derived `PeerSpec`s -> an ExaBGP 5 configuration file.
* `routes` (pure): desired routes per peer (service IPs x BGPAdvertisements) and the
  ExaBGP API commands that move one desired state to another.
* `session` (pure): per-peer session state (FSM state, since, last error) from ExaBGP's
  JSON events.
* `relay`: the tiny program ExaBGP runs as its API `process`; it pipes ExaBGP's
  stdin/stdout to a unix socket owned by the speaker.
* `exabgp` (I/O): `ExaBGPManager` runs ExaBGP, keeps the routes announced across
  crashes and reloads, and reports session changes.

Typical use by the speaker (everything is plain data; the manager is thread-safe)::

    mgr = ExaBGPManager("/run/lbspeaker/bgp", on_session_change=write_peer_status)
    peers = [peer_spec_from_bgppeer(name, peer.spec, node_ipv4, password_from_secret)
             for name, peer in peers_selecting_this_node]
    mgr.set_peers(peers)                      # renders, reloads ExaBGP when it changed
    mgr.start()
    want = desired_routes(
        [Announcement("ns/svc", ("198.51.100.10",), (advertisement_from_model(n, adv.spec),))],
        peers, community_aliases)             # want.routes, want.service_peers, want.problems
    mgr.set_routes(want.routes)               # sent as a diff, acknowledged, re-sent after crashes
    ...
    mgr.stop()                                # withdraw, then SIGTERM ExaBGP (SIGTERM path)
"""
