// First-run setup helpers: reading an enrolment link, checking the own
// storage form. Pure, unit-tested.
import type { Destination } from "../bindings";

export interface Enrolment {
  server: string;
  code: string;
}

/**
 * An enrolment link as an administrator mails it:
 * `tidemark://enroll?server=https://backup.example.com&code=ABCD-1234`, or the
 * server's web address with `?code=` (what a browser would open).
 */
export function parseEnrolLink(text: string): Enrolment | null {
  let u: URL;
  try {
    u = new URL(text.trim());
  } catch {
    return null;
  }
  const code = u.searchParams.get("code");
  if (!code) return null;
  if (u.protocol === "tidemark:") {
    const server = u.searchParams.get("server");
    if (!server || !/^https?:\/\//.test(server)) return null;
    return { server: server.replace(/\/+$/, ""), code };
  }
  if (u.protocol === "https:" || u.protocol === "http:") {
    return { server: u.origin, code };
  }
  return null;
}

export type StorageKind = "folder" | "s3" | "sftp" | "webdav";

export function destinationFor(kind: StorageKind, where: string): Destination {
  const w = where.trim();
  return kind === "folder" ? { kind: "folder", path: w } : { kind: "remote", url: w };
}

export const placeholders: Record<StorageKind, string> = {
  folder: "/media/usb/backup",
  s3: "s3://bucket/prefix?endpoint=https://s3.example.com&region=eu-west-1",
  sftp: "sftp://user@host:22/backups",
  webdav: "webdav://dav.example.com/backups",
};

/** Problems with the own-storage form, in the order a user fixes them. */
export function storageProblems(
  kind: StorageKind,
  where: string,
  password: string,
  repeat: string,
  create: boolean,
): string[] {
  const p: string[] = [];
  const w = where.trim();
  if (!w) p.push(kind === "folder" ? "Choose a folder." : "Enter the storage address.");
  else if (kind === "folder" && !w.startsWith("/")) p.push("The folder must be a full path (starting with /).");
  else if (kind !== "folder" && !w.startsWith(`${kind}://`)) p.push(`The address must start with ${kind}://`);
  if (password.length < 8) p.push("The password needs at least 8 characters.");
  else if (create && password !== repeat) p.push("The two passwords differ.");
  return p;
}
