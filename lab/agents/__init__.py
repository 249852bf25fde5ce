"""The lab's cluster agents: kubelet, EndpointSlice controller and kube-proxy stand-ins.

They play the parts of a cluster that are not lbspeaker, from one process in the root
namespace (`python -m lab.agents --kubeconfig FILE --state-dir DIR [--nodes ...]`):

* `kubelet`: Pods -> pod network namespaces `lbpod-<uid8>` behind their node, running
  `podserver` (`GET /host` -> `NODE: <node>, POD IP: <ip>, CLIENT IP: <source>`);
  status written back. **Readiness switch:** the annotation
  `lab.lbspeaker.io/ready: "false"` on a Pod turns its Ready condition (and its
  endpoints) off without stopping it.
* `endpointslices`: EndpointSlices for every Service with a selector (pure core in `slices`).
* `kubeproxy`: nftables DNAT for clusterIPs, LoadBalancer IPs and nodePorts in every node
  namespace, ETP Cluster/Local, and kube-ipvs0 in IPVS mode (pure core in `nftrender`).

Not product code: they use their own small REST client (`kubeapi`), not `lbspeaker.kube`.
"""
