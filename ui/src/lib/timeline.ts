// The timeline slider's scale: time along a logarithm of age, so the last
// hours get as much room as the last months ("dense near now, sparse
// further back"). Pure functions, unit-tested.

const HOUR = 60 * 60 * 1000;

export interface Scale {
  now: number;
  oldest: number;
  /** Ages below this feel linear; above it, logarithmic. */
  unit: number;
}

export function scaleFor(times: number[], now: number): Scale {
  const first = times.length ? Math.min(...times) : now - HOUR;
  // Some room before the oldest snapshot, and at least a minute in all, so
  // a lone snapshot is not pinned to the edge.
  const range = Math.max(60_000, (now - first) * 1.05);
  // An hour for long histories (the last day then takes a third of the
  // slider); proportionally less for a history of minutes, which would
  // otherwise all sit at "now".
  const unit = Math.min(HOUR, Math.max(1000, range / 1000));
  return { now, oldest: now - range, unit };
}

function span(s: Scale): number {
  return Math.log1p((s.now - s.oldest) / s.unit);
}

/** Position in [0, 1] of a time: 0 is the oldest snapshot, 1 is now. */
export function position(s: Scale, t: number): number {
  const age = Math.max(0, s.now - t);
  const x = 1 - Math.log1p(age / s.unit) / span(s);
  return Math.min(1, Math.max(0, x));
}

/** The time at a position: the inverse of `position`. */
export function timeAt(s: Scale, x: number): number {
  const c = Math.min(1, Math.max(0, x));
  return s.now - s.unit * Math.expm1((1 - c) * span(s));
}

/** Index of the snapshot nearest to position `x` (snapshots sorted by time). */
export function nearest(s: Scale, times: number[], x: number): number {
  let best = -1;
  let dist = Infinity;
  times.forEach((t, i) => {
    const d = Math.abs(position(s, t) - x);
    if (d < dist) {
      dist = d;
      best = i;
    }
  });
  return best;
}

export interface Tick {
  index: number;
  x: number;
}

/**
 * Marks for the snapshots, thinned so no two are closer than `minGap` (in
 * position units): the newest snapshot of a crowded stretch keeps its mark.
 * The selected snapshot always has one.
 */
export function ticks(s: Scale, times: number[], minGap: number, selected = -1): Tick[] {
  const out: Tick[] = [];
  let lastX = Infinity;
  for (let i = times.length - 1; i >= 0; i--) {
    const x = position(s, times[i]);
    if (i === selected || lastX - x >= minGap) {
      out.push({ index: i, x });
      lastX = x;
    }
  }
  return out.reverse();
}

/** Labels along the axis: "now", then round ages that fit. */
export function axisLabels(s: Scale): { x: number; label: string }[] {
  const marks: [number, string][] = [
    [0, "now"],
    [60_000, "1 min"],
    [10 * 60_000, "10 min"],
    [HOUR, "1 h"],
    [6 * HOUR, "6 h"],
    [24 * HOUR, "1 day"],
    [7 * 24 * HOUR, "1 week"],
    [30 * 24 * HOUR, "1 month"],
    [365 * 24 * HOUR, "1 year"],
  ];
  // Labels closer than 6% of the width would overlap; keep the older one's
  // neighbour out.
  const out: { x: number; label: string }[] = [];
  for (const [age, label] of marks) {
    if (age > s.now - s.oldest) break;
    const x = position(s, s.now - age);
    if (out.length === 0 || out[out.length - 1].x - x >= 0.06) out.push({ x, label });
  }
  return out;
}
