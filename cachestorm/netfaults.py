"""Network faults between one worker's host and the services: partition, latency and loss.

They act inside a Linux network namespace the nemesis is told about (``--nemesis-netns NAME``,
created by whoever built the hosts, e.g. tests/netns.py), through ``ip netns exec NAME``:

- ``partition``: ``iptables -I OUTPUT -d SERVICES -j DROP`` in that namespace. Only the services'
  addresses are cut off: the worker keeps talking to the master, so its rows still arrive and the
  fault shows as operations that time out, not as a lost node.
- ``loss``: the same rule with ``-m statistic --mode random --probability 0.3``: 30% of the
  packets to the services dropped, which TCP retransmits, late.
- ``latency``: ``tc netem delay 200ms`` (iproute2) on the interface the namespace routes the
  services by, under a ``prio`` qdisc with a fourth band that only a filter on the services'
  addresses sends packets to (the default priomap uses bands 1-3), so, again, the master's traffic
  is untouched. It needs the kernel's sch_netem and sch_prio; where they are missing (some
  sandboxed kernels) it is refused in one line.

Loss is iptables', not netem's, so that it works on such kernels too. Healing removes exactly what
was added (the rules, or the root qdisc). The namespace owns all of
it: if the run dies mid-fault, deleting the namespace takes the rule and the qdisc with it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

#: Each network fault and how long it lasts unless the schedule says otherwise (seconds).
NET_FAULTS: dict[str, float] = {"partition": 4.0, "latency": 4.0, "loss": 4.0}
#: Longer than the fill delays the matrix uses, so that a delayed fill meets a write committed meanwhile.
DELAY = "200ms"
#: Enough that many operations see a retransmission, few enough that TCP keeps every connection.
LOSS = "0.3"

_TIMEOUT_S = 10
_DEV = re.compile(r"\bdev (\S+)")


class NetFaultError(RuntimeError):
    """A command of a network fault failed; the message is one line."""


def missing(netns: str) -> str | None:
    """Why network faults cannot act on ``netns`` here, in one line, or None."""
    if not netns:
        return "network faults need --nemesis-netns NAME, the worker's network namespace to fault."
    if os.geteuid() != 0:
        return "network faults need root (ip netns exec, iptables, tc)."
    for tool in ("ip", "iptables", "tc"):
        if shutil.which(tool) is None:
            return f"network faults need `{tool}` on the master (Debian: iproute2, iptables)."
    if not (Path("/run/netns") / netns).exists():
        return f"--nemesis-netns {netns}: no such network namespace (ip netns list)."
    return None


def netem_missing(netns: str) -> str | None:
    """Why ``latency`` cannot be shaped in ``netns``'s kernel, or None.

    Tried on the namespace's loopback with no delay at all, removed at once: the only sure test
    of whether the kernel has the qdiscs is to add them.
    """
    for qdisc in (["prio", "bands", "4"], ["netem", "delay", "0ms"]):
        try:
            _run(netns, "tc", "qdisc", "add", "dev", "lo", "root", *qdisc)
        except NetFaultError as e:
            return f"latency needs tc {qdisc[0]}, which this kernel lacks ({e})."
        _run(netns, "tc", "qdisc", "del", "dev", "lo", "root")
    return None


def _run(netns: str, *argv: str) -> str:
    out = subprocess.run(
        ["ip", "netns", "exec", netns, *argv], capture_output=True, text=True, timeout=_TIMEOUT_S, check=False
    )
    if out.returncode != 0:
        raise NetFaultError(f"in {netns}: {' '.join(argv)}: {out.stderr.strip() or out.returncode}")
    return out.stdout


def device(netns: str, address: str) -> str:
    """The interface ``netns`` sends packets for ``address`` by."""
    found = _DEV.search(_run(netns, "ip", "route", "get", address))
    if found is None:
        raise NetFaultError(f"in {netns}: no route to {address}")
    return found.group(1)


def apply(name: str, netns: str, addresses: list[str]) -> None:
    """Start fault ``name`` in ``netns`` toward ``addresses`` (IPv4 addresses)."""
    if name in RULE:
        for a in addresses:
            _run(netns, "iptables", "-w", "-I", "OUTPUT", *_rule(name, a))
        return
    for dev in sorted({device(netns, a) for a in addresses}):
        _run(netns, "tc", "qdisc", "add", "dev", dev, "root", "handle", "1:", "prio", "bands", "4")
        _run(
            netns, "tc", "qdisc", "add", "dev", dev, "parent", "1:4", "handle", "40:", "netem", "delay", DELAY
        )
        for a in addresses:
            _run(netns, "tc", "filter", "add", "dev", dev, "parent", "1:", "protocol", "ip", "prio", "1",
                 "u32", "match", "ip", "dst", f"{a}/32", "flowid", "1:4")  # fmt: skip


def heal(name: str, netns: str, addresses: list[str]) -> None:
    """Undo :func:`apply`; what is already gone is not an error, so healing twice is harmless."""
    if name in RULE:
        for a in addresses:
            rule = ["OUTPUT", *_rule(name, a)]
            while _check(netns, "iptables", "-w", "-C", *rule):
                _run(netns, "iptables", "-w", "-D", *rule)
        return
    for dev in sorted({device(netns, a) for a in addresses}):
        if "netem" in _run(netns, "tc", "qdisc", "show", "dev", dev):
            _run(netns, "tc", "qdisc", "del", "dev", dev, "root")


def active(netns: str) -> list[str]:
    """What of this module's is in place in ``netns``: DROP rules and netem qdiscs, as text."""
    rules = [ln for ln in _run(netns, "iptables", "-w", "-S", "OUTPUT").splitlines() if "DROP" in ln]
    qdiscs = [ln for ln in _run(netns, "tc", "qdisc", "show").splitlines() if "netem" in ln]
    return rules + qdiscs


#: The faults that are an iptables rule, and what the rule matches besides the address.
RULE: dict[str, list[str]] = {
    "partition": [],
    "loss": ["-m", "statistic", "--mode", "random", "--probability", LOSS],
}


def _rule(name: str, address: str) -> list[str]:
    return ["-d", f"{address}/32", *RULE[name], "-j", "DROP"]


def _check(netns: str, *argv: str) -> bool:
    out = subprocess.run(
        ["ip", "netns", "exec", netns, *argv], capture_output=True, timeout=_TIMEOUT_S, check=False
    )
    return out.returncode == 0
