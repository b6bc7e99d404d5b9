// A minimal W3C WebDriver client (the few commands the end-to-end test
// needs), so the test depends on nothing but Node. tauri-driver forwards
// these to WebKitWebDriver, which drives the app's own webview.

export class Session {
  constructor(base, id) {
    this.base = base;
    this.id = id;
  }

  static async start(base, application, timeoutMs = 60_000) {
    const end = Date.now() + timeoutMs;
    let last;
    while (Date.now() < end) {
      try {
        const r = await call(base, "POST", "/session", {
          capabilities: { alwaysMatch: { browserName: "wry", "tauri:options": { application } } },
        });
        return new Session(base, r.sessionId);
      } catch (e) {
        last = e;
        await sleep(500);
      }
    }
    throw new Error(`no WebDriver session at ${base}: ${last}`);
  }

  cmd(method, path, body) {
    return call(this.base, method, `/session/${this.id}${path}`, body);
  }

  async find(css, timeoutMs = 20_000) {
    const end = Date.now() + timeoutMs;
    for (;;) {
      try {
        const r = await this.cmd("POST", "/element", { using: "css selector", value: css });
        return Object.values(r)[0];
      } catch (e) {
        if (Date.now() > end) throw new Error(`no element ${css}: ${e.message}`);
        await sleep(200);
      }
    }
  }

  /** The first element matching `css` whose text contains `text`. */
  async findText(css, text, timeoutMs = 20_000) {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const el = await this.script(
        `for (const e of document.querySelectorAll(arguments[0])) if (e.textContent.includes(arguments[1])) return e; return null;`,
        [css, text],
      );
      if (el) return Object.values(el)[0];
      if (Date.now() > end) throw new Error(`no ${css} with text "${text}"; page says: ${(await this.text()).slice(0, 400)}`);
      await sleep(200);
    }
  }

  click(el) {
    return this.cmd("POST", `/element/${el}/click`, {});
  }

  /**
   * Runs `f` (which finds an element and acts on it) again when the UI
   * re-rendered between the find and the act (a stale element).
   */
  async fresh(f) {
    for (let attempt = 0; ; attempt++) {
      try {
        return await f();
      } catch (e) {
        if (attempt >= 5 || !/stale element/.test(e.message)) throw e;
        await sleep(200);
      }
    }
  }

  /** Finds and clicks, again when the UI re-rendered in between. */
  clickText(css, text, timeoutMs = 20_000) {
    return this.fresh(async () => this.click(await this.findText(css, text, timeoutMs)));
  }

  async type(el, text) {
    await this.cmd("POST", `/element/${el}/clear`, {});
    return this.cmd("POST", `/element/${el}/value`, { text });
  }

  keys(el, text) {
    return this.cmd("POST", `/element/${el}/value`, { text });
  }

  script(script, args = []) {
    return this.cmd("POST", "/execute/sync", { script, args });
  }

  scriptAsync(script, args = []) {
    return this.cmd("POST", "/execute/async", { script, args });
  }

  text() {
    return this.script("return document.body.innerText");
  }

  screenshot() {
    return this.cmd("GET", "/screenshot");
  }

  end() {
    return call(this.base, "DELETE", `/session/${this.id}`).catch(() => {});
  }
}

async function call(base, method, path, body) {
  const r = await fetch(base + path, {
    method,
    headers: { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const j = await r.json().catch(() => ({}));
  if (!r.ok || (j.value && j.value.error)) {
    throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(j.value ?? j).slice(0, 300)}`);
  }
  return j.value;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
