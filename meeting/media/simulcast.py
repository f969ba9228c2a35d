"""Simulcast in the server's offers, and the RIDs a browser's answer agrees to send.

The server always offers. To receive several encodings of a publisher's video on one
m-line, each publish video m-line of an offer asks for them (RFC 8853): the RID header
extensions, one ``a=rid:<rid> recv`` line per layer and ``a=simulcast:recv lo;hi``.
Chromium answers such an offer with ``a=simulcast:send lo;hi`` and sends both encodings
(checked with Chromium 156: the sender's encodings are made from the offer's RIDs). aiortc
knows nothing of these lines: its own offer is made, then the lines are added to the text
sent to the browser; the answer's RIDs are read here from the text as well.

Every offer carries the same lines for a given m-line: a browser fixes its encodings the
first time, and a later offer without them would not take them back. Whether a layer is
sent is the page's choice (``active`` on the encoding); which layer each viewer gets is
the server's (meeting.media.quality).
"""

from __future__ import annotations

import re

from meeting.media.rtp import REPAIRED_RID_URI, RID_URI

# The layers offered, lowest quality first (the page sizes each by its RID).
RIDS = ("lo", "hi")
_EXTMAP = re.compile(r"^a=extmap:(\d+)", re.MULTILINE)
_MID = re.compile(r"^a=mid:(\S+)", re.MULTILINE)


def _free_ids(sdp: str, count: int) -> list[int]:
    """``count`` one-byte extension ids the SDP does not use yet (RFC 8285: 1-14)."""
    used = {int(x) for x in _EXTMAP.findall(sdp)}
    free = [i for i in range(14, 0, -1) if i not in used][:count]
    if len(free) < count:
        raise ValueError("no header extension id left for the RIDs")
    return sorted(free)


def offer_simulcast(sdp: str, mids: set[str]) -> str:
    """``sdp`` with simulcast asked for on the m-lines whose MID is in ``mids``."""
    if not mids:
        return sdp
    rid_id, rrid_id = _free_ids(sdp, 2)
    newline = "\r\n" if "\r\n" in sdp else "\n"
    sections = re.split(r"(?m)^(?=m=)", sdp)
    out = [sections[0]]
    for section in sections[1:]:
        mid = _MID.search(section)
        if mid is None or mid.group(1) not in mids:
            out.append(section)
            continue
        lines = section.rstrip("\r\n").split(newline)
        last_extmap = max((i for i, line in enumerate(lines) if line.startswith("a=extmap:")), default=0)
        lines[last_extmap + 1 : last_extmap + 1] = [
            f"a=extmap:{rid_id} {RID_URI}",
            f"a=extmap:{rrid_id} {REPAIRED_RID_URI}",
        ]
        lines += [f"a=rid:{rid} recv" for rid in RIDS]
        lines.append("a=simulcast:recv " + ";".join(RIDS))
        out.append(newline.join(lines) + newline)
    return "".join(out)


def answered_rids(section: str) -> tuple[str, ...]:
    """The RIDs an answer's m-section agrees to send, lowest quality first.

    Only RIDs the server offered count, each once; a paused one (``~rid``) counts too
    (the browser may start it later). Empty when the section has no simulcast.
    """
    sends: list[str] = []
    for line in section.splitlines():
        if not line.startswith("a=simulcast:"):
            continue
        parts = line[len("a=simulcast:"):].split()
        for direction, streams in zip(parts[::2], parts[1::2]):
            if direction != "send":
                continue
            for stream in streams.split(";"):
                rid = stream.split(",")[0].lstrip("~")
                if rid in RIDS and rid not in sends:
                    sends.append(rid)
    declared = {
        line.split()[0][len("a=rid:"):] for line in section.splitlines()
        if line.startswith("a=rid:") and len(line.split()) > 1 and line.split()[1] == "send"
    }
    return tuple(rid for rid in RIDS if rid in sends and rid in declared)


def media_sections(sdp: str) -> list[str]:
    """The m-sections of an SDP, in order (each from its ``m=`` line to the next)."""
    return [s for s in re.split(r"(?m)^(?=m=)", sdp.replace("\r\n", "\n"))[1:]]
