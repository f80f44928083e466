// Test plumbing: a real authd (the debug binary, embedded mode in a temp
// dir), a tiny static server for the test pages, and Debian's Chromium.
import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer } from "node:http";
import { createServer as netServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
export const kitDir = path.resolve(here, "..");
export const repoRoot = path.resolve(kitDir, "..", "..");
export const artifacts = path.join(kitDir, "test-artifacts");

export function freePort() {
  return new Promise((resolve, reject) => {
    const server = netServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Starts `target/debug/authd serve` with a 2 s access TTL; `stop()` ends it. */
export async function startAuthd({ corsOrigins = [], accessTtl = "2s", env = {} } = {}) {
  const binary = process.env.AUTHD_BIN ?? path.join(repoRoot, "target", "debug", "authd");
  const dir = await mkdtemp(path.join(tmpdir(), "authd-js-"));
  const port = await freePort();
  const child = spawn(binary, ["serve"], {
    cwd: dir,
    env: {
      PATH: process.env.PATH,
      AUTHD_LISTEN: `127.0.0.1:${port}`,
      AUTHD_ACCESS_TTL: accessTtl,
      AUTHD_CORS_ORIGINS: corsOrigins.join(","),
      AUTHD_ARGON2_M_KIB: "1024",
      AUTHD_ARGON2_T: "1",
      RUST_LOG: "warn",
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let log = "";
  child.stdout.on("data", (d) => (log += d));
  child.stderr.on("data", (d) => (log += d));
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`authd exited: ${log}`);
    try {
      if ((await fetch(`${url}/healthz`)).ok) break;
    } catch {
      // not listening yet
    }
    if (i > 200) throw new Error(`authd did not start: ${log}`);
    await sleep(50);
  }
  return {
    url,
    log: () => log,
    async stop() {
      child.kill("SIGTERM");
      await new Promise((resolve) => (child.exitCode !== null ? resolve() : child.once("exit", resolve)));
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** A user with a fresh email; resolves to its credentials. */
export async function register(authdUrl) {
  const email = `u${Date.now()}${Math.floor(Math.random() * 1e6)}@example.org`;
  const password = "correct horse battery staple";
  const r = await fetch(`${authdUrl}/v1/users`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ email, password }),
  });
  if (r.status !== 201) throw new Error(`register: ${r.status} ${await r.text()}`);
  return { username: email, password };
}

/** authd's `authd_refreshes_total` by outcome, from /metrics. */
export async function refreshMetrics(authdUrl) {
  const text = await (await fetch(`${authdUrl}/metrics`)).text();
  const out = {};
  for (const m of text.matchAll(/^authd_refreshes_total\{outcome="([a-z_]+)"\} (\d+)/gm)) out[m[1]] = Number(m[2]);
  return out;
}

const types = { ".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript" };

/** Serves test/pages/ and the compiled kit at /authd.js, on a spare loopback port. */
export async function startPages() {
  const port = await freePort();
  const server = createServer(async (req, res) => {
    const name = new URL(req.url, "http://x").pathname;
    const file = name === "/authd.js" ? path.join(kitDir, "dist", "authd.js") : path.join(here, "pages", path.basename(name));
    try {
      const body = await readFile(file);
      res.writeHead(200, { "Content-Type": types[path.extname(file)] ?? "application/octet-stream" });
      res.end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((resolve) => server.listen(port, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${port}`, stop: () => new Promise((resolve) => server.close(resolve)) };
}

export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  // Tabs of one test run side by side: none may be throttled as a background tab.
  "--disable-background-timer-throttling",
  "--disable-renderer-backgrounding",
  "--disable-backgrounding-occluded-windows",
];

export async function launchChromium() {
  const { chromium } = await import("playwright-core");
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: CHROMIUM_ARGS,
    headless: true,
  });
}
