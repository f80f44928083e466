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
/** Base class of every error this kit throws. */
export class AuthdError extends Error {
    constructor(message, options) {
        super(message, options);
        this.name = new.target.name;
    }
}
/** authd answered with an error (`{"error", "error_description"}`). */
export class ResponseError extends AuthdError {
    status;
    code;
    description;
    constructor(status, code, description) {
        super(`${status} ${code}: ${description}`);
        this.status = status;
        this.code = code;
        this.description = description;
    }
}
/** Not signed in, or the session has ended (logged out, revoked, expired). */
export class LoggedOutError extends AuthdError {
}
/** authd could not be reached, or did not answer in time. */
export class NetworkError extends AuthdError {
}
export function createClient(options) {
    const baseUrl = options.baseUrl.replace(/\/+$/, "");
    const mode = options.mode ?? "cookie";
    const name = options.name ?? `authd:${baseUrl || (globalThis.location?.origin ?? "")}`;
    const fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis);
    const internal = {
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
    const client = { baseUrl, mode, _: internal };
    if (typeof BroadcastChannel !== "undefined") {
        const channel = new BroadcastChannel(name);
        channel.onmessage = (event) => onMessage(client, event.data);
        internal.channel = channel;
    }
    return client;
}
/** Stops listening to the other tabs; the client keeps its tokens. */
export function close(client) {
    client._.channel?.close();
    client._.channel = null;
}
/** Calls `listener` on every login, refresh and logout (this tab's or another's). Returns an unsubscribe function. */
export function onChange(client, listener) {
    client._.listeners.add(listener);
    return () => client._.listeners.delete(listener);
}
/** Whether this tab holds a token for a session (which may since have been revoked elsewhere). */
export function isLoggedIn(client) {
    return client._.tokens !== null;
}
/** The id of the session this tab uses, or `null`. */
export function sessionId(client) {
    return client._.tokens?.sessionId ?? null;
}
/** How many refreshes this tab itself has sent to authd. */
export function refreshCount(client) {
    return client._.refreshes;
}
function emit(client, event) {
    for (const listener of client._.listeners) {
        try {
            listener(event);
        }
        catch {
            // A listener's failure is its own; the others still hear of the change.
        }
    }
}
function post(client, message) {
    try {
        client._.channel?.postMessage(message);
    }
    catch {
        // A closed channel: this tab is going away.
    }
}
function onMessage(client, message) {
    const c = client._;
    if (message.type === "tokens") {
        const known = c.tokens;
        // Only a newer token (or another session's) replaces the one this tab has.
        if (!known || message.tokens.expiresAt > known.expiresAt || known.sessionId !== message.tokens.sessionId) {
            c.tokens = message.tokens;
            emit(client, { type: known ? "refresh" : "login", sessionId: message.tokens.sessionId });
        }
        for (const waiter of [...c.waiters])
            waiter(message.tokens);
    }
    else if (message.type === "logout") {
        if (c.tokens) {
            c.tokens = null;
            emit(client, { type: "logout", reason: "remote" });
        }
    }
    else if (message.type === "ask" && c.tokens) {
        post(client, { type: "tokens", tokens: c.tokens });
    }
}
function tokensFrom(body, mode, now) {
    const accessToken = body.access_token;
    const expiresIn = body.expires_in;
    const sid = body.session_id;
    if (typeof accessToken !== "string" || typeof expiresIn !== "number" || typeof sid !== "string") {
        throw new AuthdError("authd's token response lacks access_token, expires_in or session_id");
    }
    const tokens = { accessToken, expiresAt: now + expiresIn * 1000, lifetime: expiresIn * 1000, sessionId: sid };
    if (mode === "memory") {
        if (typeof body.refresh_token !== "string")
            throw new AuthdError("authd's token response lacks refresh_token");
        tokens.refreshToken = body.refresh_token;
    }
    return tokens;
}
async function send(client, path, init, timeout) {
    const c = client._;
    const headers = new Headers(init.headers);
    if (c.options.mode === "cookie")
        headers.set("X-Authd-Cookie", "1");
    const signal = timeout ? AbortSignal.timeout(timeout) : init.signal;
    try {
        return await c.fetch(`${c.options.baseUrl}${path}`, {
            ...init,
            headers,
            signal,
            credentials: c.options.mode === "cookie" ? "include" : "omit",
        });
    }
    catch (error) {
        throw new NetworkError(`authd is unreachable: ${String(error)}`, { cause: error });
    }
}
async function errorFrom(response) {
    let code = "http_error";
    let description = response.statusText;
    try {
        const body = (await response.json());
        if (typeof body.error === "string")
            code = body.error;
        if (typeof body.error_description === "string")
            description = body.error_description;
    }
    catch {
        // Not our JSON error shape: keep the status text.
    }
    return new ResponseError(response.status, code, description);
}
async function tokenRequest(client, params) {
    const response = await send(client, "/oauth/token", {
        method: "POST",
        headers: { "Content-Type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams(params).toString(),
    }, client._.options.requestTimeout);
    if (!response.ok)
        throw await errorFrom(response);
    return tokensFrom((await response.json()), client._.options.mode, Date.now());
}
function markerKey(client) {
    return `${client._.options.name}:expires`;
}
/** The expiry of the newest token any tab of this origin holds, or `null` without localStorage. */
function readMarker(client) {
    try {
        const value = globalThis.localStorage?.getItem(markerKey(client));
        if (value === undefined)
            return null;
        return value === null ? 0 : Number(value);
    }
    catch {
        return null;
    }
}
function writeMarker(client, expiresAt) {
    try {
        if (expiresAt === null)
            globalThis.localStorage?.removeItem(markerKey(client));
        else
            globalThis.localStorage?.setItem(markerKey(client), String(expiresAt));
    }
    catch {
        // No storage (private mode, node): the broadcast alone has to do.
    }
}
/** Resolves once this tab holds a token expiring at `expiresAt` or later, or after `wait` ms. */
function waitForNewer(client, expiresAt, wait) {
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
function adopt(client, tokens, event) {
    client._.tokens = tokens;
    writeMarker(client, tokens.expiresAt);
    post(client, { type: "tokens", tokens });
    emit(client, { type: event, sessionId: tokens.sessionId });
    return tokens;
}
function endLocally(client, reason) {
    const had = client._.tokens !== null;
    client._.tokens = null;
    writeMarker(client, null);
    post(client, { type: "logout" });
    if (had || reason === "local")
        emit(client, { type: "logout", reason });
}
/** Signs in with a password; every tab of this origin is signed in with it. */
export async function login(client, params) {
    const form = {
        grant_type: "password",
        username: params.username,
        password: params.password,
    };
    if (client._.options.clientId)
        form.client_id = client._.options.clientId;
    if (params.deviceName)
        form.device_name = params.deviceName;
    if (params.scope)
        form.scope = params.scope;
    adopt(client, await tokenRequest(client, form), "login");
}
/**
 * Picks up the sign-in this origin already has: another tab's token, or (in
 * cookie mode) a refresh with the cookie. Resolves `true` when signed in.
 */
export async function restore(client) {
    if (client._.tokens)
        return true;
    const peer = await askPeers(client, client._.options.peerWait);
    if (peer)
        return true;
    if (client._.options.mode !== "cookie")
        return false;
    // No tab of this origin has signed in since the last sign-out: there is
    // no cookie to try (saves a request that can only fail).
    if (readMarker(client) === 0)
        return false;
    try {
        await refresh(client, null);
        return true;
    }
    catch (error) {
        if (error instanceof LoggedOutError)
            return false;
        throw error;
    }
}
function askPeers(client, wait) {
    const c = client._;
    if (!c.channel || wait <= 0)
        return Promise.resolve(null);
    return new Promise((resolve) => {
        const done = (tokens) => {
            clearTimeout(timer);
            c.waiters.delete(done);
            resolve(tokens);
        };
        const timer = setTimeout(() => done(c.tokens), wait);
        c.waiters.add(done);
        post(client, { type: "ask" });
    });
}
function fresh(client, tokens, now) {
    if (!tokens)
        return false;
    const margin = Math.min(client._.options.refreshMargin, tokens.lifetime / 4);
    return tokens.expiresAt - margin > now;
}
/**
 * One refresh for this tab, single-flight across tabs. `stale` is the access
 * token found wanting (null: none); if another tab has replaced it by the
 * time this one holds the lock, that tab's token is used instead.
 */
function refresh(client, stale) {
    const c = client._;
    if (!c.inflight) {
        c.inflight = refreshAcrossTabs(client, stale).finally(() => {
            c.inflight = null;
        });
    }
    return c.inflight;
}
async function refreshAcrossTabs(client, stale) {
    const locks = typeof navigator !== "undefined" ? navigator.locks : undefined;
    if (!locks)
        return refreshNow(client, stale, false);
    const name = `${client._.options.name}:refresh`;
    const timeout = client._.options.lockTimeout;
    // A refresh started under the lock finishes even if another tab steals the
    // lock meanwhile (the request then rejects, but the work goes on): wait for it.
    let work = null;
    const run = (contended) => () => (work = refreshNow(client, stale, contended));
    const finish = async (error) => {
        if (work)
            return work;
        throw error;
    };
    // First try without waiting: when the lock is free nobody else is refreshing.
    try {
        const immediate = await locks.request(name, { ifAvailable: true }, (lock) => (lock ? run(false)() : null));
        if (immediate)
            return immediate;
    }
    catch (error) {
        return finish(error);
    }
    // Another tab is refreshing: wait for it (its token arrives by broadcast),
    // then take the lock over if it has not let go within the timeout.
    try {
        return await locks.request(name, { signal: AbortSignal.timeout(timeout) }, run(true));
    }
    catch (error) {
        if (work || !isAbort(error))
            return finish(error);
    }
    try {
        return await locks.request(name, { steal: true }, run(true));
    }
    catch (error) {
        return finish(error);
    }
}
function isAbort(error) {
    return error instanceof DOMException && (error.name === "AbortError" || error.name === "TimeoutError");
}
async function refreshNow(client, stale, contended) {
    const c = client._;
    const replaced = () => c.tokens !== null && c.tokens.accessToken !== stale && fresh(client, c.tokens, Date.now());
    if (replaced())
        return c.tokens;
    // The tab that held the lock before broadcast its token just before letting
    // go, and the message may land a moment after the lock does. The marker
    // (an expiry time, no secret) says whether there is a newer token to wait for.
    const newest = readMarker(client);
    if (newest !== null && newest > (c.tokens?.expiresAt ?? 0)) {
        await waitForNewer(client, newest, c.options.peerWait);
        if (replaced())
            return c.tokens;
    }
    else if (contended && newest === null) {
        await askPeers(client, Math.min(c.options.peerWait, 100));
        if (replaced())
            return c.tokens;
    }
    const params = { grant_type: "refresh_token" };
    if (c.options.mode === "memory") {
        const token = c.tokens?.refreshToken;
        if (!token)
            throw new LoggedOutError("not signed in");
        params.refresh_token = token;
    }
    c.refreshes += 1;
    try {
        return adopt(client, await tokenRequest(client, params), c.tokens ? "refresh" : "login");
    }
    catch (error) {
        // A refused refresh token (or, in cookie mode, no cookie) means the session is over.
        if (error instanceof ResponseError && (error.code === "invalid_grant" || error.status === 400)) {
            endLocally(client, "ended");
            throw new LoggedOutError("the session has ended", { cause: error });
        }
        throw error;
    }
}
async function accessToken(client) {
    const tokens = client._.tokens;
    if (tokens && fresh(client, tokens, Date.now()))
        return tokens;
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
export async function authFetch(client, input, init = {}) {
    const attempt = async (tokens) => {
        const headers = new Headers(init.headers);
        headers.set("Authorization", `Bearer ${tokens.accessToken}`);
        try {
            return await client._.fetch(input, { ...init, headers });
        }
        catch (error) {
            throw new NetworkError(`request failed: ${String(error)}`, { cause: error });
        }
    };
    const tokens = await accessToken(client);
    const response = await attempt(tokens);
    if (response.status !== 401)
        return response;
    const renewed = await refresh(client, tokens.accessToken);
    const retried = await attempt(renewed);
    if (retried.status === 401) {
        endLocally(client, "ended");
        throw new LoggedOutError("authd refused the session");
    }
    return retried;
}
export { authFetch as fetch };
async function api(client, path, init = {}) {
    const response = await authFetch(client, `${client._.options.baseUrl}${path}`, init);
    if (!response.ok)
        throw await errorFrom(response);
    return response;
}
/** Signs this session out, in every tab. */
export async function logout(client) {
    const tokens = client._.tokens;
    try {
        if (tokens) {
            const response = await client._.fetch(`${client._.options.baseUrl}/v1/logout`, {
                method: "POST",
                headers: { Authorization: `Bearer ${tokens.accessToken}` },
                signal: AbortSignal.timeout(client._.options.requestTimeout),
            });
            // An expired access token: revoke by the refresh token instead.
            if (response.status === 401 && client._.options.mode === "memory")
                await revokeRefresh(client);
        }
        // Cookie mode: revoking by the cookie also makes authd clear it.
        if (client._.options.mode === "cookie")
            await revokeRefresh(client);
    }
    catch (error) {
        if (!(error instanceof AuthdError) && !isAbort(error) && !(error instanceof TypeError))
            throw error;
    }
    finally {
        endLocally(client, "local");
    }
}
async function revokeRefresh(client) {
    const token = client._.tokens?.refreshToken;
    const params = {};
    if (token)
        params.token = token;
    else if (client._.options.mode !== "cookie")
        return;
    await send(client, "/oauth/revoke", {
        method: "POST",
        headers: { "Content-Type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams(params).toString(),
    }, client._.options.requestTimeout);
}
/** Signs out every other device of the user. Resolves to how many sessions ended. */
export async function revokeOthers(client) {
    const response = await api(client, "/v1/sessions/revoke-others", { method: "POST" });
    const body = (await response.json());
    return typeof body.revoked === "number" ? body.revoked : Array.isArray(body.revoked) ? body.revoked.length : 0;
}
/** Signs out every device of the user, this one included. */
export async function logoutEverywhere(client) {
    await revokeOthers(client);
    await logout(client);
}
/** The user's live sessions, newest first, `current` marking this one. */
export async function sessions(client) {
    const response = await api(client, "/v1/sessions");
    const body = (await response.json());
    return body.sessions;
}
/** Renames one of the user's sessions; resolves to the updated entry. */
export async function rename(client, id, deviceName) {
    const response = await api(client, `/v1/sessions/${encodeURIComponent(id)}`, {
        method: "PATCH",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ device_name: deviceName }),
    });
    return (await response.json());
}
/** Signs out one of the user's sessions (this one too: then every tab is logged out). */
export async function revoke(client, id) {
    await api(client, `/v1/sessions/${encodeURIComponent(id)}`, { method: "DELETE" });
    if (id === client._.tokens?.sessionId)
        endLocally(client, "local");
}
