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
_REMEMBERED_FRAMES = 64  # frames left out, for the picture ids of late packets
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
        "bind_tid",
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
        "pid_steps",
        "pid_base",
        "dropped_pid",
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
        self.bind_tid = NO_TID  # the cap for the layer it moves to
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
        # Each frame left out moves the picture id offset: (first picture id it applies to,
        # offset) per move, oldest first; older frames had ``pid_base``.
        self.pid_steps: deque[tuple[int, int]] = deque()
        self.pid_base = 0
        self.dropped_pid = -1
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
        temporal layers up to ``max_tid``; ``None`` pauses the stream.

        Moving down to a cheaper layer, the current one keeps only its base temporal
        layer until the new one's keyframe comes: the viewer's link is relieved at once.
        """
        self.bind_tid = max_tid
        if layer is None:
            self.current = self.pending = None
            self.want_tid = max_tid
        elif layer == self.current:
            self.pending = None
            self.want_tid = max_tid
        else:
            self.pending = layer
            going_down = self.current is not None and layer < self.current
            self.want_tid = 0 if going_down else max_tid

    def restart(self) -> None:
        """The current layer's source restarted (new SSRC): take it again from a keyframe."""
        if self.current is not None:
            self.pending = self.current if self.pending is None else self.pending
            self.current = None

    # --- per packet ---------------------------------------------------------------------------

    def forward(self, view: RtpView, desc: Vp8Descriptor | None, layer: int, now: float) -> Sent | None:
        """What this viewer gets for ``view``, a packet of ``layer``: (sequence number,
        timestamp, body, view), or None when it gets nothing. ``desc`` is the packet's VP8
        descriptor (None for audio, where every packet is a starting point)."""
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
        if d <= 0:
            return self._late(view, desc, d)
        self.max_in = seq
        body = view.body
        if desc is not None:
            tid = desc.tid
            if desc.start:
                want = self.want_tid
                if want < self.max_tid or (want > self.max_tid and (tid == 0 or (desc.sync and tid <= want))):
                    self.max_tid = want
            pid = desc.picture_id
            if tid > self.max_tid or (pid >= 0 and pid == self.dropped_pid):
                self._leave_out(seq, pid)
                return None
            if pid >= 0:
                out_pid = (pid + self.pid_off) & (0x7FFF if desc.long_id else 0x7F)
                tl0 = desc.tl0
                if tl0 >= 0:
                    tl0 = self.last_tl0 = (tl0 + self.tl0_off) & 0xFF
                self.last_pid = out_pid
                if out_pid != pid or tl0 != desc.tl0:
                    body = rewrite(body, desc, out_pid, tl0)
        out_seq = self.last_seq = (seq + self.seq_off) & 0xFFFF
        out_ts = self.last_ts = (view.ts + self.ts_off) & 0xFFFFFFFF
        self.last_time = now
        entry = (out_seq, out_ts, body, view)
        if self.ring is not None:
            self.ring[out_seq & RING_MASK] = entry
        return entry

    def _late(self, view: RtpView, desc: Vp8Descriptor | None, d: int) -> Sent | None:
        """A packet older than the newest (a retransmission, reordering): its own numbers."""
        seq = view.seq
        body = view.body
        if desc is not None:
            if desc.tid > self.max_tid:
                return None  # of a frame left out: nothing moves now
            pid = desc.picture_id
            if pid >= 0:
                pid_off = self.pid_off if d == 0 else self._late_pid_off(pid)
                if pid_off is None:
                    return None
                out_pid = (pid + pid_off) & (0x7FFF if desc.long_id else 0x7F)
                tl0 = (desc.tl0 + self.tl0_off) & 0xFF if desc.tl0 >= 0 else -1
                if out_pid != pid or tl0 != desc.tl0:
                    body = rewrite(body, desc, out_pid, tl0)
        out_seq = (seq + self.seq_off) & 0xFFFF if d == 0 else self._late_seq(seq)
        entry = (out_seq, (view.ts + self.ts_off) & 0xFFFFFFFF, body, view)
        if self.ring is not None:
            self.ring[out_seq & RING_MASK] = entry
        return entry

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
        self.max_tid = self.want_tid = self.bind_tid  # a keyframe is a base-layer frame: any cap may start here
        self.pid_steps.clear()
        self.pid_base = self.pid_off
        self.dropped_pid = -1
        self.drops.clear()
        self.switches += 1

    def _leave_out(self, seq: int, pid: int) -> None:
        """The newest packet is above the temporal cap: close the gaps it would leave."""
        self.seq_off = (self.seq_off - 1) & 0xFFFF
        self.drops.append(seq)
        if pid >= 0 and pid != self.dropped_pid:
            self.dropped_pid = pid
            self.pid_off -= 1
            self.frames_left_out += 1
            self.pid_steps.append((pid, self.pid_off))
            if len(self.pid_steps) > _REMEMBERED_FRAMES:
                self.pid_base = self.pid_steps.popleft()[1]

    def _late_pid_off(self, pid: int) -> int | None:
        """The picture id offset a late packet's frame had (None: that frame was left out).

        A step ``(p, offset)`` says frame ``p`` was left out and frames after it moved to
        ``offset``; the frames before the oldest step remembered had ``pid_base``.
        """
        if pid < 0:
            return self.pid_off
        for dropped, offset in reversed(self.pid_steps):
            delta = (pid - dropped) & 0x7FFF
            if delta == 0:
                return None
            if delta < 0x4000:  # after that frame
                return offset
        return self.pid_base

    def _late_seq(self, seq: int) -> int:
        """The output number of a packet older than the newest: packets left out after it
        had not moved the numbering yet when it was due."""
        later = 0
        for dropped in reversed(self.drops):
            if (dropped - seq) & 0x8000:
                break
            later += 1
        return (seq + self.seq_off + later) & 0xFFFF
