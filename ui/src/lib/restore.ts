// The restore dialog's logic: what the user chose, what it means, and the
// request the agent gets. Kept apart from the markup so it is unit-tested.
import type { Conflict, RestoreRequest } from "../bindings";

export type Where = "original" | "folder";

export interface RestoreChoice {
  snapshot: string;
  path: string;
  where: Where;
  folder: string;
  conflict: Conflict;
}

export function initial(snapshot: string, path: string): RestoreChoice {
  return { snapshot, path, where: "original", folder: "", conflict: "keep_both" };
}

/** A problem that blocks the restore button, or null. */
export function problem(c: RestoreChoice): string | null {
  if (c.where === "folder") {
    if (!c.folder.trim()) return "Choose a folder to restore into.";
    if (!c.folder.startsWith("/") && !/^[A-Za-z]:[\\/]/.test(c.folder)) {
      return "The folder must be a full path (starting with /).";
    }
  }
  return null;
}

/** Where the item will land, for the dialog to show before restoring. */
export function destination(c: RestoreChoice): string {
  if (c.where === "original") return c.path;
  const base = c.folder.replace(/[\\/]+$/, "");
  return `${base}${c.path.startsWith("/") ? "" : "/"}${c.path}`;
}

/** One sentence on what happens to a file already there. */
export function conflictNote(c: RestoreChoice): string {
  switch (c.conflict) {
    case "keep_both":
      return "If a file is already there, both are kept: the restored one gets a new name.";
    case "replace":
      return "Files already there are replaced by the restored version.";
    case "skip":
      return "Files already there are left alone.";
  }
}

export function request(c: RestoreChoice): RestoreRequest {
  return {
    snapshot: c.snapshot,
    path: c.path,
    target: c.where === "original" ? { kind: "original" } : { kind: "folder", path: c.folder.trim() },
    conflict: c.conflict,
  };
}
