// The version list of one file: newest first, with the change in size, and
// keyboard movement through it.
import type { Version } from "../bindings";

export interface VersionRow {
  version: Version;
  /** Size change from the previous (older) version; null for the first. */
  delta: number | null;
  label: string;
}

export function rows(versions: Version[]): VersionRow[] {
  const sorted = [...versions].sort((a, b) => Date.parse(a.time) - Date.parse(b.time));
  const out = sorted.map((v, i) => ({
    version: v,
    delta: i === 0 ? null : v.size - sorted[i - 1].size,
    label: i === 0 ? "first version" : `version ${i + 1}`,
  }));
  return out.reverse();
}

/** The row to select after an arrow key (rows are newest first). */
export function step(count: number, current: number, key: string): number {
  if (count === 0) return -1;
  switch (key) {
    case "ArrowDown":
    case "ArrowRight":
      return Math.min(count - 1, current + 1);
    case "ArrowUp":
    case "ArrowLeft":
      return Math.max(0, current - 1);
    case "Home":
      return 0;
    case "End":
      return count - 1;
    default:
      return current;
  }
}

/** Which version the timeline's chosen moment shows: the newest not after it. */
export function versionAt(versions: Version[], time: number): number {
  let best = -1;
  versions.forEach((v, i) => {
    if (Date.parse(v.time) <= time && (best < 0 || Date.parse(v.time) >= Date.parse(versions[best].time))) {
      best = i;
    }
  });
  return best;
}
