// The UI with the Tauri IPC mocked: a small in-memory agent with three
// backups of a documents folder, for the browser tests (Playwright with
// Debian's Chromium). `?configured=0` starts at the first-run setup.
import { mockIPC } from "@tauri-apps/api/mocks";
import { emit } from "@tauri-apps/api/event";

type Args = Record<string, any>;
const now = Date.now();
const iso = (msAgo: number) => new Date(now - msAgo).toISOString();
const H = 3600_000;
const D = 24 * H;
const DOCS = "/home/me/Documents";

const snaps = [
  { id: "a".repeat(64), time: iso(30 * D), hostname: "laptop", paths: [DOCS], files: 3, bytes: 3000 },
  { id: "b".repeat(64), time: iso(2 * D), hostname: "laptop", paths: [DOCS], files: 3, bytes: 3500 },
  { id: "c".repeat(64), time: iso(10 * 60_000), hostname: "laptop", paths: [DOCS], files: 2, bytes: 2600 },
];

interface FakeFile { path: string; kind: "file" | "dir"; size: number; text?: string }
// What each snapshot holds: report.txt changes, notes.md is deleted in the last one.
const trees: FakeFile[][] = [
  [
    { path: `${DOCS}/report.txt`, kind: "file", size: 1000, text: "Quarterly report, first draft" },
    { path: `${DOCS}/notes.md`, kind: "file", size: 500, text: "# Notes" },
    { path: `${DOCS}/photos`, kind: "dir", size: 0 },
  ],
  [
    { path: `${DOCS}/report.txt`, kind: "file", size: 1500, text: "Quarterly report, second draft" },
    { path: `${DOCS}/notes.md`, kind: "file", size: 500, text: "# Notes" },
    { path: `${DOCS}/photos`, kind: "dir", size: 0 },
  ],
  [
    { path: `${DOCS}/report.txt`, kind: "file", size: 2100, text: "Quarterly report, final" },
    { path: `${DOCS}/photos`, kind: "dir", size: 0 },
  ],
];

const query = new URLSearchParams(location.search);
const configured = query.get("configured") !== "0";
// `?password=missing`: no password stored here; `?nokeyring=1`: no Secret
// Service, so secrets go to a file only with the user's consent.
const noKeyring = query.get("nokeyring") === "1";
const GOOD_PASSWORD = "correct horse battery";
const state: Args = {
  config: {
    destination: configured ? { kind: "folder", path: "/media/usb/backup" } : null,
    folders: ["/home/me/Documents"],
    excludes: [".cache", "node_modules"],
    exclude_caches: true,
    every_minutes: 60,
    continuous: true,
    full_scan_hours: 6,
    retention: { within_hours: 24, hourly: 168, daily: 30, weekly: 52, monthly: 120 },
    password_file: null,
  },
  status: configured
    ? { state: "idle", last_backup: snaps[2].time, next_backup: null }
    : { state: "not_configured" },
  autostart: false,
  passwordStored: query.get("password") === "missing" ? null : "keyring",
};
const noKeyringError = () =>
  fail("keyring", "this computer's keyring could not be used: no Secret Service (GNOME Keyring or KWallet) is reachable on this desktop");
const calls: { cmd: string; args: Args }[] = [];
(window as any).__calls = calls;

const name = (p: string) => p.slice(p.lastIndexOf("/") + 1);
const parent = (p: string) => p.slice(0, p.lastIndexOf("/")) || "/";
const idx = (id: string) => snaps.findIndex((s) => s.id === id);
const entry = (f: FakeFile, deleted: boolean, seenIn: number | null) => ({
  name: name(f.path),
  path: f.path,
  kind: f.kind,
  size: f.size,
  mtime: snaps[seenIn ?? 0].time,
  deleted,
  last_seen_in: seenIn === null ? null : snaps[seenIn].id,
  last_seen: seenIn === null ? null : snaps[seenIn].time,
});

function fail(code: string, message: string): never {
  throw { code, message };
}

const handlers: Record<string, (a: Args) => unknown> = {
  status: () => state.status,
  get_config: () => structuredClone(state.config),
  set_config: (a) => {
    state.config = a.config;
    return null;
  },
  suggested_folders: () => ["/home/me/Documents", "/home/me/Desktop", "/home/me/Pictures"],
  setup_own_storage: (a) => {
    if (a.setup.password === "wrong password") fail("wrong_password", "wrong password for /media/usb/backup");
    if (noKeyring && !a.setup.password_file) noKeyringError();
    state.config.destination = a.setup.destination;
    return {
      location: a.setup.destination.path ?? a.setup.destination.url,
      password_stored_in: noKeyring ? "file" : "keyring",
      recovery_key: a.setup.recovery_key ? "0a1b-2c3d-4e5f-6a7b-8c9d-0e1f-2a3b-4c5d" : null,
    };
  },
  enroll: (a) => {
    if (a.code !== "GOOD-CODE") fail("server", "the server answered 403: this enrolment code is not valid");
    if (noKeyring && !a.secretFile) noKeyringError();
    state.config.destination = { kind: "server", url: a.url };
    return { server: a.url, user: "alice", admin: false, device_id: 7, fingerprint: "ab:cd", secret_stored_in: a.secretFile ?? "the Secret Service" };
  },
  enter_password: (a) => {
    if (a.entry.password !== GOOD_PASSWORD) fail("wrong_password", "wrong password for /media/usb/backup: check it and try again");
    if (noKeyring && !a.entry.password_file) noKeyringError();
    state.passwordStored = noKeyring ? "file" : "keyring";
    return { location: "/media/usb/backup", password_stored_in: state.passwordStored, recovery_key: null };
  },
  password_state: () => ({ needed: state.config.destination?.kind !== "server", stored_in: state.passwordStored }),
  suggested_secret_file: (a) => `/home/me/.config/tidemark/secrets/${a.name}`,
  backup_now: () => {
    state.status = { state: "backing_up", progress: { files_done: 1, bytes_done: 500, bytes_total: 1000, started: iso(0) } };
    emit("agent-event", { type: "status", status: state.status });
    return null;
  },
  pause: () => null,
  resume: () => null,
  snapshots: () => snaps,
  list_dir: (a) => {
    const at = idx(a.snapshot);
    if (at < 0) fail("invalid", "no such snapshot");
    const here = trees[at].filter((f) => parent(f.path) === a.path);
    const out = here.map((f) => entry(f, false, null));
    if (a.deleted) {
      for (let i = at - 1; i >= 0; i--) {
        for (const f of trees[i]) {
          if (parent(f.path) === a.path && !out.some((e) => e.path === f.path)) out.push(entry(f, true, i));
        }
      }
    }
    return out.sort((x, y) => x.name.localeCompare(y.name));
  },
  versions: (a) => {
    const out: Args[] = [];
    trees.forEach((t, i) => {
      const f = t.find((x) => x.path === a.path);
      if (!f) return;
      const last = out[out.length - 1];
      if (last && last.size === f.size) last.last_seen = snaps[i].time;
      else out.push({ snapshot: snaps[i].id, time: snaps[i].time, last_seen: snaps[i].time, size: f.size, mtime: snaps[i].time });
    });
    return out;
  },
  search: (a) => {
    const q = String(a.query).toLowerCase();
    const hits = new Map<string, Args>();
    trees.forEach((t, i) =>
      t.filter((f) => name(f.path).toLowerCase().includes(q)).forEach((f) => {
        const h = hits.get(f.path) ?? { path: f.path, name: name(f.path), kind: f.kind, size: f.size, first_seen: snaps[i].time, snapshots: 0 };
        h.snapshots++;
        h.last_seen = snaps[i].time;
        h.last_snapshot = snaps[i].id;
        h.size = f.size;
        h.deleted = i !== trees.length - 1;
        hits.set(f.path, h);
      }),
    );
    return [...hits.values()];
  },
  preview: (a) => {
    const f = trees[idx(a.snapshot)]?.find((x) => x.path === a.path);
    if (!f) fail("snapshot", `path '${a.path}' is not in the snapshot`);
    return { kind: "text", text: f.text ?? "", truncated: false };
  },
  restore: (a) => {
    setTimeout(() => emit("agent-event", { type: "restore_finished", files: 1, bytes: 10, target: a.request.target.path ?? "/", errors: 0 }), 50);
    return null;
  },
  overview: () => ({
    last_backup: snaps[2].time,
    snapshots: 3,
    bytes_protected: 2600,
    bytes_stored: 1200,
    bytes_logical: 9100,
    recent: snaps.map((s) => ({ snapshot: s.id, time: s.time, files: s.files, bytes: s.bytes, bytes_added: 100, bytes_stored: 80, unreadable: 0 })).reverse(),
    watching: { folders: 1, overflows: 0, problems: [] },
    catalog_bytes: 409600,
  }),
  enrolment_problem: () => (new URLSearchParams(location.search).get("refused") ? "this enrolment file was not signed by your organisation's key" : null),
  other_devices: () => [
    { hostname: "old-laptop", snapshots: 40, latest: "f".repeat(64), latest_time: snaps[1].time, paths: ["/home/me/Documents"], files: 1234, bytes: 5600000 },
  ],
  network_status: () => ({
    uploads: { kind: "paused" },
    rule: "metered connection",
    from_organisation: true,
    rate_mbps: 0,
    capacity_mbps: 9.4,
    other_traffic_mbps: null,
    metered: true,
    network: "Phone hotspot",
    on_battery: false,
    sources: ["connection: NetworkManager"],
  }),
  get_autostart: () => state.autostart,
  set_autostart: (a) => {
    state.autostart = a.enabled;
    return null;
  },
  "plugin:dialog|open": () => "/home/me/Chosen",
};

mockIPC(
  (cmd, args) => {
    calls.push({ cmd, args: (args ?? {}) as Args });
    const h = handlers[cmd];
    if (!h) throw new Error(`mock: no command ${cmd}`);
    return h((args ?? {}) as Args);
  },
  { shouldMockEvents: true },
);

await import("../main");
