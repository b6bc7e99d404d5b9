// The built desktop app, driven through its own webview (tauri-driver +
// WebKitWebDriver) under Xvfb; started by tests/e2e/run.sh, which sets up
// the display, the tray host, a session keyring and a throwaway HOME.
//
// The scenario a person follows: complete the setup with a folder
// destination, back up a folder, change a file, back up again, open the
// timeline, move the slider to the first backup, restore that version of
// the file to a new folder, and check the restored bytes. Screenshots of
// the wizard, the timeline and the tray menu go to docs/screenshots/.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { mkdirSync, readFileSync, readdirSync, writeFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import { Session, sleep } from "./webdriver.mjs";

const WORK = process.env.E2E_WORK;
const APP = process.env.E2E_APP;
const SHOTS = process.env.E2E_SHOTS;
const HOME = process.env.HOME;
const DOCS = join(HOME, "Documents");
const REPO = join(WORK, "usb", "backup");
const RESTORED = join(WORK, "restored");
const KEY = { home: "\uE011", end: "\uE010", left: "\uE012", right: "\uE014", down: "\uE015", enter: "\uE007" };
let s;

async function shot(name) {
  mkdirSync(SHOTS, { recursive: true });
  // The webview paints a little after the DOM changes.
  await sleep(400);
  writeFileSync(join(SHOTS, name), Buffer.from(await s.screenshot(), "base64"));
}

/** Calls an app command from inside the webview, as the UI does. */
async function invoke(cmd, args = {}) {
  return s.scriptAsync(
    `const done = arguments[arguments.length - 1];
     window.__TAURI_INTERNALS__.invoke(arguments[0], arguments[1]).then(done, (e) => done({ failed: e }));`,
    [cmd, args],
  );
}

async function until(what, f, timeoutMs = 120_000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}; page says: ${(await s.text()).slice(0, 500)}`);
    await sleep(300);
  }
}

before(async () => {
  assert.ok(WORK && APP && SHOTS, "run through tests/e2e/run.sh");
  mkdirSync(join(DOCS, "work"), { recursive: true });
  mkdirSync(join(WORK, "usb"), { recursive: true });
  writeFileSync(join(DOCS, "work", "report.txt"), "Quarterly report, first draft\n");
  writeFileSync(join(DOCS, "notes.md"), "# Notes\n\n- call the bank\n");
  s = await Session.start("http://127.0.0.1:4444", APP);
});

after(async () => {
  await s?.end();
});

test("set up, back up twice, restore the first version from the timeline", async () => {
  // First run: nothing is set up, so the setup opens by itself.
  await s.findText("h1", "Set up Tidemark");
  await shot("wizard-start.png");
  await s.clickText("button", "My own storage");
  await s.type(await s.find("#where"), REPO);
  await s.type(await s.find("#password"), "correct horse battery");
  await s.type(await s.find("#repeat"), "correct horse battery");
  await s.clickText("label", "lost password means lost backups");
  await shot("wizard-storage.png");
  await s.clickText("button", "Continue");
  await s.findText("h2", "Your recovery key", 60_000);
  const key = await s.script("return document.querySelector('.key code').textContent");
  assert.match(key, /^[0-9a-f]{4}(-[0-9a-f]{4}){7}$/);
  await s.clickText("label", "I have saved the recovery key");
  await s.clickText("button", "Continue");
  await s.findText("h2", "What to back up");
  // The suggested folder is the user's Documents, ticked.
  await s.findText("label", DOCS);
  await shot("wizard-folders.png");
  await s.clickText("button", "Start the first backup");
  await s.findText("h2", "Your first backup is running");
  await s.findText("p", "Your files are protected", 120_000);
  assert.ok(existsSync(join(REPO, "config")), "the repository was created where the user said");
  // The setup turned on starting at login, in the background (tray only).
  const autostart = join(HOME, ".config", "autostart");
  const entries = existsSync(autostart) ? readdirSync(autostart).filter((f) => f.endsWith(".desktop")) : [];
  assert.equal(entries.length, 1, `one autostart entry in ${autostart}`);
  const entry = readFileSync(join(autostart, entries[0]), "utf8");
  assert.match(entry, /^Exec=.*tidemark-app.*--background/m);

  const first = await until("one backup", async () => {
    const r = await invoke("snapshots");
    return Array.isArray(r) && r.length === 1 && r;
  });

  // Change the file and back up again from the status line's button.
  writeFileSync(join(DOCS, "work", "report.txt"), "Quarterly report, final version with figures\n");
  await s.script("window.location.hash = '#/timeline'");
  await s.clickText("button", "Back up now");
  await until("a second backup", async () => {
    const r = await invoke("snapshots");
    return Array.isArray(r) && r.length === 2;
  });

  // The timeline, reloaded, opens on the newest backup.
  await s.script("window.location.reload()");
  await s.findText("button.entry", "work");
  await shot("timeline.png");
  // Move the slider to the first backup with the keyboard, as a person
  // would. (Found afresh: the page has just reloaded.)
  await s.fresh(async () => {
    const slider = await s.find("input[type=range]");
    await s.click(slider);
    await s.keys(slider, KEY.home);
  });
  await until("the first backup selected", async () =>
    (await s.script("return document.querySelector('input[type=range]').dataset.snapshot")) === first[0].id);
  await s.clickText("button.entry", "work");
  await s.clickText("button.entry", "report.txt");
  await s.findText("[role=option]", "first version");
  await s.findText("pre.preview", "first draft");
  await shot("timeline-versions.png");
  await s.clickText("button", "Restore this version");
  await s.clickText("dialog label", "Another folder");
  await s.type(await s.find("#restore-folder"), RESTORED);
  await s.findText("dialog p", `restored to ${RESTORED}/`);
  await shot("restore-dialog.png");
  await s.clickText("dialog button", "Restore");
  await s.findText("[role=status]", "Restored 1 file(s)", 60_000);
  const restored = join(RESTORED, DOCS.slice(1), "work", "report.txt");
  assert.equal(readFileSync(restored, "utf8"), "Quarterly report, first draft\n");
  assert.equal(readFileSync(join(DOCS, "work", "report.txt"), "utf8"), "Quarterly report, final version with figures\n");
  assert.equal(first[0].files, 2);
});

test("after a restart in the background, a click on the tray icon opens its menu", async () => {
  // The app as it runs after login: started with --background (what the
  // autostart entry runs), no window, only the tray, with the settings and
  // backups of the scenario above.
  await s.end();
  s = null;
  // Closing the window leaves the app in the tray, and it holds the one
  // instance: end it, as logging out would.
  await endRunningApps();
  const app = spawn(APP, ["--background"], { env: process.env, stdio: "ignore" });
  try {
    await sleep(4000);
    assert.equal(app.exitCode, null, "the app runs (no other instance took over)");
    await openTrayMenu();
  } finally {
    await stop(app);
  }
});

async function stop(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once("exit", r));
  child.kill();
  await exited;
}

/** The pids of the apps WebDriver started (tauri-driver's descendants). */
function driverApps() {
  const parent = new Map();
  const name = new Map();
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, "utf8");
      // pid (comm) state ppid ...: comm may hold spaces, so split after ")".
      const close = stat.lastIndexOf(")");
      name.set(d, stat.slice(stat.indexOf("(") + 1, close));
      parent.set(d, stat.slice(close + 2).split(" ")[1]);
    } catch {
      // the process ended meanwhile
    }
  }
  const root = String(process.env.E2E_DRIVER_PID ?? "");
  const under = (pid) => {
    for (let p = parent.get(pid), i = 0; p && p !== "0" && i < 50; p = parent.get(p), i++) if (p === root) return true;
    return false;
  };
  return [...name.keys()].filter((p) => root && name.get(p) === "tidemark-app" && under(p)).map(Number);
}

/**
 * Ends the copies of the app this test started through WebDriver (by pid,
 * never by name: a developer's own Tidemark must live) and waits for them.
 */
async function endRunningApps() {
  for (const pid of driverApps()) {
    try {
      process.kill(pid);
    } catch {
      // ended by itself between the listing and the kill
    }
  }
  for (let i = 0; i < 50 && driverApps().length; i++) await sleep(200);
  assert.deepEqual(driverApps(), [], "the app did not end");
}

async function openTrayMenu() {
  // trayer hosts the tray icon at the bottom right of the screen. The menu
  // is a popup drawn by GTK, so the check is on the screen itself: a click
  // on the icon must change a large area above the tray.
  const env = { ...process.env };
  // trayer has a small hidden window besides its panel: take the widest.
  const g = execFileSync("xdotool", ["search", "--class", "trayer"], { env })
    .toString().trim().split("\n")
    .map((w) => Object.fromEntries(
      execFileSync("xdotool", ["getwindowgeometry", "--shell", w], { env }).toString().trim().split("\n").map((l) => l.split("=")),
    ))
    .sort((a, b) => Number(b.WIDTH) - Number(a.WIDTH))[0];
  assert.ok(g && Number(g.WIDTH) > 50, "trayer's panel is on the screen");
  mkdirSync(SHOTS, { recursive: true });
  const before = join(WORK, "before.png");
  const after = join(SHOTS, "tray-menu.png");
  execFileSync("import", ["-window", "root", before], { env });
  // trayer aligns its icons to the right end of its panel.
  const x = Number(g.X) + Number(g.WIDTH) - 18;
  const y = Number(g.Y) + Math.floor(Number(g.HEIGHT) / 2);
  let pixels = 0;
  // Only the area above the tray, where the menu opens, is compared.
  const area = `300x360+${Number(g.X) + Number(g.WIDTH) - 300}+${Number(g.Y) - 360}`;
  for (let attempt = 0; attempt < 3 && pixels <= 5000; attempt++) {
    execFileSync("xdotool", ["mousemove", String(x), String(y), "click", "1"], { env });
    await sleep(1500);
    execFileSync("import", ["-window", "root", after], { env });
    let changed;
    try {
      changed = execFileSync("compare", ["-metric", "AE", `${before}[${area}]`, `${after}[${area}]`, "null:"], { env, stdio: ["ignore", "pipe", "pipe"] });
    } catch (e) {
      // compare exits 1 when the images differ and prints the count on stderr.
      changed = e.stderr;
    }
    pixels = Number(String(changed).trim().split(/\s/)[0]);
  }
  assert.ok(pixels > 5000, `the tray menu did not appear (${pixels} pixels changed)`);
  execFileSync("xdotool", ["key", "Escape"], { env });
}

/** The ids of the app's visible windows (titled "Tidemark"). */
function visibleWindows() {
  try {
    return execFileSync("xdotool", ["search", "--onlyvisible", "--name", "^Tidemark$"], { env: { ...process.env } })
      .toString().trim();
  } catch {
    return ""; // xdotool exits 1 when it finds none
  }
}

test("one instance only: a second launch shows the running one's window and ends", async () => {
  await endRunningApps();
  const first = spawn(APP, ["--background"], { env: process.env, stdio: "ignore" });
  try {
    await sleep(4000);
    assert.equal(visibleWindows(), "", "started in the background: no window yet");
    assert.equal(first.exitCode, null, "the first instance runs");
    const second = spawn(APP, [], { env: process.env, stdio: "ignore" });
    const code = await Promise.race([
      new Promise((r) => second.once("exit", (c) => r(c))),
      sleep(15_000).then(() => "still running after 15 s"),
    ]);
    await stop(second);
    assert.equal(code, 0, "the second launch hands over and ends");
    let shown = "";
    for (let i = 0; i < 30 && !shown; i++) {
      await sleep(300);
      shown = visibleWindows();
    }
    assert.ok(shown, "the running instance opened its window");
    assert.equal(first.exitCode, null, "the running instance goes on");
  } finally {
    await stop(first);
  }
});

test("a finished restore is announced on the desktop", () => {
  // The restore of the first test, as dbus-monitor saw the app ask the
  // notification daemon (tests/e2e/run.sh starts both on the session bus).
  const log = readFileSync(join(WORK, "notifications.log"), "utf8");
  assert.match(log, /member=Notify/, `no notification was asked for:\n${log.slice(0, 2000)}`);
  assert.match(log, /string "Restore finished"/);
  assert.match(log, new RegExp(`string "1 file\\(s\\) restored under ${RESTORED}`));
});

// ---- A reboot: the secrets must still be there (issue 19, section 5) ----

/** Polls `f` until it holds, with no WebDriver session needed. */
async function waitFor(what, f, timeoutMs) {
  const end = Date.now() + timeoutMs;
  while (!(await f())) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await sleep(300);
  }
}

const KEYRING_PID = join(WORK, "keyring.pid");
/** The Secret Service started after a "reboot": this test's child. */
let keyringDaemon = null;

after(async () => {
  if (keyringDaemon) await stop(keyringDaemon);
});

function secretServiceUp() {
  try {
    return execFileSync("dbus-send", ["--session", "--print-reply", "--dest=org.freedesktop.DBus", "/org/freedesktop/DBus",
      "org.freedesktop.DBus.NameHasOwner", "string:org.freedesktop.secrets"]).toString().includes("boolean true");
  } catch {
    return false;
  }
}

/**
 * What a reboot does to secrets: the Secret Service daemon ends (its
 * collection stays a file under HOME), the kernel key store is emptied
 * (this run's session keyring, which links the persistent one, and every
 * Tidemark key still reachable from it), and the daemon starts again at
 * "login", unlocked with the login password.
 */
async function reboot() {
  if (keyringDaemon) {
    await stop(keyringDaemon);
  } else {
    const pid = Number(readFileSync(KEYRING_PID, "utf8").trim());
    try {
      process.kill(pid);
    } catch {
      // already ended
    }
  }
  for (let i = 0; i < 50 && secretServiceUp(); i++) await sleep(100);
  assert.equal(secretServiceUp(), false, "the Secret Service ended");
  // Tidemark's kernel keys (older versions kept secrets only there), then
  // everything in this run's session keyring.
  const ids = execFileSync("sh", ["-c", "keyctl rlist @s 2>/dev/null; keyctl rlist $(keyctl get_persistent @s 2>/dev/null || echo @s) 2>/dev/null; true"])
    .toString().split(/\s+/).filter(Boolean);
  for (const id of ids) {
    let desc = "";
    try {
      desc = execFileSync("keyctl", ["rdescribe", id]).toString();
    } catch {
      continue;
    }
    if (desc.includes("@tidemark")) execFileSync("keyctl", ["invalidate", id]);
  }
  execFileSync("keyctl", ["clear", "@s"]);
  assert.doesNotMatch(execFileSync("keyctl", ["show", "@s"]).toString(), /tidemark/);
  keyringDaemon = spawn("gnome-keyring-daemon", ["--foreground", "--unlock", "--components=secrets"], {
    env: process.env,
    stdio: ["pipe", "ignore", "ignore"],
  });
  keyringDaemon.stdin.end(process.env.E2E_KEYRING_PASSWORD);
  await waitFor("the Secret Service after the reboot", async () => secretServiceUp(), 20_000);
}

/** The snapshots in a folder repository. */
function snapshotCount(repo) {
  const dir = join(repo, "snapshots");
  const walk = (d) => readdirSync(d, { withFileTypes: true }).reduce((n, e) => n + (e.isDirectory() ? walk(join(d, e.name)) : 1), 0);
  return existsSync(dir) ? walk(dir) : 0;
}

/**
 * The laptop was off for a while: the last backup was two hours ago, so
 * the app started at login has one due (the schedule is hourly).
 */
function makeBackupOverdue() {
  const file = join(process.env.XDG_DATA_HOME, "tidemark", "agent-state.json");
  const st = JSON.parse(readFileSync(file, "utf8"));
  const twoHoursAgo = new Date(Date.now() - 2 * 3600_000).toISOString();
  st.last_success = twoHoursAgo;
  st.last_attempt = twoHoursAgo;
  st.requested = false;
  writeFileSync(file, JSON.stringify(st));
  return Date.parse(twoHoursAgo);
}

/** When the agent last finished a backup (its run state), in ms. */
function lastSuccess() {
  const st = JSON.parse(readFileSync(join(process.env.XDG_DATA_HOME, "tidemark", "agent-state.json"), "utf8"));
  return st.last_success ? Date.parse(st.last_success) : 0;
}

/** Starts the app as the autostart entry does and waits for a backup. */
async function startAtLoginAndWaitForBackup(done) {
  const app = spawn(APP, ["--background"], { env: process.env, stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  app.stderr.on("data", (d) => (log += d));
  try {
    await waitFor("a backup after the reboot", done, 180_000).catch((e) => {
      const state = readFileSync(join(process.env.XDG_DATA_HOME, "tidemark", "agent-state.json"), "utf8");
      throw new Error(`${e.message}\nagent state: ${state}\napp log:\n${log.slice(-3000)}`);
    });
    assert.equal(visibleWindows(), "", "nothing was asked: no window opened");
    assert.doesNotMatch(log, /no password|not enrolled/i);
  } finally {
    await stop(app);
  }
}

test("after a reboot, the app started at login backs up own storage without asking anything", async () => {
  await endRunningApps();
  const before = snapshotCount(REPO);
  assert.ok(before >= 2, `the first test made backups (${before})`);
  await reboot();
  makeBackupOverdue();
  // As the autostart entry starts it (checked in the first test).
  await startAtLoginAndWaitForBackup(async () => snapshotCount(REPO) > before);
});

test("after a reboot, a company device is still enrolled and backs up", async () => {
  await endRunningApps();
  // A real company server on loopback, HTTPS with its own certificate.
  const data = join(WORK, "server");
  const server = spawn(process.env.E2E_TIDEMARK, ["--json", "server", "--data", data, "--listen", "127.0.0.1:0", "--kdf-memory", "256"], {
    env: process.env,
    stdio: ["ignore", "pipe", "inherit"],
  });
  try {
    const ready = await new Promise((resolve, reject) => {
      let out = "";
      server.stdout.on("data", (d) => {
        out += d;
        const nl = out.indexOf("\n");
        if (nl >= 0) resolve(JSON.parse(out.slice(0, nl)));
      });
      server.once("exit", (c) => reject(new Error(`tidemark server exited (${c}) before it was ready`)));
    });
    // Enrol through the app's setup, as a person with a code would.
    s = await Session.start("http://127.0.0.1:4444", APP);
    await s.script("window.location.hash = '#/setup'");
    await s.clickText("button", "My company's backup server");
    await s.type(await s.find("#server"), ready.listening);
    await s.type(await s.find("#code"), ready.admin_code);
    await s.clickText("button", "Enrol this computer");
    await s.findText("h2", "What to back up", 60_000);
    await s.clickText("button", "Start the first backup");
    await s.findText("p", "Your files are protected", 180_000);
    await s.end();
    s = null;
    await endRunningApps();

    await reboot();
    const overdue = makeBackupOverdue();
    await startAtLoginAndWaitForBackup(async () => lastSuccess() > overdue + 60_000);
  } finally {
    await stop(server);
  }
});
