import type { NetworkStatus } from "../bindings";

// Labels live in the UI: the agent sends numbers and times only.

export function bytes(n: number): string {
  const units = ["B", "KB", "MB", "GB", "TB", "PB"];
  let v = n;
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return i === 0 ? `${n} B` : `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

export function dateTime(iso: string | Date): string {
  const d = typeof iso === "string" ? new Date(iso) : iso;
  return d.toLocaleString(undefined, {
    year: "numeric",
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
  });
}

/** "3 minutes ago", "yesterday", … for times in the past. */
export function ago(iso: string | Date, now: Date = new Date()): string {
  const d = typeof iso === "string" ? new Date(iso) : iso;
  const s = Math.round((now.getTime() - d.getTime()) / 1000);
  if (s < 45) return "just now";
  const m = Math.round(s / 60);
  if (m < 60) return `${m} minute${m === 1 ? "" : "s"} ago`;
  const h = Math.round(m / 60);
  if (h < 24) return `${h} hour${h === 1 ? "" : "s"} ago`;
  const days = Math.round(h / 24);
  if (days === 1) return "yesterday";
  if (days < 31) return `${days} days ago`;
  return dateTime(d);
}

/** The throttle's decision in words (the settings' status page). */
export function uploadsText(
  n: Pick<NetworkStatus, "uploads" | "rule" | "from_organisation"> & Partial<Pick<NetworkStatus, "other_traffic_mbps">>,
): string {
  const who = n.from_organisation ? " (your organisation's rule)" : "";
  const u = n.uploads;
  switch (u.kind) {
    case "paused":
      return `Paused: ${n.rule}${who}`;
    case "yielding":
      return n.other_traffic_mbps != null
        ? `Giving way to your own traffic (now ${n.other_traffic_mbps.toFixed(1)} Mbit/s)`
        : "Giving way to your own traffic";
    case "limited":
      return `At most ${u.mbps} Mbit/s, giving way to your own traffic: ${n.rule}${who}`;
    case "share":
      return `At most ${u.percent}% of the connection, giving way to your own traffic: ${n.rule}${who}`;
    case "full":
      return `Full speed: ${n.rule}${who}`;
  }
}
