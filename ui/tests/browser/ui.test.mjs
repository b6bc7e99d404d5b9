// Browser tests of the built UI with the Tauri IPC mocked (src/mock): the
// wizard, timeline navigation, search and the restore dialog, in Debian's
// Chromium driven by playwright-core. Run: npm run test:browser (after
// `npm run build:mock`).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { extname, join, normalize } from "node:path";
import { chromium } from "playwright-core";

const DIST = join(import.meta.dirname, "../../dist-mock");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
let server, base, browser;

before(async () => {
  assert.ok(existsSync(join(DIST, "mock.html")), "build the mock UI first: npm run build:mock");
  assert.ok(existsSync(CHROMIUM), `no Chromium at ${CHROMIUM}: install Debian's chromium package (make test-deps does)`);
  const types = { ".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml" };
  server = createServer(async (req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname)).replace(/^(\.\.[/\\])+/, "");
    try {
      const body = await readFile(join(DIST, path === "/" ? "mock.html" : path));
      res.writeHead(200, { "content-type": types[extname(path)] ?? "application/octet-stream" });
      res.end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  base = `http://127.0.0.1:${server.address().port}/mock.html`;
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close();
  server?.close();
});

async function page(query = "", hash = "#/timeline", scale = 1) {
  const ctx = await browser.newContext({ viewport: { width: 1100, height: 760 }, deviceScaleFactor: scale });
  const p = await ctx.newPage();
  const errors = [];
  p.on("pageerror", (e) => errors.push(e.message));
  await p.goto(`${base}${query}${hash}`);
  return { p, errors, close: () => ctx.close() };
}

const calls = (p, cmd) => p.evaluate((c) => window.__calls.filter((x) => x.cmd === c), cmd);

test("the wizard sets up own storage, shows the recovery key and starts the first backup", async () => {
  const { p, errors, close } = await page("?configured=0", "");
  await p.getByRole("heading", { name: "Set up Tidemark" }).waitFor();
  await p.getByRole("button", { name: /My own storage/ }).click();
  const cont = p.getByRole("button", { name: "Continue" });
  assert.equal(await cont.isDisabled(), true, "nothing filled in yet");
  await p.getByLabel("Folder", { exact: true }).fill("/media/usb/backup");
  await p.getByLabel("Backup password").fill("correct horse");
  await p.getByLabel("Repeat the password").fill("correct horsf");
  await p.getByText("The two passwords differ.").waitFor();
  await p.getByLabel("Repeat the password").fill("correct horse");
  assert.equal(await cont.isDisabled(), true, "the lost-password warning must be acknowledged");
  await p.getByLabel(/lost password means lost backups/).check();
  await cont.click();
  await p.getByRole("heading", { name: "Your recovery key" }).waitFor();
  assert.match(await p.getByLabel("Recovery key", { exact: true }).innerText(), /^[0-9a-f]{4}(-[0-9a-f]{4}){7}$/);
  await p.getByLabel("I have saved the recovery key").check();
  await p.getByRole("button", { name: "Continue" }).click();
  await p.getByRole("heading", { name: "What to back up" }).waitFor();
  await p.getByLabel("/home/me/Desktop").uncheck();
  await p.getByRole("button", { name: "Add a folder…" }).click();
  await p.getByLabel("/home/me/Chosen").waitFor();
  await p.getByRole("button", { name: "Start the first backup" }).click();
  await p.getByRole("heading", { name: "Your first backup is running" }).waitFor();
  await p.getByRole("progressbar", { name: "First backup" }).waitFor();

  const [setup] = await calls(p, "setup_own_storage");
  assert.deepEqual(setup.args.setup.destination, { kind: "folder", path: "/media/usb/backup" });
  assert.equal(setup.args.setup.create, true);
  assert.equal(setup.args.setup.recovery_key, true);
  const saved = (await calls(p, "set_config")).at(-1).args.config;
  assert.deepEqual(saved.folders, ["/home/me/Documents", "/home/me/Pictures", "/home/me/Chosen"]);
  assert.ok(saved.excludes.includes("node_modules"));
  assert.equal((await calls(p, "backup_now")).length, 1);
  assert.deepEqual(errors, []);
  await close();
});

test("the wizard enrols with a company server from a link and shows a refused code", async () => {
  const { p, close } = await page("?configured=0", "");
  await p.getByRole("button", { name: /company's backup server/ }).click();
  await p.getByLabel("Enrolment link (optional)").fill("tidemark://enroll?server=https://backup.example.com&code=BAD");
  await p.getByRole("button", { name: "Use link" }).click();
  assert.equal(await p.getByLabel("Server address").inputValue(), "https://backup.example.com");
  await p.getByRole("button", { name: "Enrol this computer" }).click();
  await p.getByRole("alert").filter({ hasText: "not valid" }).waitFor();
  await p.getByLabel("Enrolment code").fill("GOOD-CODE");
  await p.getByRole("button", { name: "Enrol this computer" }).click();
  await p.getByText("Enrolled as alice on https://backup.example.com").waitFor();
  await close();
});

test("the timeline moves through snapshots, shows deleted files and versions", async () => {
  const { p, errors, close } = await page();
  const slider = p.getByRole("slider", { name: "Moment in time" });
  await slider.waitFor();
  await p.getByRole("button", { name: /report\.txt/ }).waitFor();
  assert.equal(await p.getByRole("button", { name: /notes\.md/ }).count(), 0, "deleted in the newest backup");
  await p.getByRole("switch").check();
  await p.getByRole("button", { name: /notes\.md.*deleted/ }).waitFor();
  await p.getByRole("switch").uncheck();

  // Home goes to the first backup, which still has notes.md.
  await slider.focus();
  await p.keyboard.press("Home");
  await p.getByRole("button", { name: /notes\.md/ }).waitFor();
  assert.equal(await p.getByRole("button", { name: /notes\.md.*deleted/ }).count(), 0);
  await p.keyboard.press("ArrowRight");
  await p.keyboard.press("End");
  await p.waitForFunction(() => !document.body.innerText.includes("notes.md"));

  await p.getByRole("button", { name: /report\.txt/ }).click();
  const options = p.getByRole("option");
  await options.first().waitFor();
  assert.equal(await options.count(), 3);
  await p.getByText("Quarterly report, final").waitFor();
  await options.first().focus();
  await p.keyboard.press("ArrowDown");
  await p.getByText("Quarterly report, second draft").waitFor();
  await p.keyboard.press("End");
  await p.getByText("Quarterly report, first draft").waitFor();
  assert.equal(await options.last().getAttribute("aria-selected"), "true");
  assert.deepEqual(errors, []);
  await close();
});

test("search finds a deleted file across versions and opens it", async () => {
  const { p, close } = await page();
  await p.getByRole("button", { name: /report\.txt/ }).waitFor();
  await p.getByLabel("Search all versions by name").fill("NOTES");
  await p.getByRole("button", { name: "Search", exact: true }).click();
  await p.getByRole("heading", { name: /1 match for/ }).waitFor();
  await p.getByText("deleted", { exact: true }).waitFor();
  await p.getByRole("button", { name: "/home/me/Documents/notes.md" }).click();
  await p.getByText("# Notes").waitFor();
  assert.equal(await p.getByRole("option").count(), 1);
  await close();
});

test("the restore dialog restores an old version into another folder", async () => {
  const { p, close } = await page();
  await p.getByRole("button", { name: /report\.txt/ }).click();
  await p.getByRole("option").last().click();
  await p.getByRole("button", { name: "Restore this version…" }).click();
  const dialog = p.getByRole("dialog");
  await dialog.waitFor();
  await dialog.getByText("both are kept").waitFor();
  await dialog.getByLabel("Another folder").check();
  assert.equal(await dialog.getByRole("button", { name: "Restore" }).isDisabled(), true);
  await dialog.getByLabel("Folder", { exact: true }).fill("/home/me/Restored");
  await dialog.getByText("/home/me/Restored/home/me/Documents/report.txt").waitFor();
  await dialog.getByLabel("Replace it").check();
  await dialog.getByRole("button", { name: "Restore" }).click();
  await p.getByText("Restored 1 file(s) under /home/me/Restored.").waitFor();
  const [r] = await calls(p, "restore");
  assert.deepEqual(r.args.request, {
    snapshot: "a".repeat(64),
    path: "/home/me/Documents/report.txt",
    target: { kind: "folder", path: "/home/me/Restored" },
    conflict: "replace",
  });
  await close();
});

test("the UI works at 200% scale: nothing overflows the window", async () => {
  for (const hash of ["#/timeline", "#/settings"]) {
    const { p, close } = await page("", hash, 2);
    await p.getByRole("navigation", { name: "Main" }).waitFor();
    await p.waitForTimeout(200);
    const overflow = await p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `${hash} is ${overflow}px wider than the window at 200%`);
    await p.screenshot({ path: join(import.meta.dirname, `../../test-results/${hash.slice(2)}-200.png`) });
    await close();
  }
});

test("settings show the status figures and save the schedule", async () => {
  const { p, close } = await page("", "#/settings");
  await p.getByText("Saved by dedup and compression").waitFor();
  await p.getByText("87%").waitFor();
  // The throttle's decision and the rule behind it.
  await p.getByText("Paused: metered connection (your organisation's rule)").waitFor();
  // Continuous protection and the search catalog.
  await p.getByText("1 folder(s)").waitFor();
  await p.getByText("410 KB").waitFor();
  // A new laptop restores the old one's newest backup into place.
  await p.getByRole("button", { name: "Restore old-laptop's files here" }).click();
  await p.getByText("Restoring old-laptop's files to their places").waitFor();
  const r = (await calls(p, "restore")).at(-1).args.request;
  assert.deepEqual(r, { snapshot: "f".repeat(64), path: "/", target: { kind: "original" }, conflict: "keep_both" });
  await p.getByLabel("Back up", { exact: true }).selectOption({ label: "Every 15 minutes" });
  await p.getByLabel("Back up changes as they happen (within a minute of saving)").uncheck();
  await p.getByLabel("Start Tidemark when I log in").check();
  await p.getByRole("button", { name: "Save" }).click();
  await p.getByText("Saved.").waitFor();
  const saved = (await calls(p, "set_config")).at(-1).args.config;
  assert.equal(saved.every_minutes, 15);
  assert.equal(saved.continuous, false);
  assert.deepEqual((await calls(p, "set_autostart")).at(-1).args, { enabled: true });
  await close();
});

test("a refused enrolment file is explained on the setup page", async () => {
  const { p, close } = await page("?configured=0&refused=1", "");
  await p.getByText("The enrolment file from your company's download page was not used: this enrolment file was not signed by your organisation's key").waitFor();
  await close();
  const { p: q, close: close2 } = await page("?configured=0", "");
  await q.getByRole("heading", { name: "Set up Tidemark" }).waitFor();
  assert.equal(await q.getByText("was not used").count(), 0);
  await close2();
});

test("settings: a missing backup password is checked, then kept in the keyring", async () => {
  const { p, errors, close } = await page("?password=missing", "#/settings");
  await p.getByRole("alert").filter({ hasText: "No backup password is stored on this computer" }).waitFor();
  const save = p.getByRole("button", { name: "Check and keep the password" });
  assert.equal(await save.isDisabled(), true, "nothing typed yet");
  await p.getByLabel("Enter the backup password").fill("not the password");
  await save.click();
  await p.getByRole("alert").filter({ hasText: "wrong password" }).waitFor();
  await p.getByLabel("Enter the backup password").fill("correct horse battery");
  await save.click();
  await p.getByText("The password opens your backups. Saved in this computer's keyring.").waitFor();
  assert.equal(await p.getByText("No backup password is stored").count(), 0);
  // Changing it later: the same form, now for a new password.
  await p.getByLabel("New backup password").waitFor();
  const entered = await calls(p, "enter_password");
  assert.deepEqual(entered.map((c) => c.args.entry), [
    { password: "not the password", password_file: null },
    { password: "correct horse battery", password_file: null },
  ]);
  assert.deepEqual(errors, []);
  await close();
});

test("without a keyring service a password goes to a file only after the user agrees", async () => {
  const { p, close } = await page("?password=missing&nokeyring=1", "#/settings");
  await p.getByLabel("Enter the backup password").fill("correct horse battery");
  const save = p.getByRole("button", { name: "Check and keep the password" });
  await save.click();
  await p.getByText("has no keyring service").waitFor();
  assert.equal(await save.isDisabled(), true, "a file needs the user's consent");
  await p.getByLabel("Keep the password in a file only I can read").check();
  assert.equal(await p.getByLabel("Password file").inputValue(), "/home/me/.config/tidemark/secrets/repository-password");
  await save.click();
  await p.getByText("readable only by you").waitFor();
  const entered = (await calls(p, "enter_password")).map((c) => c.args.entry.password_file);
  assert.deepEqual(entered, [null, "/home/me/.config/tidemark/secrets/repository-password"]);
  await close();
});

test("the wizard enrols into a file only with consent when no keyring service exists", async () => {
  const { p, close } = await page("?configured=0&nokeyring=1", "");
  await p.getByRole("button", { name: /company's backup server/ }).click();
  await p.getByLabel("Server address").fill("https://backup.example.com");
  await p.getByLabel("Enrolment code").fill("GOOD-CODE");
  await p.getByRole("button", { name: "Enrol this computer" }).click();
  await p.getByText("has no keyring service").waitFor();
  assert.equal(await p.getByRole("button", { name: "Enrol this computer" }).isDisabled(), true);
  await p.getByLabel("Keep it in a file only I can read").check();
  await p.getByRole("button", { name: "Enrol this computer" }).click();
  await p.getByText("Enrolled as alice on https://backup.example.com").waitFor();
  const files = (await calls(p, "enroll")).map((c) => c.args.secretFile);
  assert.deepEqual(files, [null, "/home/me/.config/tidemark/secrets/device-secret"]);
  await close();
});
