// What WebRTC statistics say about the meeting: who is speaking (audio levels) and how good
// each person's connection looks (packet loss, round-trip time, encoder limits). Each browser
// measures for itself, so the forwarding server does no extra work and encrypted meetings
// work the same.

export const SPEAKING_LEVEL = 0.02;  // audioLevel (0..1) above which someone counts as speaking
const QUALITY_EVERY_MS = 2000;
const MIN_PACKETS = 20;  // fewer packets than this in an interval says nothing about loss

/** "good" | "fair" | "poor" | "unknown" from loss (0..1), round-trip time (s) and whether
 *  the sender's encoder is held back by bandwidth. */
export function assessQuality({ loss = null, rtt = null, limited = false } = {}) {
  if (loss === null && rtt === null) return "unknown";
  if ((loss !== null && loss > 0.08) || (rtt !== null && rtt > 0.6)) return "poor";
  if ((loss !== null && loss > 0.02) || (rtt !== null && rtt > 0.3) || limited) return "fair";
  return "good";
}

export class StatsReader {
  constructor() {
    this.counts = new Map();  // participant id -> {lost, received} at the last quality reading
    this.quality = new Map();  // participant id -> level
    this.lastQuality = 0;
  }

  reset() {
    this.counts.clear();
    this.quality.clear();
    this.lastQuality = 0;
  }

  /** One reading. `slotOf(mid)` gives the receive slot of an m-line; `selfId` is us.
   *  Returns {levels: Map(id -> 0..1), quality: Map(id -> level) or null when not due}. */
  async read(pc, slotOf, selfId, selfMuted) {
    const stats = await pc.getStats();
    const levels = new Map();
    const inbound = new Map();  // id -> {lost, received}
    let rtt = null;
    let limited = false;
    let sentLoss = null;
    let sentRtt = null;
    stats.forEach((report) => {
      if (report.type === "inbound-rtp") {
        const slot = slotOf(report.mid);
        if (!slot) return;
        if (report.kind === "audio") levels.set(slot.participant, Math.max(levels.get(slot.participant) || 0, report.audioLevel || 0));
        const sum = inbound.get(slot.participant) || { lost: 0, received: 0 };
        sum.lost += Math.max(0, report.packetsLost || 0);
        sum.received += report.packetsReceived || 0;
        inbound.set(slot.participant, sum);
      } else if (report.type === "media-source" && report.kind === "audio" && selfId && !selfMuted) {
        levels.set(selfId, report.audioLevel || 0);
      } else if (report.type === "candidate-pair" && report.nominated && report.state === "succeeded") {
        if (typeof report.currentRoundTripTime === "number") rtt = report.currentRoundTripTime;
      } else if (report.type === "outbound-rtp" && report.kind === "video") {
        if (report.qualityLimitationReason === "bandwidth") limited = true;
      } else if (report.type === "remote-inbound-rtp") {
        if (typeof report.fractionLost === "number") sentLoss = Math.max(sentLoss || 0, report.fractionLost);
        if (typeof report.roundTripTime === "number") sentRtt = Math.max(sentRtt || 0, report.roundTripTime);
      }
    });
    const now = performance.now();
    if (now - this.lastQuality < QUALITY_EVERY_MS) return { levels, quality: null };
    this.lastQuality = now;
    for (const [id, sum] of inbound) {
      const before = this.counts.get(id) || { lost: 0, received: 0 };
      const lost = sum.lost - before.lost;
      const got = sum.received - before.received;
      this.counts.set(id, sum);
      const loss = lost + got >= MIN_PACKETS ? lost / (lost + got) : null;
      if (loss === null && this.quality.has(id)) continue;  // too little to go on: keep the last
      this.quality.set(id, assessQuality({ loss, rtt }));
    }
    if (selfId) this.quality.set(selfId, assessQuality({ loss: sentLoss, rtt: sentRtt ?? rtt, limited }));
    return { levels, quality: this.quality };
  }
}
