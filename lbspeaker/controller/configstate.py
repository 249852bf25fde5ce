"""The controller's ConfigurationState (`controller`), and the clean-up of speakers' ones whose node
is gone.

Runs on the one worker after the advertisements' conditions are computed (work item
``configstate``, queued by ``advertisements``, which every pool change queues), from the
problems the pools part already holds: `PoolReconcilerValid` from the invalid pools,
`AdvertisementReconcilerValid` from the advertisements whose Ready is False. Only the
leader writes; an unchanged state costs no API call.
"""

from __future__ import annotations

import logging

from lbspeaker import configstate as CS
from lbspeaker.controller.context import Context
from lbspeaker.controller.pools import PoolsAndAdvertisements
from lbspeaker.kube.configstate import ConfigStateWriter, delete_stale_speaker_states

log = logging.getLogger("lbspeaker.controller")


class ConfigurationStates:
    """Worker-owned: the controller's writer and the node set the speakers' states were last checked at."""

    def __init__(self, ctx: Context, pools: PoolsAndAdvertisements) -> None:
        self.ctx = ctx
        self.pools = pools
        self.writer = ConfigStateWriter(ctx.rest, ctx.cfg.namespace, CS.CONTROLLER)
        self._nodes_checked: frozenset[str] | None = None

    def reset(self) -> None:
        """A new term: read the object again, check the speakers' states again."""
        self.writer.forget()
        self._nodes_checked = None

    def sync(self) -> None:
        self.ctx.check_leader()
        self.writer.write({
            CS.POOLS: self.pools.poolset.problems.values(),
            CS.ADVERTISEMENTS: self.pools.advertisement_problems.values(),
        })
        nodes = frozenset(str((n.get("metadata") or {}).get("name")) for n in self.ctx.caches.nodes.items())
        if nodes != self._nodes_checked:
            self.ctx.check_leader()
            delete_stale_speaker_states(self.ctx.rest, self.ctx.cfg.namespace, nodes)
            self._nodes_checked = nodes


__all__ = ["ConfigurationStates"]
