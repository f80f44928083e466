// The real thing: the kit and the account page in headless Chromium, with
// several real tabs, against a real authd with 2 s access tokens.
import assert from "node:assert/strict";
import { mkdir, readFile } from "node:fs/promises";
import path from "node:path";
import { after, before, test } from "node:test";

import { artifacts, kitDir, launchChromium, refreshMetrics, register, startAuthd, startPages } from "./helpers.mjs";

let authd;
let pages;
let browser;

before(async () => {
  pages = await startPages();
  authd = await startAuthd({ corsOrigins: [pages.url] });
  browser = await launchChromium();
  await mkdir(artifacts, { recursive: true });
});
after(async () => {
  await browser?.close();
  await authd?.stop();
  await pages?.stop();
});

async function openTabs(context, n) {
  const tabs = [];
  for (let i = 0; i < n; i++) {
    const page = await context.newPage();
    await page.goto(`${pages.url}/tab.html`);
    await page.waitForFunction(() => window.kitReady === true);
    tabs.push(page);
  }
  return tabs;
}

/** In each tab: a client of `mode`, signed in by the first tab and picked up by the others. */
async function signInTabs(tabs, user, options) {
  await tabs[0].evaluate(
    async ({ base, user, options }) => {
      window.client = kit.createClient({ baseUrl: base, ...options });
      await kit.login(window.client, user);
    },
    { base: authd.url, user, options },
  );
  for (const tab of tabs.slice(1)) {
    const ok = await tab.evaluate(
      async ({ base, options }) => {
        window.client = kit.createClient({ baseUrl: base, ...options });
        return kit.restore(window.client);
      },
      { base: authd.url, options },
    );
    assert.equal(ok, true);
  }
}

/** Each tab calls `fetch` in a loop for `ms`; resolves to what each saw. */
function loop(tabs, ms) {
  return Promise.all(
    tabs.map((tab) =>
      tab.evaluate(
        async ({ base, ms }) => {
          const out = { ok: 0, failed: [], maxLatency: 0 };
          const end = Date.now() + ms;
          while (Date.now() < end) {
            const started = Date.now();
            try {
              const r = await kit.fetch(window.client, `${base}/v1/me`);
              if (r.status === 200) out.ok++;
              else out.failed.push(`status ${r.status}`);
            } catch (e) {
              out.failed.push(`${e.name}: ${e.message}`);
            }
            out.maxLatency = Math.max(out.maxLatency, Date.now() - started);
            await new Promise((resolve) => setTimeout(resolve, 40 + Math.random() * 40));
          }
          out.refreshes = kit.refreshCount(window.client);
          out.sessionId = kit.sessionId(window.client);
          return out;
        },
        { base: authd.url, ms },
      ),
    ),
  );
}

test("5 tabs fetching for 20 s share one session and refresh about once per TTL", async () => {
  const user = await register(authd.url);
  const context = await browser.newContext();
  const tabs = await openTabs(context, 5);
  await signInTabs(tabs, user, { mode: "cookie" });
  const before = await refreshMetrics(authd.url);
  const results = await loop(tabs, 20_000);
  const metrics = await refreshMetrics(authd.url);
  const delta = (k) => (metrics[k] ?? 0) - (before[k] ?? 0);
  const failed = results.flatMap((r) => r.failed);
  assert.deepEqual(failed, [], "no request may fail");
  const refreshes = results.reduce((n, r) => n + r.refreshes, 0);
  const ok = results.reduce((n, r) => n + r.ok, 0);
  console.log(`5 tabs, 20 s: ${ok} requests, ${refreshes} refreshes by the tabs, authd saw ${JSON.stringify({ rotated: delta("rotated"), grace: delta("grace_replay"), reuse: delta("reuse_detected"), refused: delta("refused") })}, per tab ${results.map((r) => r.refreshes).join("/")}`);
  assert.ok(ok > 500, `too few requests: ${ok}`);
  assert.equal(delta("reuse_detected"), 0, "no refresh token reuse");
  assert.equal(delta("refused"), 0, "no invalid_grant");
  // A 2 s token refreshed 0.5 s before expiry: one refresh per 1.5 s is 13 in 20 s;
  // one per tab would be 5 times that.
  assert.ok(refreshes >= 8 && refreshes <= 20, `refreshes: ${refreshes}`);
  assert.equal(delta("rotated") + delta("grace_replay"), refreshes);
  assert.equal(new Set(results.map((r) => r.sessionId)).size, 1);
  // The session is alive at the end.
  const alive = await tabs[0].evaluate(async (base) => (await kit.fetch(window.client, `${base}/v1/me`)).status, authd.url);
  assert.equal(alive, 200);
  await context.close();
});

test("a tab closed while it holds the refresh lock does not block the others", async () => {
  const user = await register(authd.url);
  const context = await browser.newContext();
  const tabs = await openTabs(context, 3);
  const options = { mode: "cookie", lockTimeout: 3000 };
  await signInTabs(tabs, user, options);
  const [victim, ...others] = tabs;
  // The victim's token requests never answer: it takes the lock and hangs there.
  await victim.evaluate(async ({ base, options }) => {
    const hang = (url, init) => (String(url).includes("/oauth/token") ? new Promise(() => {}) : fetch(url, init));
    const old = window.client;
    window.client = kit.createClient({ baseUrl: base, ...options, fetch: hang });
    await kit.restore(window.client);
    kit.close(old);
    await new Promise((resolve) => setTimeout(resolve, 1800));
    kit.fetch(window.client, `${base}/v1/me`).catch(() => {});
    for (let i = 0; i < 50; i++) {
      const { held } = await navigator.locks.query();
      if (held.some((l) => l.name.endsWith(":refresh"))) return;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    throw new Error("the victim never held the lock");
  }, { base: authd.url, options });
  const closing = victim.close();
  const results = await loop(others, 5000);
  await closing;
  assert.deepEqual(results.flatMap((r) => r.failed), []);
  const worst = Math.max(...results.map((r) => r.maxLatency));
  assert.ok(worst < options.lockTimeout, `a request waited ${worst} ms`);
  await context.close();
});

test("a tab that hangs holding the lock is overtaken after the lock timeout", async () => {
  const user = await register(authd.url);
  const context = await browser.newContext();
  const tabs = await openTabs(context, 3);
  const options = { mode: "cookie", lockTimeout: 1500 };
  await signInTabs(tabs, user, options);
  const [victim, ...others] = tabs;
  await victim.evaluate(async ({ base, options }) => {
    const hang = (url, init) => (String(url).includes("/oauth/token") ? new Promise(() => {}) : fetch(url, init));
    const old = window.client;
    window.client = kit.createClient({ baseUrl: base, ...options, fetch: hang });
    await kit.restore(window.client);
    kit.close(old);
    await new Promise((resolve) => setTimeout(resolve, 1800));
    kit.fetch(window.client, `${base}/v1/me`).catch(() => {});
    await new Promise((resolve) => setTimeout(resolve, 100));
  }, { base: authd.url, options });
  const results = await loop(others, 5000);
  assert.deepEqual(results.flatMap((r) => r.failed), []);
  const worst = Math.max(...results.map((r) => r.maxLatency));
  assert.ok(worst < 1500 + 1000, `a request waited ${worst} ms`);
  await context.close();
});

for (const mode of ["cookie", "memory"]) {
  test(`logout in one tab logs out every tab within 1 s (${mode} mode)`, async () => {
    const user = await register(authd.url);
    const context = await browser.newContext();
    const tabs = await openTabs(context, 4);
    await signInTabs(tabs, user, { mode });
    for (const tab of tabs.slice(1)) {
      await tab.evaluate(() => {
        window.loggedOutAt = null;
        kit.onChange(window.client, (e) => {
          if (e.type === "logout") window.loggedOutAt = Date.now();
        });
      });
    }
    const at = await tabs[0].evaluate(async () => {
      const at = Date.now();
      await kit.logout(window.client);
      return at;
    });
    for (const tab of tabs.slice(1)) {
      await tab.waitForFunction(() => window.loggedOutAt !== null, null, { timeout: 1000 });
      const seen = await tab.evaluate(async (base) => {
        let error = null;
        try {
          await kit.fetch(window.client, `${base}/v1/me`);
        } catch (e) {
          error = e instanceof kit.LoggedOutError ? "LoggedOutError" : String(e);
        }
        return { at: window.loggedOutAt, loggedIn: kit.isLoggedIn(window.client), error };
      }, authd.url);
      assert.ok(seen.at - at < 1000, `seen after ${seen.at - at} ms`);
      assert.equal(seen.loggedIn, false);
      assert.equal(seen.error, "LoggedOutError");
    }
    await context.close();
  });
}

const DESKTOP_UA =
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const PHONE_UA =
  "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36";

async function accountPage(ua, width) {
  const context = await browser.newContext({ userAgent: ua, viewport: { width, height: 800 } });
  const page = await context.newPage();
  // Script errors and CSP violations; failed requests are listed apart.
  const problems = [];
  const failures = [];
  page.on("console", (m) => m.type() === "error" && !m.text().startsWith("Failed to load resource") && problems.push(m.text()));
  page.on("pageerror", (e) => problems.push(String(e)));
  page.on("response", (r) => {
    const url = new URL(r.url());
    if (r.status() >= 400 && url.pathname !== "/favicon.ico") {
      failures.push(`${r.request().method()} ${url.pathname} ${r.status()}`);
    }
  });
  await page.goto(`${authd.url}/account`);
  await page.waitForSelector("body[data-ready=true]");
  return { context, page, problems, failures };
}

async function signIn(page, user) {
  await page.getByLabel("Email").fill(user.username);
  await page.getByLabel("Password").fill(user.password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForSelector("#devices:not([hidden]) .device");
}

test("authd serves the account page under its own CSP, and the kit as built", async () => {
  const page = await fetch(`${authd.url}/account`);
  assert.equal(page.status, 200);
  assert.match(page.headers.get("content-type"), /^text\/html/);
  const csp = page.headers.get("content-security-policy");
  assert.match(csp, /script-src 'self'/);
  assert.doesNotMatch(csp, /unsafe-inline/);
  assert.doesNotMatch(await page.text(), /<script>|<script(?![^>]*\bsrc=)[^>]*>/, "no inline script");
  const served = await (await fetch(`${authd.url}/account/authd.js`)).text();
  const built = await readFile(path.join(kitDir, "dist", "authd.js"), "utf8");
  assert.equal(served, built, "target/debug/authd embeds an older dist/: rebuild it (cargo build)");
  // The API keeps its own, stricter policy.
  assert.equal((await fetch(`${authd.url}/healthz`)).headers.get("content-security-policy"), "default-src 'none'; frame-ancestors 'none'");
});

test("the account page on two devices: list, this device, rename, sign out the other", async () => {
  const user = await register(authd.url);
  const a = await accountPage(DESKTOP_UA, 800);
  const b = await accountPage(PHONE_UA, 360);
  assert.ok(await a.page.getByRole("heading", { name: "Sign in" }).isVisible());
  await a.page.screenshot({ path: path.join(artifacts, "account-signin.png") });

  // Sign in by keyboard on the desktop, by clicks on the phone.
  await a.page.getByLabel("Email").fill(user.username);
  await a.page.getByLabel("Password").fill(user.password);
  await a.page.keyboard.press("Enter");
  await a.page.waitForSelector("#devices:not([hidden]) .device");
  await signIn(b.page, user);
  await a.page.reload();
  await a.page.waitForSelector("body[data-ready=true] #devices:not([hidden]) .device");

  for (const [side, expect] of [[a, "Windows 10"], [b, "Android 14"]]) {
    await side.page.reload();
    await side.page.waitForSelector("body[data-ready=true] #devices:not([hidden]) .device");
    const devices = await side.page.$$eval(".device", (items) =>
      items.map((li) => ({
        current: li.classList.contains("current"),
        badge: !li.querySelector(".this-device").hidden,
        browser: li.querySelector(".device-browser").textContent,
        ip: li.querySelector(".device-ip").textContent,
      })),
    );
    assert.equal(devices.length, 2);
    const current = devices.filter((d) => d.current);
    assert.equal(current.length, 1);
    assert.equal(current[0].badge, true);
    assert.match(current[0].browser, new RegExp(`Chrome 131 on ${expect}`));
    assert.equal(current[0].ip, "127.0.0.1");
  }

  // Rename this device on the desktop; the phone sees the new name.
  const mine = a.page.locator(".device.current");
  await mine.getByRole("button", { name: "Rename this device" }).click();
  // Rename puts the focus in the name field.
  assert.equal(await a.page.evaluate(() => document.activeElement?.name), "device_name");
  await mine.getByLabel("New name").fill("Work laptop");
  await mine.getByRole("button", { name: "Save" }).click();
  await a.page.waitForSelector(".device.current .device-name:text('Work laptop')");
  await b.page.reload();
  await b.page.waitForSelector("body[data-ready=true] .device:not(.current) .device-name:text('Work laptop')");
  await a.page.screenshot({ path: path.join(artifacts, "account-desktop.png"), fullPage: true });
  await b.page.screenshot({ path: path.join(artifacts, "account-phone-360.png"), fullPage: true });

  // Sign out the other devices from the desktop: the phone's next request signs it out.
  // By keyboard: the button takes focus and Enter activates it.
  await a.page.getByRole("button", { name: "Sign out all other devices" }).focus();
  await a.page.keyboard.press("Enter");
  await a.page.waitForFunction(() => document.querySelectorAll(".device").length === 1);
  const bSession = await b.page.locator(".device.current").getAttribute("data-session-id");
  await b.page.locator(".device.current").getByRole("button", { name: "Rename this device" }).click();
  await b.page.locator(".device.current").getByLabel("New name").fill("Phone");
  await b.page.locator(".device.current").getByRole("button", { name: "Save" }).click();
  await b.page.waitForSelector("#signin:not([hidden])");
  assert.equal(await b.page.locator("#devices").isHidden(), true);
  await b.page.screenshot({ path: path.join(artifacts, "account-phone-signed-out.png"), fullPage: true });

  // And the desktop is still signed in after a reload.
  await a.page.reload();
  await a.page.waitForSelector("body[data-ready=true] #devices:not([hidden]) .device.current");
  assert.deepEqual(a.problems, []);
  assert.deepEqual(b.problems, []);
  assert.deepEqual(a.failures, []);
  // The phone's bearer is refused once, then its refresh: that is how it learns.
  assert.deepEqual(b.failures, [`PATCH /v1/sessions/${bSession} 401`, "POST /oauth/token 400"]);
  await a.context.close();
  await b.context.close();
});
