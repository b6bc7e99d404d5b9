import { describe, expect, it } from "vitest";
import { rows, step, versionAt } from "../../src/lib/versions";
import type { Version } from "../../src/bindings";

const v = (time: string, size: number): Version => ({ snapshot: time, time, last_seen: time, size, mtime: time });
const list = [v("2026-11-03T10:00:00Z", 1500), v("2026-11-01T10:00:00Z", 1000), v("2026-11-20T10:00:00Z", 900)];

describe("version list", () => {
  it("shows newest first with the size change from the version before", () => {
    const r = rows(list);
    expect(r.map((x) => x.version.size)).toEqual([900, 1500, 1000]);
    expect(r.map((x) => x.delta)).toEqual([-600, 500, null]);
    expect(r[2].label).toBe("first version");
    expect(r[0].label).toBe("version 3");
  });

  it("moves with the arrow keys and stops at the ends", () => {
    expect(step(3, 0, "ArrowDown")).toBe(1);
    expect(step(3, 2, "ArrowDown")).toBe(2);
    expect(step(3, 0, "ArrowUp")).toBe(0);
    expect(step(3, 1, "End")).toBe(2);
    expect(step(3, 2, "Home")).toBe(0);
    expect(step(3, 1, "a")).toBe(1);
    expect(step(0, 0, "ArrowDown")).toBe(-1);
  });

  it("finds the version a moment shows", () => {
    expect(versionAt(list, Date.parse("2026-11-02T00:00:00Z"))).toBe(1);
    expect(versionAt(list, Date.parse("2026-11-25T00:00:00Z"))).toBe(2);
    expect(versionAt(list, Date.parse("2026-10-01T00:00:00Z"))).toBe(-1);
  });
});
