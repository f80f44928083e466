// The kit's logic under node (no Web Locks here), against a real authd.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import * as kit from "../dist/authd.js";
import { register, startAuthd } from "./helpers.mjs";

let authd;
before(async () => {
  authd = await startAuthd();
});
after(async () => {
  await authd?.stop();
});

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const memory = (extra = {}) => kit.createClient({ baseUrl: authd.url, mode: "memory", name: `t${Math.random()}`, ...extra });

test("error classes are distinct and instanceof-able", () => {
  const e = new kit.ResponseError(400, "invalid_grant", "nope");
  assert.ok(e instanceof kit.AuthdError && e instanceof Error);
  assert.equal(e.name, "ResponseError");
  assert.equal(e.code, "invalid_grant");
  assert.ok(new kit.LoggedOutError("x") instanceof kit.AuthdError);
  assert.ok(!(new kit.LoggedOutError("x") instanceof kit.ResponseError));
  assert.ok(new kit.NetworkError("x") instanceof kit.AuthdError);
});

test("a wrong password is a ResponseError with invalid_grant", async () => {
  const user = await register(authd.url);
  const c = memory();
  await assert.rejects(kit.login(c, { ...user, password: "wrong password!" }), (e) => e instanceof kit.ResponseError && e.code === "invalid_grant");
  assert.equal(kit.isLoggedIn(c), false);
  kit.close(c);
});

test("fetch without a sign-in throws LoggedOutError; an unreachable authd NetworkError", async () => {
  const c = memory();
  await assert.rejects(kit.fetch(c, `${authd.url}/v1/me`), kit.LoggedOutError);
  const down = kit.createClient({ baseUrl: "http://127.0.0.1:9", mode: "memory" });
  await assert.rejects(kit.login(down, { username: "a@b.c", password: "whatever12" }), kit.NetworkError);
  kit.close(c);
  kit.close(down);
});

test("fetch attaches the bearer and refreshes before expiry, once per lifetime", async () => {
  const user = await register(authd.url);
  const c = memory();
  const events = [];
  kit.onChange(c, (e) => events.push(e.type));
  await kit.login(c, { ...user, deviceName: "node test" });
  const sid = kit.sessionId(c);
  assert.match(sid, /^[0-9a-f-]{36}$/);
  const started = Date.now();
  while (Date.now() - started < 5000) {
    const r = await kit.fetch(c, `${authd.url}/v1/me`);
    assert.equal(r.status, 200);
    await sleep(100);
  }
  // 2 s tokens refreshed at 1.5 s: about three refreshes in 5 s, never one per request.
  const n = kit.refreshCount(c);
  assert.ok(n >= 2 && n <= 4, `refreshes: ${n}`);
  assert.equal(kit.sessionId(c), sid);
  assert.deepEqual(events.slice(0, 2), ["login", "refresh"]);
  await kit.logout(c);
  kit.close(c);
});

test("a 401 triggers one refresh and a retry", async () => {
  const user = await register(authd.url);
  let first = true;
  // The first API call answers 401 as if the token had just been rejected.
  const c = memory({
    fetch: async (url, init) => {
      if (first && String(url).endsWith("/v1/me")) {
        first = false;
        return new Response('{"error":"invalid_token"}', { status: 401 });
      }
      return fetch(url, init);
    },
  });
  await kit.login(c, user);
  const r = await kit.fetch(c, `${authd.url}/v1/me`);
  assert.equal(r.status, 200);
  assert.equal(kit.refreshCount(c), 1);
  await kit.logout(c);
  kit.close(c);
});

test("device pages: sessions, rename, revoke; the kit's typed errors for bad input", async () => {
  const user = await register(authd.url);
  const a = memory();
  const b = memory();
  await kit.login(a, { ...user, deviceName: "A" });
  await kit.login(b, { ...user, deviceName: "B" });
  const list = await kit.sessions(a);
  assert.equal(list.length, 2);
  const mine = list.find((s) => s.current);
  assert.equal(mine.device_name, "A");
  for (const key of ["browser", "os", "device_type"]) assert.ok(key in mine);
  const renamed = await kit.rename(a, mine.id, "  Work laptop  ");
  assert.equal(renamed.device_name, "Work laptop");
  assert.equal(renamed.current, true);
  await assert.rejects(kit.rename(a, mine.id, "\u0007bell"), (e) => e instanceof kit.ResponseError && e.status === 400 && e.code === "invalid_request");
  const other = list.find((s) => !s.current);
  await kit.revoke(a, other.id);
  // b's session is gone: its next request finds out and it is logged out.
  await assert.rejects(kit.fetch(b, `${authd.url}/v1/me`), kit.LoggedOutError);
  assert.equal(kit.isLoggedIn(b), false);
  assert.equal((await kit.sessions(a)).length, 1);
  await kit.logoutEverywhere(a);
  assert.equal(kit.isLoggedIn(a), false);
  kit.close(a);
  kit.close(b);
});

test("memory mode: a second client of the same name picks up the sign-in and a logout ends both", async () => {
  const user = await register(authd.url);
  const name = `shared${Math.random()}`;
  const one = memory({ name });
  const two = memory({ name });
  await kit.login(one, user);
  assert.equal(await kit.restore(two), true);
  assert.equal(kit.sessionId(two), kit.sessionId(one));
  const loggedOut = new Promise((resolve) => kit.onChange(two, (e) => e.type === "logout" && resolve(e)));
  await kit.logout(one);
  assert.equal((await loggedOut).reason, "remote");
  assert.equal(kit.isLoggedIn(two), false);
  kit.close(one);
  kit.close(two);
});
