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
export type AuthEvent = {
    type: "login";
    sessionId: string;
} | {
    type: "refresh";
    sessionId: string;
} | {
    type: "logout";
    reason: "local" | "remote" | "ended";
};
/** Base class of every error this kit throws. */
export declare class AuthdError extends Error {
    constructor(message: string, options?: {
        cause?: unknown;
    });
}
/** authd answered with an error (`{"error", "error_description"}`). */
export declare class ResponseError extends AuthdError {
    readonly status: number;
    readonly code: string;
    readonly description: string;
    constructor(status: number, code: string, description: string);
}
/** Not signed in, or the session has ended (logged out, revoked, expired). */
export declare class LoggedOutError extends AuthdError {
}
/** authd could not be reached, or did not answer in time. */
export declare class NetworkError extends AuthdError {
}
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
/** A client: create one per page with {@link createClient}. */
export interface Client {
    readonly baseUrl: string;
    readonly mode: Mode;
    /** @internal */ readonly _: Internal;
}
interface Internal {
    options: Required<Omit<ClientOptions, "clientId" | "fetch">> & {
        clientId?: string;
    };
    fetch: typeof globalThis.fetch;
    tokens: Tokens | null;
    inflight: Promise<Tokens> | null;
    channel: BroadcastChannel | null;
    listeners: Set<(event: AuthEvent) => void>;
    /** Resolvers waiting for a peer's tokens. */
    waiters: Set<(tokens: Tokens) => void>;
    refreshes: number;
}
export declare function createClient(options: ClientOptions): Client;
/** Stops listening to the other tabs; the client keeps its tokens. */
export declare function close(client: Client): void;
/** Calls `listener` on every login, refresh and logout (this tab's or another's). Returns an unsubscribe function. */
export declare function onChange(client: Client, listener: (event: AuthEvent) => void): () => void;
/** Whether this tab holds a token for a session (which may since have been revoked elsewhere). */
export declare function isLoggedIn(client: Client): boolean;
/** The id of the session this tab uses, or `null`. */
export declare function sessionId(client: Client): string | null;
/** How many refreshes this tab itself has sent to authd. */
export declare function refreshCount(client: Client): number;
export interface LoginParams {
    username: string;
    password: string;
    /** Shown in the device list; default: parsed from the User-Agent. */
    deviceName?: string;
    scope?: string;
}
/** Signs in with a password; every tab of this origin is signed in with it. */
export declare function login(client: Client, params: LoginParams): Promise<void>;
/**
 * Picks up the sign-in this origin already has: another tab's token, or (in
 * cookie mode) a refresh with the cookie. Resolves `true` when signed in.
 */
export declare function restore(client: Client): Promise<boolean>;
/**
 * `fetch` with the bearer token attached: refreshed first when it is about
 * to expire, and refreshed and retried once after a 401. Throws
 * {@link LoggedOutError} when the session has ended.
 */
export declare function authFetch(client: Client, input: string | URL, init?: RequestInit): Promise<Response>;
export { authFetch as fetch };
/** Signs this session out, in every tab. */
export declare function logout(client: Client): Promise<void>;
/** Signs out every other device of the user. Resolves to how many sessions ended. */
export declare function revokeOthers(client: Client): Promise<number>;
/** Signs out every device of the user, this one included. */
export declare function logoutEverywhere(client: Client): Promise<void>;
/** The user's live sessions, newest first, `current` marking this one. */
export declare function sessions(client: Client): Promise<Session[]>;
/** Renames one of the user's sessions; resolves to the updated entry. */
export declare function rename(client: Client, id: string, deviceName: string): Promise<Session>;
/** Signs out one of the user's sessions (this one too: then every tab is logged out). */
export declare function revoke(client: Client, id: string): Promise<void>;
