import { describe, expect, it } from "vitest";
import { axisLabels, nearest, position, scaleFor, ticks, timeAt } from "../../src/lib/timeline";

const H = 3600_000;
const D = 24 * H;
const now = Date.UTC(2026, 11, 1, 12);

describe("timeline scale", () => {
  const times = [now - 365 * D, now - 30 * D, now - 2 * D, now - 3 * H, now - 5 * 60_000];
  const s = scaleFor(times, now);

  it("puts the oldest snapshot near 0 and now at 1", () => {
    expect(position(s, now - 365 * D)).toBeGreaterThan(0);
    expect(position(s, now - 365 * D)).toBeLessThan(0.01);
    expect(position(s, now)).toBe(1);
    expect(position(s, now + H)).toBe(1);
  });

  it("gives recent time more room than old time", () => {
    const lastDay = position(s, now) - position(s, now - D);
    const aMonthAgo = position(s, now - 30 * D) - position(s, now - 31 * D);
    expect(lastDay).toBeGreaterThan(20 * aMonthAgo);
  });

  it("maps positions back to the same times", () => {
    for (const t of times) expect(timeAt(s, position(s, t))).toBeCloseTo(t, -3);
  });

  it("snaps the pointer to the nearest snapshot", () => {
    expect(nearest(s, times, 1)).toBe(4);
    expect(nearest(s, times, 0)).toBe(0);
    expect(nearest(s, times, position(s, now - 2 * D) + 0.001)).toBe(2);
    expect(nearest(s, [], 0.5)).toBe(-1);
  });

  it("thins crowded marks but keeps the newest and the selected one", () => {
    const burst = Array.from({ length: 50 }, (_, i) => now - 30 * D + i * 60_000);
    const all = [...burst, now - 60_000];
    const sc = scaleFor(all, now);
    const t = ticks(sc, all, 0.01, 3);
    expect(t.length).toBeLessThan(10);
    expect(t.some((k) => k.index === all.length - 1)).toBe(true);
    expect(t.some((k) => k.index === 3)).toBe(true);
    for (let i = 1; i < t.length; i++) expect(t[i].x).toBeGreaterThanOrEqual(t[i - 1].x);
  });

  it("spreads a history of minutes over the slider instead of piling it at now", () => {
    const minutes = [now - 4 * 60_000, now - 60_000];
    const sc = scaleFor(minutes, now);
    expect(position(sc, minutes[1]) - position(sc, minutes[0])).toBeGreaterThan(0.1);
    expect(nearest(sc, minutes, 0)).toBe(0);
  });

  it("labels only ages inside the range, without overlaps", () => {
    const short = scaleFor([now - 3 * H], now);
    expect(axisLabels(short).map((l) => l.label)).toEqual(["now", "1 min", "10 min", "1 h"]);
    const labels = axisLabels(s);
    expect(labels.map((l) => l.label)).toContain("1 year");
    for (let i = 1; i < labels.length; i++) expect(labels[i - 1].x - labels[i].x).toBeGreaterThanOrEqual(0.06);
  });
});
