/**
 * Browser client kit for authd.
 *
 * Small functions over a client object (no global state): `login`, `logout`,
 * `logoutEverywhere`, `fetch` (bearer attached, refreshed before expiry and
 * once after a 401), and `sessions` / `rename` / `revoke` for device pages.
 *
 * Every tab of an origin that uses the same authd shares one session: at most
 * one refresh runs at a time across all of them (a Web Lock, with a timeout
 * and steal so a tab that hangs holding it cannot block the rest), and the new
 * token is handed to the other tabs over a BroadcastChannel. A logout in one
 * tab logs out every tab.
 */

/** Where the refresh token lives. */
export type Mode = "memory" | "cookie";

export interface ClientOptions {
  /** authd's origin, e.g. `https://auth.example.org`; `""` for the page's own origin. */
  baseUrl: string;
  /**
   * `cookie` (recommended): the refresh token stays in an HttpOnly cookie set
   * by authd and page scripts never see it. `memory`: the refresh token is
   * kept in this page's memory and shared with the other tabs only over the
   * BroadcastChannel; closing the last tab ends the sign-in. Default `cookie`.
   */
  mode?: Mode;
  /** The `client_id` sent at login. */
  clientId?: string;
  /** Refresh when the access token has less than this left (ms). Default 30 000, at most a quarter of its lifetime. */
  refreshMargin?: number;
  /** Longest a tab waits for another tab's refresh before taking the lock over (ms). Default 10 000. */
  lockTimeout?: number;
  /** Longest one request to authd's token endpoint may take (ms). Default 8 000. */
  requestTimeout?: number;
  /** How long a new tab asks the others for the current token before refreshing itself (ms). Default 150. */
  peerWait?: number;
  /** A `fetch` to use instead of the global one. */
  fetch?: typeof globalThis.fetch;
  /** Name of the lock and the channel; tabs with the same name share a session. Default from `baseUrl`. */
  name?: string;
}

/** One entry of the device list (`GET /v1/sessions`). */
export interface Session {
  id: string;
  device_name: string;
  user_agent: string | null;
  ip: string | null;
  browser: string | null;
  os: string | null;
  device_type: "desktop" | "mobile" | "tablet" | "other" | null;
  created_at: string;
  last_used_at: string;
  expires_at: string;
  current: boolean;
}

export type AuthEvent =
  | { type: "login"; sessionId: string }
  | { type: "refresh"; sessionId: string }
  | { type: "logout"; reason: "local" | "remote" | "ended" };

/** Base class of every error this kit throws. */
export class AuthdError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** authd answered with an error (`{"error", "error_description"}`). */
export class ResponseError extends AuthdError {
  readonly status: number;
  readonly code: string;
  readonly description: string;
  constructor(status: number, code: string, description: string) {
    super(`${status} ${code}: ${description}`);
    this.status = status;
    this.code = code;
    this.description = description;
  }
}

/** Not signed in, or the session has ended (logged out, revoked, expired). */
export class LoggedOutError extends AuthdError {}

/** authd could not be reached, or did not answer in time. */
export class NetworkError extends AuthdError {}

interface Tokens {
  accessToken: string;
  /** Epoch ms. */
  expiresAt: number;
  /** Lifetime as issued (ms), for the refresh margin. */
  lifetime: number;
  sessionId: string;
  /** Memory mode only. */
  refreshToken?: string;
}

type Message =
  | { type: "tokens"; tokens: Tokens }
  | { type: "logout" }
  | { type: "ask" };

/** A client: create one per page with {@link createClient}. */
export interface Client {
  readonly baseUrl: string;
  readonly mode: Mode;
  /** @internal */ readonly _: Internal;
}

interface Internal {
  options: Required<Omit<ClientOptions, "clientId" | "fetch">> & { clientId?: string };
  fetch: typeof globalThis.fetch;
  tokens: Tokens | null;
  inflight: Promise<Tokens> | null;
  channel: BroadcastChannel | null;
  listeners: Set<(event: AuthEvent) => void>;
  /** Resolvers waiting for a peer's tokens. */
  waiters: Set<(tokens: Tokens) => void>;
  refreshes: number;
}

export function createClient(options: ClientOptions): Client {
  const baseUrl = options.baseUrl.replace(/\/+$/, "");
  const mode = options.mode ?? "cookie";
  const name = options.name ?? `authd:${baseUrl || (globalThis.location?.origin ?? "")}`;
  const fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis);
  const internal: Internal = {
    options: {
      baseUrl,
      mode,
      clientId: options.clientId,
      refreshMargin: options.refreshMargin ?? 30_000,
      lockTimeout: options.lockTimeout ?? 10_000,
      requestTimeout: options.requestTimeout ?? 8_000,
      peerWait: options.peerWait ?? 150,
      name,
    },
    fetch: fetchImpl,
    tokens: null,
    inflight: null,
    channel: null,
    listeners: new Set(),
    waiters: new Set(),
    refreshes: 0,
  };
  const client: Client = { baseUrl, mode, _: internal };
  if (typeof BroadcastChannel !== "undefined") {
    const channel = new BroadcastChannel(name);
    channel.onmessage = (event: MessageEvent<Message>) => onMessage(client, event.data);
    internal.channel = channel;
  }
  return client;
}

/** Stops listening to the other tabs; the client keeps its tokens. */
export function close(client: Client): void {
  client._.channel?.close();
  client._.channel = null;
}

/** Calls `listener` on every login, refresh and logout (this tab's or another's). Returns an unsubscribe function. */
export function onChange(client: Client, listener: (event: AuthEvent) => void): () => void {
  client._.listeners.add(listener);
  return () => client._.listeners.delete(listener);
}

/** Whether this tab holds a token for a session (which may since have been revoked elsewhere). */
export function isLoggedIn(client: Client): boolean {
  return client._.tokens !== null;
}

/** The id of the session this tab uses, or `null`. */
export function sessionId(client: Client): string | null {
  return client._.tokens?.sessionId ?? null;
}

/** How many refreshes this tab itself has sent to authd. */
export function refreshCount(client: Client): number {
  return client._.refreshes;
}

function emit(client: Client, event: AuthEvent): void {
  for (const listener of client._.listeners) {
    try {
      listener(event);
    } catch {
      // A listener's failure is its own; the others still hear of the change.
    }
  }
}

function post(client: Client, message: Message): void {
  try {
    client._.channel?.postMessage(message);
  } catch {
    // A closed channel: this tab is going away.
  }
}

function onMessage(client: Client, message: Message): void {
  const c = client._;
  if (message.type === "tokens") {
    const known = c.tokens;
    // Only a newer token (or another session's) replaces the one this tab has.
    if (!known || message.tokens.expiresAt > known.expiresAt || known.sessionId !== message.tokens.sessionId) {
      c.tokens = message.tokens;
      emit(client, { type: known ? "refresh" : "login", sessionId: message.tokens.sessionId });
    }
    for (const waiter of [...c.waiters]) waiter(message.tokens);
  } else if (message.type === "logout") {
    if (c.tokens) {
      c.tokens = null;
      emit(client, { type: "logout", reason: "remote" });
    }
  } else if (message.type === "ask" && c.tokens) {
    post(client, { type: "tokens", tokens: c.tokens });
  }
}

function tokensFrom(body: Record<string, unknown>, mode: Mode, now: number): Tokens {
  const accessToken = body.access_token;
  const expiresIn = body.expires_in;
  const sid = body.session_id;
  if (typeof accessToken !== "string" || typeof expiresIn !== "number" || typeof sid !== "string") {
    throw new AuthdError("authd's token response lacks access_token, expires_in or session_id");
  }
  const tokens: Tokens = { accessToken, expiresAt: now + expiresIn * 1000, lifetime: expiresIn * 1000, sessionId: sid };
  if (mode === "memory") {
    if (typeof body.refresh_token !== "string") throw new AuthdError("authd's token response lacks refresh_token");
    tokens.refreshToken = body.refresh_token;
  }
  return tokens;
}

async function send(client: Client, path: string, init: RequestInit, timeout?: number): Promise<Response> {
  const c = client._;
  const headers = new Headers(init.headers);
  if (c.options.mode === "cookie") headers.set("X-Authd-Cookie", "1");
  const signal = timeout ? AbortSignal.timeout(timeout) : init.signal;
  try {
    return await c.fetch(`${c.options.baseUrl}${path}`, {
      ...init,
      headers,
      signal,
      credentials: c.options.mode === "cookie" ? "include" : "omit",
    });
  } catch (error) {
    throw new NetworkError(`authd is unreachable: ${String(error)}`, { cause: error });
  }
}

async function errorFrom(response: Response): Promise<ResponseError> {
  let code = "http_error";
  let description = response.statusText;
  try {
    const body = (await response.json()) as { error?: unknown; error_description?: unknown };
    if (typeof body.error === "string") code = body.error;
    if (typeof body.error_description === "string") description = body.error_description;
  } catch {
    // Not our JSON error shape: keep the status text.
  }
  return new ResponseError(response.status, code, description);
}

async function tokenRequest(client: Client, params: Record<string, string>): Promise<Tokens> {
  const response = await send(
    client,
    "/oauth/token",
    {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams(params).toString(),
    },
    client._.options.requestTimeout,
  );
  if (!response.ok) throw await errorFrom(response);
  return tokensFrom((await response.json()) as Record<string, unknown>, client._.options.mode, Date.now());
}

function markerKey(client: Client): string {
  return `${client._.options.name}:expires`;
}

/** The expiry of the newest token any tab of this origin holds, or `null` without localStorage. */
function readMarker(client: Client): number | null {
  try {
    const value = globalThis.localStorage?.getItem(markerKey(client));
    if (value === undefined) return null;
    return value === null ? 0 : Number(value);
  } catch {
    return null;
  }
}

function writeMarker(client: Client, expiresAt: number | null): void {
  try {
    if (expiresAt === null) globalThis.localStorage?.removeItem(markerKey(client));
    else globalThis.localStorage?.setItem(markerKey(client), String(expiresAt));
  } catch {
    // No storage (private mode, node): the broadcast alone has to do.
  }
}

/** Resolves once this tab holds a token expiring at `expiresAt` or later, or after `wait` ms. */
function waitForNewer(client: Client, expiresAt: number, wait: number): Promise<void> {
  const c = client._;
  return new Promise((resolve) => {
    const check = () => {
      if ((c.tokens?.expiresAt ?? 0) >= expiresAt) {
        clearTimeout(timer);
        c.waiters.delete(check);
        resolve();
      }
    };
    const timer = setTimeout(() => {
      c.waiters.delete(check);
      resolve();
    }, wait);
    c.waiters.add(check);
    check();
  });
}

function adopt(client: Client, tokens: Tokens, event: "login" | "refresh"): Tokens {
  client._.tokens = tokens;
  writeMarker(client, tokens.expiresAt);
  post(client, { type: "tokens", tokens });
  emit(client, { type: event, sessionId: tokens.sessionId });
  return tokens;
}

function endLocally(client: Client, reason: "local" | "ended"): void {
  const had = client._.tokens !== null;
  client._.tokens = null;
  writeMarker(client, null);
  post(client, { type: "logout" });
  if (had || reason === "local") emit(client, { type: "logout", reason });
}

export interface LoginParams {
  username: string;
  password: string;
  /** Shown in the device list; default: parsed from the User-Agent. */
  deviceName?: string;
  scope?: string;
}

/** Signs in with a password; every tab of this origin is signed in with it. */
export async function login(client: Client, params: LoginParams): Promise<void> {
  const form: Record<string, string> = {
    grant_type: "password",
    username: params.username,
    password: params.password,
  };
  if (client._.options.clientId) form.client_id = client._.options.clientId;
  if (params.deviceName) form.device_name = params.deviceName;
  if (params.scope) form.scope = params.scope;
  adopt(client, await tokenRequest(client, form), "login");
}

/**
 * Picks up the sign-in this origin already has: another tab's token, or (in
 * cookie mode) a refresh with the cookie. Resolves `true` when signed in.
 */
export async function restore(client: Client): Promise<boolean> {
  if (client._.tokens) return true;
  const peer = await askPeers(client, client._.options.peerWait);
  if (peer) return true;
  if (client._.options.mode !== "cookie") return false;
  // No tab of this origin has signed in since the last sign-out: there is
  // no cookie to try (saves a request that can only fail).
  if (readMarker(client) === 0) return false;
  try {
    await refresh(client, null);
    return true;
  } catch (error) {
    if (error instanceof LoggedOutError) return false;
    throw error;
  }
}

function askPeers(client: Client, wait: number): Promise<Tokens | null> {
  const c = client._;
  if (!c.channel || wait <= 0) return Promise.resolve(null);
  return new Promise((resolve) => {
    const done = (tokens: Tokens | null) => {
      clearTimeout(timer);
      c.waiters.delete(done);
      resolve(tokens);
    };
    const timer = setTimeout(() => done(c.tokens), wait);
    c.waiters.add(done);
    post(client, { type: "ask" });
  });
}

function fresh(client: Client, tokens: Tokens | null, now: number): boolean {
  if (!tokens) return false;
  const margin = Math.min(client._.options.refreshMargin, tokens.lifetime / 4);
  return tokens.expiresAt - margin > now;
}

/**
 * One refresh for this tab, single-flight across tabs. `stale` is the access
 * token found wanting (null: none); if another tab has replaced it by the
 * time this one holds the lock, that tab's token is used instead.
 */
function refresh(client: Client, stale: string | null): Promise<Tokens> {
  const c = client._;
  if (!c.inflight) {
    c.inflight = refreshAcrossTabs(client, stale).finally(() => {
      c.inflight = null;
    });
  }
  return c.inflight;
}

async function refreshAcrossTabs(client: Client, stale: string | null): Promise<Tokens> {
  const locks = typeof navigator !== "undefined" ? navigator.locks : undefined;
  if (!locks) return refreshNow(client, stale, false);
  const name = `${client._.options.name}:refresh`;
  const timeout = client._.options.lockTimeout;
  // A refresh started under the lock finishes even if another tab steals the
  // lock meanwhile (the request then rejects, but the work goes on): wait for it.
  let work: Promise<Tokens> | null = null;
  const run = (contended: boolean) => () => (work = refreshNow(client, stale, contended));
  const finish = async (error: unknown): Promise<Tokens> => {
    if (work) return work;
    throw error;
  };
  // First try without waiting: when the lock is free nobody else is refreshing.
  try {
    const immediate = await locks.request(name, { ifAvailable: true }, (lock) => (lock ? run(false)() : null));
    if (immediate) return immediate;
  } catch (error) {
    return finish(error);
  }
  // Another tab is refreshing: wait for it (its token arrives by broadcast),
  // then take the lock over if it has not let go within the timeout.
  try {
    return await locks.request(name, { signal: AbortSignal.timeout(timeout) }, run(true));
  } catch (error) {
    if (work || !isAbort(error)) return finish(error);
  }
  try {
    return await locks.request(name, { steal: true }, run(true));
  } catch (error) {
    return finish(error);
  }
}

function isAbort(error: unknown): boolean {
  return error instanceof DOMException && (error.name === "AbortError" || error.name === "TimeoutError");
}

async function refreshNow(client: Client, stale: string | null, contended: boolean): Promise<Tokens> {
  const c = client._;
  const replaced = () => c.tokens !== null && c.tokens.accessToken !== stale && fresh(client, c.tokens, Date.now());
  if (replaced()) return c.tokens as Tokens;
  // The tab that held the lock before broadcast its token just before letting
  // go, and the message may land a moment after the lock does. The marker
  // (an expiry time, no secret) says whether there is a newer token to wait for.
  const newest = readMarker(client);
  if (newest !== null && newest > (c.tokens?.expiresAt ?? 0)) {
    await waitForNewer(client, newest, c.options.peerWait);
    if (replaced()) return c.tokens as Tokens;
  } else if (contended && newest === null) {
    await askPeers(client, Math.min(c.options.peerWait, 100));
    if (replaced()) return c.tokens as Tokens;
  }
  const params: Record<string, string> = { grant_type: "refresh_token" };
  if (c.options.mode === "memory") {
    const token = c.tokens?.refreshToken;
    if (!token) throw new LoggedOutError("not signed in");
    params.refresh_token = token;
  }
  c.refreshes += 1;
  try {
    return adopt(client, await tokenRequest(client, params), c.tokens ? "refresh" : "login");
  } catch (error) {
    // A refused refresh token (or, in cookie mode, no cookie) means the session is over.
    if (error instanceof ResponseError && (error.code === "invalid_grant" || error.status === 400)) {
      endLocally(client, "ended");
      throw new LoggedOutError("the session has ended", { cause: error });
    }
    throw error;
  }
}

async function accessToken(client: Client): Promise<Tokens> {
  const tokens = client._.tokens;
  if (tokens && fresh(client, tokens, Date.now())) return tokens;
  if (!tokens && (client._.options.mode === "memory" || readMarker(client) === 0)) {
    throw new LoggedOutError("not signed in");
  }
  return refresh(client, tokens?.accessToken ?? null);
}

/**
 * `fetch` with the bearer token attached: refreshed first when it is about
 * to expire, and refreshed and retried once after a 401. Throws
 * {@link LoggedOutError} when the session has ended.
 */
export async function authFetch(client: Client, input: string | URL, init: RequestInit = {}): Promise<Response> {
  const attempt = async (tokens: Tokens) => {
    const headers = new Headers(init.headers);
    headers.set("Authorization", `Bearer ${tokens.accessToken}`);
    try {
      return await client._.fetch(input, { ...init, headers });
    } catch (error) {
      throw new NetworkError(`request failed: ${String(error)}`, { cause: error });
    }
  };
  const tokens = await accessToken(client);
  const response = await attempt(tokens);
  if (response.status !== 401) return response;
  const renewed = await refresh(client, tokens.accessToken);
  const retried = await attempt(renewed);
  if (retried.status === 401) {
    endLocally(client, "ended");
    throw new LoggedOutError("authd refused the session");
  }
  return retried;
}

export { authFetch as fetch };

async function api(client: Client, path: string, init: RequestInit = {}): Promise<Response> {
  const response = await authFetch(client, `${client._.options.baseUrl}${path}`, init);
  if (!response.ok) throw await errorFrom(response);
  return response;
}

/** Signs this session out, in every tab. */
export async function logout(client: Client): Promise<void> {
  const tokens = client._.tokens;
  try {
    if (tokens) {
      const response = await client._.fetch(`${client._.options.baseUrl}/v1/logout`, {
        method: "POST",
        headers: { Authorization: `Bearer ${tokens.accessToken}` },
        signal: AbortSignal.timeout(client._.options.requestTimeout),
      });
      // An expired access token: revoke by the refresh token instead.
      if (response.status === 401 && client._.options.mode === "memory") await revokeRefresh(client);
    }
    // Cookie mode: revoking by the cookie also makes authd clear it.
    if (client._.options.mode === "cookie") await revokeRefresh(client);
  } catch (error) {
    if (!(error instanceof AuthdError) && !isAbort(error) && !(error instanceof TypeError)) throw error;
  } finally {
    endLocally(client, "local");
  }
}

async function revokeRefresh(client: Client): Promise<void> {
  const token = client._.tokens?.refreshToken;
  const params: Record<string, string> = {};
  if (token) params.token = token;
  else if (client._.options.mode !== "cookie") return;
  await send(
    client,
    "/oauth/revoke",
    {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams(params).toString(),
    },
    client._.options.requestTimeout,
  );
}

/** Signs out every other device of the user. Resolves to how many sessions ended. */
export async function revokeOthers(client: Client): Promise<number> {
  const response = await api(client, "/v1/sessions/revoke-others", { method: "POST" });
  const body = (await response.json()) as { revoked?: unknown };
  return typeof body.revoked === "number" ? body.revoked : Array.isArray(body.revoked) ? body.revoked.length : 0;
}

/** Signs out every device of the user, this one included. */
export async function logoutEverywhere(client: Client): Promise<void> {
  await revokeOthers(client);
  await logout(client);
}

/** The user's live sessions, newest first, `current` marking this one. */
export async function sessions(client: Client): Promise<Session[]> {
  const response = await api(client, "/v1/sessions");
  const body = (await response.json()) as { sessions: Session[] };
  return body.sessions;
}

/** Renames one of the user's sessions; resolves to the updated entry. */
export async function rename(client: Client, id: string, deviceName: string): Promise<Session> {
  const response = await api(client, `/v1/sessions/${encodeURIComponent(id)}`, {
    method: "PATCH",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ device_name: deviceName }),
  });
  return (await response.json()) as Session;
}

/** Signs out one of the user's sessions (this one too: then every tab is logged out). */
export async function revoke(client: Client, id: string): Promise<void> {
  await api(client, `/v1/sessions/${encodeURIComponent(id)}`, { method: "DELETE" });
  if (id === client._.tokens?.sessionId) endLocally(client, "local");
}
