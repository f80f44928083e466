//! The downstream verifier (`authd-verify`, issue 11) against this run's
//! authd, connected as a service connects it: RFC 8414 discovery, the JWKS,
//! the revocation snapshot and stream, as the bench's service client. It runs
//! on a runtime of its own (threads `bench-ds`), as it would in its own
//! process. Three measurements: its rate on tokens it has never seen, against
//! raw Ed25519 verification of the same tokens; its rate on tokens it has
//! seen; and how soon a session revoked through authd's HTTP API is refused
//! by it while it serves load.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use authd_verify::{Verifier, VerifyError};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::Full;
use hyper::header::{AUTHORIZATION, HOST};
use hyper::{Method, Request, StatusCode};
use tokio::runtime::Handle;
use tokio::sync::Barrier;

use crate::cli::Op;
use crate::cpu::{CpuTicks, CpuUse};
use crate::load::{connect, new_hist, send, Cell};
use crate::server::Running;

/// Upper bound on verifications per cell, whatever the duration.
const MAX_CALLS_PER_CELL: u64 = 200_000_000;
/// Tokens per slice of the interleaved raw-vs-verifier timing: small enough
/// that both see the same machine (it is shared), large enough to time.
pub const SLICE: usize = 500;
/// A verification task yields to the runtime after this many seen-token
/// calls (each well under a microsecond), so the feed task still runs.
const SEEN_BATCH: u64 = 32;
/// A revoked session still accepted this long after the revoke's answer
/// counts as an error.
const PROPAGATION_BOUND: Duration = Duration::from_secs(5);

/// A verifier following this run's authd, built on the verifier's runtime
/// (its background tasks live there), once its revocation snapshot is in.
pub async fn connect_verifier(ds: &Handle, running: &Running) -> anyhow::Result<Verifier> {
    let issuer = running
        .config
        .issuer
        .clone()
        .ok_or_else(|| anyhow!("authd runs without a configured issuer"))?;
    let build = Verifier::builder(issuer)
        .via(format!("http://{}", running.addr))
        .audience(running.config.audience.clone())
        .client_credentials(running.client_id, running.client_secret.clone())
        .build();
    let verifier = ds
        .spawn(build)
        .await?
        .map_err(|e| anyhow!("connecting the verifier to authd: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while verifier.feed_silence().is_none() {
        if Instant::now() > deadline {
            bail!("the verifier has not loaded authd's revocation snapshot after 10 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(verifier)
}

/// The raw Ed25519 public key (JWK `x`) authd signs `token` with, from its JWKS.
pub async fn public_key_of(addr: SocketAddr, token: &str) -> anyhow::Result<Vec<u8>> {
    let header = token.split('.').next().unwrap_or_default();
    let header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header)?)?;
    let kid = header["kid"].as_str().ok_or_else(|| anyhow!("token without a kid"))?;
    let mut sender = connect(addr).await?;
    let req = Request::builder()
        .uri("/.well-known/jwks.json")
        .header(HOST, addr.to_string())
        .body(Full::new(Bytes::new()))?;
    let (status, body) = send(&mut sender, req).await?;
    if status != StatusCode::OK {
        bail!("GET /.well-known/jwks.json: {status}");
    }
    let jwks: serde_json::Value = serde_json::from_slice(&body)?;
    let key = jwks["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["kid"] == kid))
        .ok_or_else(|| anyhow!("kid {kid} is not in authd's JWKS"))?;
    if key["crv"] != "Ed25519" {
        bail!("the signing key is not Ed25519 ({})", key["crv"]);
    }
    let x = key["x"].as_str().ok_or_else(|| anyhow!("JWK without x"))?;
    Ok(URL_SAFE_NO_PAD.decode(x)?)
}

/// CPU time this thread has used, nanoseconds.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID
    // needs nothing else.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Wall-clock and thread CPU time of one timed phase, summed over slices.
#[derive(Default, Clone, Copy)]
struct Spent {
    wall: f64,
    cpu_ns: u64,
}

impl Spent {
    fn time<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let (wall, cpu) = (Instant::now(), thread_cpu_ns());
        let out = f();
        self.cpu_ns += thread_cpu_ns().saturating_sub(cpu);
        self.wall += wall.elapsed().as_secs_f64();
        out
    }
}

/// Operations per second: by this thread's CPU time (what other processes
/// on the machine cannot inflate) and by the wall clock.
#[derive(Clone, Copy)]
pub struct Rate {
    pub cpu: f64,
    pub wall: f64,
}

impl Rate {
    fn of(n: usize, spent: Spent) -> Rate {
        Rate {
            cpu: n as f64 / (spent.cpu_ns as f64 / 1e9).max(1e-9),
            wall: n as f64 / spent.wall.max(1e-9),
        }
    }
}

/// The verifier on tokens it has never seen against raw Ed25519
/// verification of the very same tokens, on one thread, interleaved.
pub struct FreshVsRaw {
    pub tokens: usize,
    /// `Verifier::verify` (each token once: every call a signature check).
    pub verifier: Rate,
    /// aws-lc-rs (the verifier's own backend), key parsed once as the verifier holds it.
    pub aws: Rate,
    /// ring, for comparison.
    pub ring: Rate,
}

/// One task on the verifier's runtime times, slice by slice, raw ring and
/// aws-lc-rs verification of the tokens' signatures, then the verifier on
/// the same tokens (none seen before).
pub async fn fresh_vs_raw(
    ds: &Handle,
    verifier: &Verifier,
    public_key: Vec<u8>,
    tokens: Vec<String>,
) -> anyhow::Result<FreshVsRaw> {
    let verifier = verifier.clone();
    ds.spawn(async move {
        let split = tokens
            .iter()
            .map(|t| {
                let (signed, signature) = t.rsplit_once('.')?;
                Some((signed.as_bytes(), URL_SAFE_NO_PAD.decode(signature).ok()?))
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| anyhow!("a token without a signature"))?;
        let aws = aws_lc_rs::signature::ParsedPublicKey::new(&aws_lc_rs::signature::ED25519, &public_key)
            .map_err(|e| anyhow!("aws-lc-rs refused the public key: {e}"))?;
        let ring = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &public_key);
        let (mut aws_spent, mut ring_spent, mut verifier_spent) =
            (Spent::default(), Spent::default(), Spent::default());
        for (texts, parts) in tokens.chunks(SLICE).zip(split.chunks(SLICE)) {
            let aws_ok = aws_spent.time(|| parts.iter().all(|(m, s)| aws.verify_sig(m, s).is_ok()));
            let ring_ok = ring_spent.time(|| parts.iter().all(|(m, s)| ring.verify(m, s).is_ok()));
            if !aws_ok || !ring_ok {
                bail!("raw Ed25519 refused an authd signature");
            }
            // A verify of a known kid never suspends, so the whole slice
            // runs on this thread and its CPU clock covers it.
            let (wall, cpu) = (Instant::now(), thread_cpu_ns());
            for token in texts {
                if let Err(why) = verifier.verify(token).await {
                    bail!("the verifier refused a new token: {why:?}");
                }
            }
            verifier_spent.cpu_ns += thread_cpu_ns().saturating_sub(cpu);
            verifier_spent.wall += wall.elapsed().as_secs_f64();
            // Between slices: the feed task may share this worker.
            tokio::task::yield_now().await;
        }
        let n = tokens.len();
        anyhow::Ok(FreshVsRaw {
            tokens: n,
            verifier: Rate::of(n, verifier_spent),
            aws: Rate::of(n, aws_spent),
            ring: Rate::of(n, ring_spent),
        })
    })
    .await?
}

struct CallsOut {
    hist: Histogram<u64>,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    exhausted: bool,
}

/// `c` tasks on the verifier's runtime call `Verifier::verify` for
/// `duration`: each token once (`fresh`, until the pool is used up) or the
/// tokens round and round (all seen before: cache hits). Each call is timed
/// from the end of the previous one, so one clock read per call.
pub async fn verifier_cell(
    ds: &Handle,
    verifier: &Verifier,
    tokens: Arc<Vec<String>>,
    fresh: bool,
    c: usize,
    duration: Duration,
) -> anyhow::Result<Cell> {
    let c = c.max(1);
    let barrier = Arc::new(Barrier::new(c + 1));
    let next = Arc::new(AtomicUsize::new(0));
    let max = MAX_CALLS_PER_CELL / c as u64;
    let batch = if fresh { 1 } else { SEEN_BATCH };
    let mut workers = Vec::with_capacity(c);
    for w in 0..c {
        let (verifier, tokens, barrier, next) = (verifier.clone(), tokens.clone(), barrier.clone(), next.clone());
        let mut out = CallsOut {
            hist: new_hist()?,
            ok: 0,
            errors: 0,
            first_error: None,
            exhausted: false,
        };
        workers.push(ds.spawn(async move {
            barrier.wait().await;
            let deadline = Instant::now() + duration;
            let n = tokens.len().max(1);
            let mut last = Instant::now();
            let mut i = 0u64;
            while i < max {
                if i % batch == 0 {
                    if last >= deadline {
                        break;
                    }
                    tokio::task::yield_now().await;
                    last = Instant::now();
                }
                let k = if fresh {
                    next.fetch_add(1, Ordering::Relaxed)
                } else {
                    (w + (i as usize).wrapping_mul(c)) % n
                };
                let Some(token) = tokens.get(k) else {
                    out.exhausted = true;
                    break;
                };
                let verdict = verifier.verify(token).await;
                let now = Instant::now();
                out.hist.saturating_record((now - last).as_nanos() as u64);
                last = now;
                match verdict {
                    Ok(_) => out.ok += 1,
                    Err(why) => {
                        out.errors += 1;
                        out.first_error.get_or_insert_with(|| format!("refused: {why:?}"));
                    }
                }
                i += 1;
            }
            out
        }));
    }
    barrier.wait().await;
    let cpu0 = CpuTicks::take();
    let started = Instant::now();
    let mut cell = Cell {
        op: if fresh { Op::Verifier } else { Op::VerifierCached },
        c,
        ok: 0,
        errors: 0,
        first_error: None,
        exhausted: false,
        elapsed: Duration::ZERO,
        hist: new_hist()?,
        cpu: CpuUse::default(),
    };
    for worker in workers {
        match worker.await {
            Ok(out) => {
                cell.hist.add(&out.hist).map_err(|e| anyhow!("histogram: {e}"))?;
                cell.ok += out.ok;
                cell.errors += out.errors;
                cell.exhausted |= out.exhausted;
                if cell.first_error.is_none() {
                    cell.first_error = out.first_error;
                }
            }
            Err(e) => {
                cell.errors += 1;
                cell.first_error.get_or_insert_with(|| format!("worker failed: {e}"));
            }
        }
    }
    cell.elapsed = started.elapsed();
    cell.cpu = CpuTicks::take().since(&cpu0);
    Ok(cell)
}

/// Revocation through authd's HTTP API → first refusal by the verifier.
pub struct Propagation {
    /// Revocations timed (after one untimed warm-up).
    pub revocations: usize,
    /// From the revoke's HTTP answer to the first refusal (0 when the
    /// verifier refused no later than the answer arrived), nanoseconds.
    pub delays: Histogram<u64>,
    /// Refusals that came no later than the revoke's answer.
    pub before_answer: usize,
    /// From sending the revoke to the first refusal, nanoseconds.
    pub from_request: Histogram<u64>,
    /// `POST /v1/logout` round trips as the client saw them.
    pub logout: Histogram<u64>,
    pub load_tasks: usize,
    /// Verifications per second the load tasks served meanwhile.
    pub load_rate: f64,
    pub load_errors: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub seconds: f64,
    pub cpu: CpuUse,
}

fn fail(out: &mut Propagation, why: String) {
    out.errors += 1;
    out.first_error.get_or_insert(why);
}

/// Polls `verify(token)` in a tight loop (one yield per call) from before
/// the revoke; says when it first sees the token accepted (`accepted`) and
/// returns when it was first refused as revoked.
async fn first_refusal(
    verifier: Verifier,
    token: String,
    accepted: tokio::sync::oneshot::Sender<()>,
) -> Result<Instant, String> {
    if let Err(why) = verifier.verify(&token).await {
        return Err(format!("a live session's token was refused before its revoke: {why:?}"));
    }
    let _ = accepted.send(());
    let bound = Instant::now() + PROPAGATION_BOUND + Duration::from_secs(5);
    loop {
        match verifier.verify(&token).await {
            Err(VerifyError::SessionRevoked) => return Ok(Instant::now()),
            Ok(_) => {}
            Err(why) => return Err(format!("refused as {why:?} instead of SessionRevoked")),
        }
        if Instant::now() > bound {
            return Err("still accepted long after its revoke".into());
        }
        tokio::task::yield_now().await;
    }
}

/// `load_tasks` tasks verify `live` tokens in a loop on the verifier's
/// runtime while each session of `victims` (an access token each; the
/// first is an untimed warm-up) is logged out with `POST /v1/logout`, one
/// after the other, each watched by a poller on the verifier's runtime.
pub async fn propagation(
    ds: &Handle,
    verifier: &Verifier,
    addr: SocketAddr,
    victims: Vec<String>,
    live: Arc<Vec<String>>,
    load_tasks: usize,
) -> anyhow::Result<Propagation> {
    if victims.len() < 2 || live.is_empty() {
        bail!("propagation needs at least two sessions to revoke and one live token");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let loaders: Vec<_> = (0..load_tasks)
        .map(|w| {
            let (verifier, live, stop, served, failed) = (
                verifier.clone(),
                live.clone(),
                stop.clone(),
                served.clone(),
                failed.clone(),
            );
            ds.spawn(async move {
                let mut i = w;
                while !stop.load(Ordering::Relaxed) {
                    let (mut ok, mut bad) = (0, 0);
                    for _ in 0..SEEN_BATCH {
                        let token = live.get(i % live.len()).map(String::as_str).unwrap_or("");
                        i = i.wrapping_add(load_tasks);
                        match verifier.verify(token).await {
                            Ok(_) => ok += 1,
                            Err(_) => bad += 1,
                        }
                    }
                    served.fetch_add(ok, Ordering::Relaxed);
                    failed.fetch_add(bad, Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let host = addr.to_string();
    let mut sender = connect(addr).await?;
    let mut out = Propagation {
        revocations: 0,
        delays: new_hist()?,
        before_answer: 0,
        from_request: new_hist()?,
        logout: new_hist()?,
        load_tasks,
        load_rate: 0.0,
        load_errors: 0,
        errors: 0,
        first_error: None,
        seconds: 0.0,
        cpu: CpuUse::default(),
    };
    let (mut cpu0, mut started, mut served0) = (CpuTicks::take(), Instant::now(), 0);
    for (i, token) in victims.iter().enumerate() {
        if i == 1 {
            // The warm-up is done: the stream is connected and everything is warm.
            (cpu0, started, served0) = (CpuTicks::take(), Instant::now(), served.load(Ordering::Relaxed));
        }
        let (accepted, accepted_rx) = tokio::sync::oneshot::channel();
        let poller = ds.spawn(first_refusal(verifier.clone(), token.clone(), accepted));
        if tokio::time::timeout(PROPAGATION_BOUND, accepted_rx).await.is_err() {
            // The poller says why (its token refused, or it never ran).
            let why = match tokio::time::timeout(Duration::from_secs(1), poller).await {
                Ok(Ok(Err(why))) => why,
                _ => "the poller did not start".into(),
            };
            fail(&mut out, why);
            continue;
        }
        let req = Request::builder()
            .method(Method::POST)
            .uri("/v1/logout")
            .header(HOST, host.as_str())
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .body(Full::new(Bytes::new()))?;
        let sent = Instant::now();
        let answer = tokio::time::timeout(PROPAGATION_BOUND, send(&mut sender, req)).await;
        let answered = Instant::now();
        match answer {
            Ok(Ok((status, _))) if status == StatusCode::NO_CONTENT => {}
            Ok(Ok((status, body))) => {
                let text = String::from_utf8_lossy(&body[..body.len().min(160)]).into_owned();
                fail(&mut out, format!("POST /v1/logout: {} {text}", status.as_u16()));
                poller.abort();
                continue;
            }
            Ok(Err(e)) => {
                fail(&mut out, format!("POST /v1/logout: transport: {e}"));
                poller.abort();
                sender = connect(addr).await?;
                continue;
            }
            Err(_) => {
                fail(
                    &mut out,
                    format!("POST /v1/logout: no answer within {PROPAGATION_BOUND:?}"),
                );
                poller.abort();
                sender = connect(addr).await?;
                continue;
            }
        }
        let refused = match poller.await {
            Ok(Ok(at)) => at,
            Ok(Err(why)) => {
                fail(&mut out, why);
                continue;
            }
            Err(e) => {
                fail(&mut out, format!("poller failed: {e}"));
                continue;
            }
        };
        let delay = refused.saturating_duration_since(answered);
        if delay > PROPAGATION_BOUND {
            fail(
                &mut out,
                format!("refused only {:.1} s after the revoke's answer", delay.as_secs_f64()),
            );
        }
        if i == 0 {
            continue;
        }
        if refused <= answered {
            out.before_answer += 1;
        }
        out.revocations += 1;
        out.delays.saturating_record((delay.as_nanos() as u64).max(1));
        out.from_request
            .saturating_record((refused.saturating_duration_since(sent).as_nanos() as u64).max(1));
        out.logout.saturating_record((answered - sent).as_nanos() as u64);
    }
    out.seconds = started.elapsed().as_secs_f64();
    out.cpu = CpuTicks::take().since(&cpu0);
    out.load_rate = served.load(Ordering::Relaxed).saturating_sub(served0) as f64 / out.seconds.max(1e-9);
    stop.store(true, Ordering::Relaxed);
    for loader in loaders {
        let _ = loader.await;
    }
    out.load_errors = failed.load(Ordering::Relaxed);
    Ok(out)
}
