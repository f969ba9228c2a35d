"""Run a benchmark inside a private network namespace, so no packet can leave the machine.

``enter(veth=...)`` re-executes the calling script under ``unshare --net`` (root only) and,
once inside, brings loopback up and, with ``veth=True``, adds a veth pair whose one end
carries ``VETH_ADDRESS``. Janus never gathers candidates on a loopback interface, so a
benchmark that runs it needs that address; both servers are then measured on it. The
namespace has no other interface and no route anywhere else: traffic to ``VETH_ADDRESS``
is local delivery, like loopback. A nested namespace works too (for example inside
``tests/netns.sh``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

VETH_ADDRESS = "10.99.0.1"
VETH_NAME = "lbd0"
VETH_PEER = "lbd1"
_ENV = "MEETNOW_BENCH_NETNS"


def _ip() -> str:
    return shutil.which("ip") or "/usr/sbin/ip"


def available() -> bool:
    """Whether this process may make a network namespace (root with ``unshare`` and ``ip``)."""
    return (
        os.geteuid() == 0
        and shutil.which("unshare") is not None
        and Path(_ip()).exists()
        and subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode == 0
    )


def inside() -> str | None:
    """``"veth"`` or ``"lo"`` when this process was started by :func:`enter`, else None."""
    return os.environ.get(_ENV) or None


def enter(veth: bool, argv: list[str] | None = None) -> None:
    """Re-execute this script in a new network namespace, or set the namespace up.

    Called first thing by a benchmark's ``main``. Outside, it does not return (the
    process is replaced by ``unshare --net -- python <script> <args>``). Inside, it
    brings the interfaces up and returns. Raises RuntimeError when a namespace cannot be
    made; callers decide whether to go on without one.
    """
    mode = inside()
    if mode is None:
        if not available():
            raise RuntimeError("no network namespace: needs root, unshare(1) and ip(8)")
        os.environ[_ENV] = "veth" if veth else "lo"
        script = str(Path(sys.argv[0]).resolve())
        args = sys.argv[1:] if argv is None else argv
        sys.stdout.flush()
        sys.stderr.flush()
        os.execvp("unshare", ["unshare", "--net", "--", sys.executable, script, *args])
    _setup(mode == "veth")


def enter_if_possible(veth: bool, skip: bool = False, fallback: str = "running without a namespace") -> None:
    """:func:`enter` unless ``skip`` (set up the namespace when already inside one);
    where no namespace can be made, say so on stderr (``fallback``: what happens instead)
    and return."""
    if inside():
        enter(veth)
        return
    if skip:
        return
    try:
        enter(veth)  # does not return
    except RuntimeError as exc:
        print(f"  {exc}: {fallback}", file=sys.stderr)


def describe(address: str) -> str:
    """Where this process's media goes, for a benchmark's results."""
    if inside() == "veth":
        return f"private network namespace, media to {address} on a veth end (local delivery)"
    if inside() == "lo":
        return f"private network namespace, loopback only ({address})"
    return f"loopback ({address}), no namespace"


def _setup(veth: bool) -> None:
    ip = _ip()
    subprocess.run([ip, "link", "set", "lo", "up"], check=True)
    if veth:
        subprocess.run([ip, "link", "add", VETH_NAME, "type", "veth", "peer", "name", VETH_PEER], check=True)
        subprocess.run([ip, "addr", "add", f"{VETH_ADDRESS}/32", "dev", VETH_NAME], check=True)
        subprocess.run([ip, "link", "set", VETH_NAME, "up"], check=True)
        subprocess.run([ip, "link", "set", VETH_PEER, "up"], check=True)
    # The guarantee this module gives: nothing here but loopback and the pair.
    names = {line.split(":")[1].strip().split("@")[0] for line in
             subprocess.run([ip, "-o", "link"], capture_output=True, text=True, check=True).stdout.splitlines()}
    expected = {"lo", VETH_NAME, VETH_PEER} if veth else {"lo"}
    if names != expected:
        raise RuntimeError(f"unexpected interfaces in the benchmark's namespace: {sorted(names)}")
