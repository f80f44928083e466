//! The load: a small hyper HTTP/1.1 client, one keep-alive connection per
//! worker, latencies into HDR histograms; and the in-process verify cells.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use authd::session::testing::SeededSession;
use authd::session::SessionService;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::runtime::Handle;
use tokio::sync::Barrier;

use crate::cli::Op;
use crate::cpu::{proc_status_kib, CpuTicks, CpuUse};
use crate::report::fmt_kib;
use crate::seed::{login_email, BROWSER_UA, PASSWORD};
use crate::world::progress;

const FORM: &str = "application/x-www-form-urlencoded";
/// No single request may take longer than this before it counts as an error.
const REQUEST_BOUND: Duration = Duration::from_secs(30);
/// Upper bound on requests per cell, whatever the duration.
const MAX_REQUESTS_PER_CELL: u64 = 5_000_000;
/// Verifications per second and core the pool of new tokens is sized for.
pub const NEW_TOKENS_PER_SEC: f64 = 30_000.0;
/// At most this many new tokens per cell (about 600 bytes each).
pub const MAX_NEW_TOKENS: usize = 150_000;

pub struct Load {
    pub addr: SocketAddr,
    pub host: String,
    pub basic: String,
    /// Users the login rows cycle through.
    pub login_users: usize,
    /// Access tokens of cached live sessions.
    pub access: Vec<String>,
    /// One refresh-token chain per worker; each worker presents its newest.
    pub chains: Vec<Mutex<String>>,
    /// Refresh tokens of live sessions, each revoked once.
    pub revoke_pool: Vec<String>,
    pub revoke_next: AtomicUsize,
    pub login_next: AtomicUsize,
}

type Sender = SendRequest<Full<Bytes>>;

pub async fn connect(addr: SocketAddr) -> anyhow::Result<Sender> {
    let stream = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow!("connect timed out"))??;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

pub async fn send(sender: &mut Sender, req: Request<Full<Bytes>>) -> anyhow::Result<(StatusCode, Bytes)> {
    sender.ready().await?;
    let response = sender.send_request(req).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// Whether authd's readiness probe reports its cache as trusted.
pub async fn cache_ready(addr: SocketAddr) -> bool {
    let probe = async {
        let mut sender = connect(addr).await?;
        let req = Request::builder()
            .uri("/readyz")
            .header(HOST, addr.to_string())
            .body(Full::new(Bytes::new()))?;
        let (status, body) = send(&mut sender, req).await?;
        let body: serde_json::Value = serde_json::from_slice(&body)?;
        anyhow::Ok(status == StatusCode::OK && body["cache"] == "ok")
    };
    matches!(tokio::time::timeout(Duration::from_secs(2), probe).await, Ok(Ok(true)))
}

fn post_form(load: &Load, path: &str) -> hyper::http::request::Builder {
    Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(HOST, load.host.as_str())
        .header(CONTENT_TYPE, FORM)
}

/// The next request of `op` for worker `w` (of `c`), or `None` when its pool is used up.
fn request(
    load: &Load,
    op: Op,
    w: usize,
    c: usize,
    i: u64,
    chain: &str,
) -> anyhow::Result<Option<Request<Full<Bytes>>>> {
    let access = || -> &str {
        let n = load.access.len().max(1);
        load.access
            .get((w + (i as usize).wrapping_mul(c)) % n)
            .map(String::as_str)
            .unwrap_or("")
    };
    let body = |s: String| Full::new(Bytes::from(s));
    let req = match op {
        Op::Login => {
            let k = load.login_next.fetch_add(1, Ordering::Relaxed) % load.login_users.max(1);
            let form = form_urlencoded::Serializer::new(String::new())
                .append_pair("grant_type", "password")
                .append_pair("username", &login_email(k))
                .append_pair("password", PASSWORD)
                .finish();
            post_form(load, "/oauth/token")
                .header(USER_AGENT, BROWSER_UA)
                .body(body(form))?
        }
        Op::Refresh => {
            post_form(load, "/oauth/token").body(body(format!("grant_type=refresh_token&refresh_token={chain}")))?
        }
        Op::Introspect => post_form(load, "/oauth/introspect")
            .header(AUTHORIZATION, load.basic.as_str())
            .body(body(format!("token={}", access())))?,
        Op::Me | Op::Sessions => Request::builder()
            .method(Method::GET)
            .uri(if op == Op::Me { "/v1/me" } else { "/v1/sessions" })
            .header(HOST, load.host.as_str())
            .header(AUTHORIZATION, format!("Bearer {}", access()))
            .body(Full::new(Bytes::new()))?,
        Op::Revoke => {
            let k = load.revoke_next.fetch_add(1, Ordering::Relaxed);
            let Some(token) = load.revoke_pool.get(k) else {
                return Ok(None);
            };
            post_form(load, "/oauth/revoke").body(body(format!("token={token}")))?
        }
        Op::Verify | Op::VerifyCached | Op::Verifier | Op::VerifierCached | Op::Propagation => {
            bail!("{} runs in-process", op.key())
        }
    };
    Ok(Some(req))
}

/// Whether the answer is the success it should be; for a refresh, the new token.
fn check(op: Op, status: StatusCode, body: &[u8]) -> Result<Option<String>, String> {
    if status != StatusCode::OK {
        let text = String::from_utf8_lossy(&body[..body.len().min(160)]).into_owned();
        return Err(format!("{} {text}", status.as_u16()));
    }
    match op {
        Op::Refresh => serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["refresh_token"].as_str().map(str::to_string))
            .map(Some)
            .ok_or_else(|| "refresh answer without refresh_token".to_string()),
        Op::Introspect if !body.starts_with(b"{\"active\":true") => Err("introspection answered inactive".into()),
        _ => Ok(None),
    }
}

#[derive(Default)]
struct WorkerOut {
    latencies: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
    exhausted: bool,
}

impl WorkerOut {
    fn fail(&mut self, why: String) {
        self.errors += 1;
        self.first_error.get_or_insert(why);
    }
}

async fn http_worker(
    load: Arc<Load>,
    op: Op,
    w: usize,
    c: usize,
    duration: Duration,
    max: u64,
    barrier: Arc<Barrier>,
) -> WorkerOut {
    let mut out = WorkerOut::default();
    let mut conn = connect(load.addr).await.ok();
    let mut chain = match load.chains.get(w) {
        Some(m) if op == Op::Refresh => m.lock().map(|t| t.clone()).unwrap_or_default(),
        _ => String::new(),
    };
    barrier.wait().await;
    let deadline = Instant::now() + duration;
    let mut i = 0u64;
    while i < max && Instant::now() < deadline {
        let req = match request(&load, op, w, c, i, &chain) {
            Ok(Some(req)) => req,
            Ok(None) => {
                out.exhausted = true;
                break;
            }
            Err(e) => {
                out.fail(format!("building the request: {e}"));
                break;
            }
        };
        i += 1;
        if conn.is_none() {
            match connect(load.addr).await {
                Ok(s) => conn = Some(s),
                Err(e) => {
                    out.fail(format!("connect: {e}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(sender) = conn.as_mut() else { continue };
        let started = Instant::now();
        let answer = tokio::time::timeout(REQUEST_BOUND, send(sender, req)).await;
        let ns = started.elapsed().as_nanos() as u64;
        match answer {
            Ok(Ok((status, body))) => match check(op, status, &body) {
                Ok(next) => {
                    out.latencies.push(ns);
                    if let Some(token) = next {
                        chain = token;
                    }
                }
                Err(e) => out.fail(e),
            },
            Ok(Err(e)) => {
                out.fail(format!("transport: {e}"));
                conn = None;
            }
            Err(_) => {
                out.fail(format!("no answer within {REQUEST_BOUND:?}"));
                conn = None;
            }
        }
    }
    if op == Op::Refresh {
        if let Some(Ok(mut slot)) = load.chains.get(w).map(|m| m.lock()) {
            *slot = chain;
        }
    }
    out
}

pub struct Cell {
    pub op: Op,
    pub c: usize,
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub exhausted: bool,
    pub elapsed: Duration,
    pub hist: Histogram<u64>,
    pub cpu: CpuUse,
}

impl Cell {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// 1 ns .. 10 min at 3 significant digits.
pub fn new_hist() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3).map_err(|e| anyhow!("histogram: {e}"))
}

fn gather(op: Op, c: usize, outs: Vec<WorkerOut>, elapsed: Duration, cpu: CpuUse) -> anyhow::Result<Cell> {
    let mut cell = Cell {
        op,
        c,
        ok: 0,
        errors: 0,
        first_error: None,
        exhausted: false,
        elapsed,
        hist: new_hist()?,
        cpu,
    };
    for out in outs {
        for ns in &out.latencies {
            cell.hist.saturating_record(*ns);
        }
        cell.ok += out.latencies.len() as u64;
        cell.errors += out.errors;
        cell.exhausted |= out.exhausted;
        if cell.first_error.is_none() {
            cell.first_error = out.first_error;
        }
    }
    Ok(cell)
}

/// `c` workers, each on its own connection, for `duration` (or `total` requests).
pub async fn http_cell(
    load: &Arc<Load>,
    op: Op,
    c: usize,
    duration: Duration,
    total: Option<u64>,
) -> anyhow::Result<Cell> {
    let c = c.max(1);
    let max = total
        .map(|t| t.div_ceil(c as u64))
        .unwrap_or(MAX_REQUESTS_PER_CELL / c as u64)
        .max(1);
    let barrier = Arc::new(Barrier::new(c + 1));
    let workers: Vec<_> = (0..c)
        .map(|w| tokio::spawn(http_worker(load.clone(), op, w, c, duration, max, barrier.clone())))
        .collect();
    barrier.wait().await;
    let cpu0 = CpuTicks::take();
    let started = Instant::now();
    let mut outs = Vec::with_capacity(c);
    for worker in workers {
        match worker.await {
            Ok(out) => outs.push(out),
            Err(e) => outs.push(WorkerOut {
                errors: 1,
                first_error: Some(format!("worker failed: {e}")),
                ..WorkerOut::default()
            }),
        }
    }
    let elapsed = started.elapsed();
    let cpu = CpuTicks::take().since(&cpu0);
    gather(op, c, outs, elapsed, cpu)
}

/// Access tokens for the given sessions, each with its own `jti` (so each
/// is new to the verifier), signed by authd's issuer on `threads` threads.
pub async fn mint_pool(
    sessions: &Arc<SessionService>,
    owners: &[SeededSession],
    n: usize,
    threads: usize,
) -> anyhow::Result<Vec<String>> {
    if owners.is_empty() {
        bail!("no sessions to mint tokens for");
    }
    let owners: Arc<Vec<SeededSession>> = Arc::new(owners.to_vec());
    let threads = threads.max(1);
    let mut parts = Vec::with_capacity(threads);
    for t in 0..threads {
        let (sessions, owners) = (sessions.clone(), owners.clone());
        let count = n / threads + usize::from(t < n % threads);
        parts.push(tokio::task::spawn_blocking(move || {
            (0..count)
                .map(|i| {
                    let owner = &owners[(t + i * threads) % owners.len()].record;
                    sessions
                        .seed_access_token(owner)
                        .map_err(|e| anyhow!("signing an access token: {e}"))
                })
                .collect::<anyhow::Result<Vec<String>>>()
        }));
    }
    let mut pool = Vec::with_capacity(n);
    for part in parts {
        pool.extend(part.await??);
    }
    Ok(pool)
}

/// In-process `TokenIssuer::verify` on authd's runtime, `c` tasks at once:
/// each token once (`unique`, until the pool is used up) or round and round.
pub async fn verify_cell(
    server: &Handle,
    sessions: &Arc<SessionService>,
    tokens: Arc<Vec<String>>,
    unique: bool,
    c: usize,
    duration: Duration,
) -> anyhow::Result<Cell> {
    let barrier = Arc::new(Barrier::new(c + 1));
    let max = MAX_REQUESTS_PER_CELL / c as u64;
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..c)
        .map(|w| {
            let (sessions, tokens, barrier, next) = (sessions.clone(), tokens.clone(), barrier.clone(), next.clone());
            server.spawn(async move {
                let mut out = WorkerOut::default();
                barrier.wait().await;
                let deadline = Instant::now() + duration;
                let n = tokens.len().max(1);
                let mut i = 0u64;
                while i < max && Instant::now() < deadline {
                    let k = if unique {
                        next.fetch_add(1, Ordering::Relaxed)
                    } else {
                        (w + (i as usize).wrapping_mul(c)) % n
                    };
                    let Some(token) = tokens.get(k) else {
                        out.exhausted = true;
                        break;
                    };
                    let started = Instant::now();
                    let verdict = sessions.token_issuer().verify(token, sessions.now());
                    let ns = started.elapsed().as_nanos() as u64;
                    match verdict {
                        Ok(_) => out.latencies.push(ns),
                        Err(why) => out.fail(format!("refused: {why:?}")),
                    }
                    i += 1;
                    tokio::task::yield_now().await;
                }
                out
            })
        })
        .collect();
    barrier.wait().await;
    let cpu0 = CpuTicks::take();
    let started = Instant::now();
    let mut outs = Vec::with_capacity(c);
    for worker in workers {
        if let Ok(out) = worker.await {
            outs.push(out);
        }
    }
    let elapsed = started.elapsed();
    let cpu = CpuTicks::take().since(&cpu0);
    gather(
        if unique { Op::Verify } else { Op::VerifyCached },
        c,
        outs,
        elapsed,
        cpu,
    )
}

pub struct Burst {
    pub n: usize,
    pub ok: u64,
    pub shed: u64,
    pub other: u64,
    pub first_other: Option<String>,
    pub first_shed: Option<String>,
    pub rss_before_kib: Option<u64>,
    pub hwm_kib: Option<u64>,
    pub seconds: f64,
    pub hist: Histogram<u64>,
}

/// `n` logins at the same instant, each on its own connection; peak RSS of
/// the process during them (VmHWM, reset just before).
pub async fn login_burst(load: &Arc<Load>, n: usize) -> anyhow::Result<Burst> {
    let barrier = Arc::new(Barrier::new(n + 1));
    let workers: Vec<_> = (0..n)
        .map(|w| {
            let (load, barrier) = (load.clone(), barrier.clone());
            tokio::spawn(async move {
                let conn = connect(load.addr).await;
                barrier.wait().await;
                let mut sender = conn.map_err(|e| format!("connect: {e}"))?;
                let req = request(&load, Op::Login, w, n, 0, "")
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| "no request".to_string())?;
                let started = Instant::now();
                let answer = tokio::time::timeout(REQUEST_BOUND, send(&mut sender, req))
                    .await
                    .map_err(|_| "no answer within 30 s".to_string())?
                    .map_err(|e| format!("transport: {e}"))?;
                Ok::<_, String>((answer.0, answer.1, started.elapsed().as_nanos() as u64))
            })
        })
        .collect();
    // Every connection is open before the peak is reset and the logins go.
    let reset = std::fs::write("/proc/self/clear_refs", "5");
    let rss_before_kib = proc_status_kib("VmRSS");
    barrier.wait().await;
    let started = Instant::now();
    let mut burst = Burst {
        n,
        ok: 0,
        shed: 0,
        other: 0,
        first_other: None,
        first_shed: None,
        rss_before_kib,
        hwm_kib: None,
        seconds: 0.0,
        hist: new_hist()?,
    };
    for worker in workers {
        match worker.await {
            Ok(Ok((status, _, ns))) if status == StatusCode::OK => {
                burst.ok += 1;
                burst.hist.saturating_record(ns);
            }
            Ok(Ok((status, body, _))) if status == StatusCode::SERVICE_UNAVAILABLE => {
                burst.shed += 1;
                burst
                    .first_shed
                    .get_or_insert_with(|| String::from_utf8_lossy(&body[..body.len().min(160)]).into_owned());
            }
            Ok(Ok((status, body, _))) => {
                burst.other += 1;
                burst.first_other.get_or_insert_with(|| {
                    format!(
                        "{} {}",
                        status.as_u16(),
                        String::from_utf8_lossy(&body[..body.len().min(120)])
                    )
                });
            }
            Ok(Err(e)) => {
                burst.other += 1;
                burst.first_other.get_or_insert(e);
            }
            Err(e) => {
                burst.other += 1;
                burst.first_other.get_or_insert(format!("task: {e}"));
            }
        }
    }
    burst.seconds = started.elapsed().as_secs_f64();
    burst.hwm_kib = if reset.is_ok() { proc_status_kib("VmHWM") } else { None };
    progress(&format!(
        "{n} simultaneous logins: {} ok, {} shed (503), {} other errors in {:.1} s; peak RSS {}",
        burst.ok,
        burst.shed,
        burst.other,
        burst.seconds,
        fmt_kib(burst.hwm_kib)
    ));
    Ok(burst)
}
