import { describe, expect, it } from "vitest";
import { conflictNote, destination, initial, problem, request } from "../../src/lib/restore";

describe("restore dialog", () => {
  it("restores to the original place, keeping both, by default", () => {
    const c = initial("abc", "/home/me/Documents/report.txt");
    expect(problem(c)).toBeNull();
    expect(destination(c)).toBe("/home/me/Documents/report.txt");
    expect(request(c)).toEqual({
      snapshot: "abc",
      path: "/home/me/Documents/report.txt",
      target: { kind: "original" },
      conflict: "keep_both",
    });
  });

  it("needs a full path when restoring elsewhere", () => {
    const c = { ...initial("abc", "/home/me/a.txt"), where: "folder" as const };
    expect(problem(c)).toMatch(/Choose a folder/);
    expect(problem({ ...c, folder: "relative/dir" })).toMatch(/full path/);
    const ok = { ...c, folder: "/tmp/out/ " };
    expect(problem(ok)).toBeNull();
    expect(destination({ ...ok, folder: "/tmp/out/" })).toBe("/tmp/out/home/me/a.txt");
    expect(request(ok).target).toEqual({ kind: "folder", path: "/tmp/out/" });
  });

  it("explains each conflict rule", () => {
    const c = initial("abc", "/x");
    expect(conflictNote(c)).toMatch(/both are kept/);
    expect(conflictNote({ ...c, conflict: "replace" })).toMatch(/replaced/);
    expect(conflictNote({ ...c, conflict: "skip" })).toMatch(/left alone/);
    expect(request({ ...c, conflict: "replace" }).conflict).toBe("replace");
  });
});
