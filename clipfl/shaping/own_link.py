"""A client that caps its own link from inside a clipfl namespace (``python -m clipfl.client --shape tc``).

Upload: tbf on the interface's egress. Download: ingress traffic is redirected (``u32`` filter,
``mirred`` action) to an ``ifb`` device, whose egress tbf paces it. That works on kernels with ifb,
cls_u32 and act_mirred (these machines have them, not netem, matchall or police); unlike the bench's
download cap it shapes packets after they crossed the link, which TCP cannot tell apart (its ACK
clock follows the delivery rate), but a burst that overflows the ifb queue is dropped and
retransmitted instead of waiting at the sender. Without those modules the client cannot cap its
download alone: use the bench's caps or ``--shape app``.
"""

from __future__ import annotations

import json
import os
import shutil

from clipfl.errors import ConfigError
from clipfl.shaping.commands import PREFIX, REQUIRE_MESSAGE, current_namespace, run
from clipfl.shaping.rates import check_rate, tbf_argv

__all__ = ["shape_own_interface"]

_IFB = PREFIX + "ifb"


def shape_own_interface(iface: str, upload_bps: int | None, download_bps: int | None = None) -> None:
    """Cap this process's own link from inside a clipfl namespace (``clipfl.client --shape tc``).

    Upload: tbf on ``iface``'s egress. Download: ingress redirected to an ifb device whose egress
    tbf paces it (see the module docstring for what that can and cannot emulate). None removes the
    cap of that direction. Refused outside a namespace named ``clipfl-...``, so that it can never
    shape the machine's real interfaces.
    """
    check_rate("upload_bps", upload_bps)
    check_rate("download_bps", download_bps)
    if os.geteuid() != 0 or shutil.which("tc") is None:
        raise ConfigError(REQUIRE_MESSAGE)
    namespace = current_namespace()
    if namespace is None or not namespace.startswith(PREFIX):
        raise ConfigError(
            f"--shape tc must run inside a clipfl network namespace (ip netns exec {PREFIX}...), not in "
            f"{namespace or 'the root namespace'}; use --shape app"
        )
    if iface == "lo" or iface not in {
        str(link["ifname"]) for link in json.loads(run(["ip", "-j", "link", "show"]) or "[]")
    }:
        raise ConfigError(f"no interface {iface!r} to shape in namespace {namespace}")
    run(["tc", "qdisc", "del", "dev", iface, "root"], check=False)
    if upload_bps is not None:
        run(["tc", "qdisc", "add", "dev", iface, "root", *tbf_argv(upload_bps)])
    run(["tc", "qdisc", "del", "dev", iface, "ingress"], check=False)
    run(["ip", "link", "del", _IFB], check=False)
    if download_bps is None:
        return
    try:
        run(["ip", "link", "add", _IFB, "type", "ifb"])
        run(["ip", "link", "set", _IFB, "up"])
        run(["tc", "qdisc", "add", "dev", _IFB, "root", *tbf_argv(download_bps)])
        run(["tc", "qdisc", "add", "dev", iface, "handle", "ffff:", "ingress"])
        redirect = ["u32", "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", _IFB]
        run(["tc", "filter", "add", "dev", iface, "parent", "ffff:", "protocol", "all", *redirect])
    except ConfigError as exc:
        run(["tc", "qdisc", "del", "dev", iface, "ingress"], check=False)
        run(["ip", "link", "del", _IFB], check=False)
        raise ConfigError(
            "this kernel cannot cap a client's download from inside its namespace (needs ifb, cls_u32 "
            "and act_mirred); cap it at the bench's end or use --shape app"
        ) from exc
