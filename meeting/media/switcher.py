"""One viewer stream's numbering: what it forwards of a publication's layers, never broken.

A publication may arrive in several layers (simulcast encodings, each its own RTP stream
with its own sequence numbers, timestamps and VP8 picture ids), and each VP8 layer may
carry temporal layers (frames a receiver can do without). A viewer sees one stream: a
:class:`Switcher` decides, packet by packet, what of it goes to that viewer and with which
numbers, so that the viewer's decoder sees one continuous stream whatever happens behind:

- it forwards one layer; asked for another, it moves at that layer's next keyframe, and
  the new layer's sequence numbers, timestamps, picture ids and TL0PICIDX continue from
  the last ones the viewer got (timestamps advance by the time that passed);
- it leaves out frames above a temporal layer cap, closing the gaps they leave in the
  sequence numbers and picture ids; the cap is lowered at any frame start and raised
  where the higher layers can be decoded again (a base-layer frame, or a layer sync frame);
- it keeps what it sent (a ring of recent packets), so a viewer's NACK is answered with
  exactly the bytes it missed.

Pure state: packets and time in, numbers out. No I/O.
"""

from __future__ import annotations

import random
from collections import deque

from meeting.media.rtp import RtpView
from meeting.media.vp8 import NO_TID, Vp8Descriptor, picture_id_mask, rewrite

RING_SIZE = 512  # packets a viewer can ask for again (~5 s of a 640x480 camera)
RING_MASK = RING_SIZE - 1
# After a switch, packets of the new layer older than its keyframe must not follow it;
# checking for that is only needed while such packets can still arrive.
FRESH_PACKETS = 2 * RING_SIZE
_REMEMBERED_FRAMES = 64  # picture ids mapped (or left out), for late packets of a frame
_REMEMBERED_DROPS = 256  # sequence numbers left out, for the numbering of late packets

# What the ring holds per packet: (output seq, output timestamp, body sent, original view)
Sent = tuple[int, int, bytes, RtpView]


class Switcher:
    """A viewer stream's choice of layer and temporal cap, and its continuous numbering."""

    __slots__ = (
        "clock_rate",
        "video",
        "current",
        "pending",
        "max_tid",
        "want_tid",
        "seq_off",
        "ts_off",
        "pid_off",
        "tl0_off",
        "anchor",
        "fresh",
        "max_in",
        "last_seq",
        "last_ts",
        "last_time",
        "last_pid",
        "last_tl0",
        "pids",
        "pid_order",
        "drops",
        "ring",
        "switches",
        "frames_left_out",
    )

    def __init__(self, clock_rate: int, video: bool, rng: random.Random | None = None) -> None:
        rng = rng or random
        self.clock_rate = clock_rate
        self.video = video
        self.current: int | None = None  # layer forwarded now
        self.pending: int | None = None  # layer to move to at its next keyframe
        self.max_tid = NO_TID  # temporal layers above this are left out
        self.want_tid = NO_TID  # the cap asked for, applied where it is safe
        self.seq_off = 0
        self.ts_off = 0
        self.pid_off = 0
        self.tl0_off = 0
        self.anchor = 0  # input sequence number of the current binding's first packet
        self.fresh = 0
        self.max_in = 0
        # The last numbers the viewer got; a binding continues from them. Random starts in
        # the lower half avoid SRTP trouble at the 16-bit wrap.
        self.last_seq = rng.randrange(0x8000)
        self.last_ts = rng.randrange(1 << 32)
        self.last_time: float | None = None
        self.last_pid = -1
        self.last_tl0 = -1
        self.pids: dict[int, int] = {}  # input picture id -> output picture id, or -1: left out
        self.pid_order: deque[int] = deque()
        self.drops: deque[int] = deque(maxlen=_REMEMBERED_DROPS)
        self.ring: list[Sent | None] | None = [None] * RING_SIZE if video else None
        self.switches = 0  # bindings made (first one included)
        self.frames_left_out = 0

    def set_media(self, clock_rate: int, video: bool) -> None:
        """What it forwards: the clock rate, and whether packets wait for keyframes."""
        self.clock_rate = clock_rate
        self.video = video
        if video and self.ring is None:
            self.ring = [None] * RING_SIZE

    # --- what to forward --------------------------------------------------------------------

    @property
    def waiting(self) -> bool:
        """A layer is asked for and its keyframe has not come yet."""
        return self.pending is not None

    def target(self, layer: int | None, max_tid: int = NO_TID) -> None:
        """Forward ``layer`` (from its next keyframe, unless it is the current one) with
        temporal layers up to ``max_tid``; ``None`` pauses the stream."""
        self.want_tid = max_tid
        if layer is None:
            self.current = self.pending = None
        elif layer == self.current:
            self.pending = None
        else:
            self.pending = layer

    def restart(self) -> None:
        """The current layer's source restarted (new SSRC): take it again from a keyframe."""
        if self.current is not None:
            self.pending = self.current if self.pending is None else self.pending
            self.current = None

    # --- per packet ---------------------------------------------------------------------------

    def forward(self, view: RtpView, desc: Vp8Descriptor | None, layer: int,
                now: float) -> tuple[int, int, bytes] | None:
        """The (sequence number, timestamp, body) this viewer gets for ``view``, a packet of
        ``layer``; None when it gets nothing. ``desc`` is the packet's VP8 descriptor (None
        for audio, where every packet is a starting point)."""
        seq = view.seq
        if layer != self.current:
            if layer != self.pending or (self.video and (desc is None or not desc.keyframe)):
                return None
            self._bind(view, desc, layer, now)
        elif self.fresh:
            if (seq - self.anchor) & 0x8000:
                return None  # older than the keyframe this binding started at
            self.fresh -= 1
        d = ((seq - self.max_in + 0x8000) & 0xFFFF) - 0x8000
        newest = d > 0
        if newest:
            self.max_in = seq
        body = view.body
        if desc is not None:
            pid = desc.picture_id
            tid = desc.tid
            if newest and desc.start:
                want = self.want_tid
                if want < self.max_tid or (want > self.max_tid and (tid == 0 or (desc.sync and tid <= want))):
                    self.max_tid = want
            out_pid = self.pids.get(pid) if pid >= 0 else None
            if out_pid is None:
                if tid > self.max_tid:
                    self._leave_out(seq, pid, newest)
                    return None
                if pid >= 0:
                    out_pid = (pid + self.pid_off) & picture_id_mask(desc)
                    self._remember(pid, out_pid)
            elif out_pid < 0:
                self._leave_out(seq, -1, newest)
                return None
            out_seq = (seq + self.seq_off) & 0xFFFF if newest or d == 0 else self._late_seq(seq)
            if out_pid is not None:
                out_tl0 = (desc.tl0 + self.tl0_off) & 0xFF if desc.tl0 >= 0 else -1
                if out_pid != pid or out_tl0 != desc.tl0:
                    body = rewrite(body, desc, out_pid, out_tl0)
                if newest:
                    self.last_pid = out_pid
                    if out_tl0 >= 0:
                        self.last_tl0 = out_tl0
        else:
            out_seq = (seq + self.seq_off) & 0xFFFF if newest or d == 0 else self._late_seq(seq)
        out_ts = (view.ts + self.ts_off) & 0xFFFFFFFF
        if newest or d == 0:
            self.last_seq = out_seq
            self.last_ts = out_ts
            self.last_time = now
        ring = self.ring
        if ring is not None:
            ring[out_seq & RING_MASK] = (out_seq, out_ts, body, view)
        return out_seq, out_ts, body

    def sent(self, out_seq: int) -> Sent | None:
        """What went out as ``out_seq``, if it is still remembered (to answer a NACK)."""
        if self.ring is None:
            return None
        entry = self.ring[out_seq & RING_MASK]
        return entry if entry is not None and entry[0] == out_seq else None

    def recent(self, count: int) -> list[Sent]:
        """Up to ``count`` of the packets sent last, newest first (bandwidth probes)."""
        if self.ring is None or self.current is None:
            return []
        out = []
        seq = self.last_seq
        for _ in range(min(count, RING_SIZE)):
            entry = self.ring[seq & RING_MASK]
            if entry is None or entry[0] != seq:
                break
            out.append(entry)
            seq = (seq - 1) & 0xFFFF
        return out

    # --- internals ----------------------------------------------------------------------------

    def _bind(self, view: RtpView, desc: Vp8Descriptor | None, layer: int, now: float) -> None:
        """Start forwarding ``layer`` at this packet, continuing the viewer's numbering."""
        out_seq = (self.last_seq + 1) & 0xFFFF
        out_ts = self.last_ts
        if self.last_time is not None:
            # Keep the viewer's timestamps moving with wall time across the switch.
            out_ts += max(1, int((now - self.last_time) * self.clock_rate))
        self.seq_off = (out_seq - view.seq) & 0xFFFF
        self.ts_off = (out_ts - view.ts) & 0xFFFFFFFF
        if desc is not None:
            if desc.picture_id >= 0 and self.last_pid >= 0:
                self.pid_off = (self.last_pid + 1 - desc.picture_id) & picture_id_mask(desc)
            else:
                self.pid_off = 0
            if desc.tl0 >= 0 and self.last_tl0 >= 0:
                self.tl0_off = (self.last_tl0 + 1 - desc.tl0) & 0xFF
            else:
                self.tl0_off = 0
        self.current = layer
        self.pending = None
        self.anchor = view.seq
        self.max_in = (view.seq - 1) & 0xFFFF
        self.fresh = FRESH_PACKETS
        self.max_tid = self.want_tid  # a keyframe is a base-layer frame: any cap may start here
        self.pids.clear()
        self.pid_order.clear()
        self.drops.clear()
        self.switches += 1

    def _leave_out(self, seq: int, pid: int, newest: bool) -> None:
        """A packet above the temporal cap: close the gaps it would leave."""
        if not newest:
            return  # a late packet: the numbers after it are given already
        self.seq_off = (self.seq_off - 1) & 0xFFFF
        self.drops.append(seq)
        if pid >= 0 and pid not in self.pids:
            self._remember(pid, -1)
            self.pid_off -= 1
            self.frames_left_out += 1

    def _late_seq(self, seq: int) -> int:
        """The output number of a packet older than the newest: packets left out after it
        had not moved the numbering yet when it was due."""
        later = 0
        for dropped in reversed(self.drops):
            if (dropped - seq) & 0x8000:
                break
            later += 1
        return (seq + self.seq_off + later) & 0xFFFF

    def _remember(self, pid: int, out_pid: int) -> None:
        self.pids[pid] = out_pid
        self.pid_order.append(pid)
        if len(self.pid_order) > _REMEMBERED_FRAMES:
            self.pids.pop(self.pid_order.popleft(), None)
