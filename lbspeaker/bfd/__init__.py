"""BFD (RFC 5880 asynchronous mode, RFC 5881 single hop) for the speaker.

`packet` is the pure wire codec, `session` the pure per-session state machine (time and packets
in, packets and state changes out), `io` the thin UDP adapter that runs every session of a
process in one selector loop. ExaBGP has no BFD and no Python BFD library is worth depending on,
hence this package.
"""
