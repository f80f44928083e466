//! The order of a run: authd up, the machine idle, seeding, the burst,
//! argon2, space, the load cells (with the downstream verifier's rows),
//! signatures, the machine's limits.

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail};
use authd::session::testing::SeededSession;
use authd::session::SessionService;
use sqlx::postgres::PgPoolOptions;
use tokio::runtime::Handle;

use crate::baselines::{argon2_hash_times, baselines, crypto_rates};
use crate::cli::{Op, Plan};
use crate::cpu::{proc_status_kib, CpuTicks};
use crate::downstream::{connect_verifier, fresh_vs_raw, propagation, public_key_of, verifier_cell};
use crate::load::{http_cell, login_burst, mint_pool, verify_cell, Load, MAX_NEW_TOKENS, NEW_TOKENS_PER_SEC};
use crate::report::{fmt_delay, fmt_ns, fmt_rate, median, Report};
use crate::seed::{argon2_phc, fill_cache, login_email, refresh_storage, seed_sessions, seed_users, store_sessions};
use crate::server::{start_app, Running};
use crate::world::{progress, World};
use crate::Runtimes;

pub async fn bench(plan: &Plan, cores: usize, runtimes: &Runtimes, world: &World) -> anyhow::Result<Report> {
    let (running, basic) = start_app(&runtimes.server, world).await?;
    progress(&format!("authd listening on {} (in-process)", running.addr));
    let outcome = phases(plan, cores, runtimes, world, &running, basic).await;
    running.stop().await;
    outcome
}

async fn phases(
    plan: &Plan,
    cores: usize,
    runtimes: &Runtimes,
    world: &World,
    running: &Running,
    basic: String,
) -> anyhow::Result<Report> {
    let server: &Handle = &runtimes.server;
    let ds: &Handle = &runtimes.downstream;
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&world.db_url)
        .await?;
    let mut report = Report::new(plan, cores, world, &running.config);
    // How busy the machine is before any load (authd idle).
    let idle0 = CpuTicks::take();
    tokio::time::sleep(plan.idle_probe).await;
    let idle = CpuTicks::take().since(&idle0);
    let busiest = idle
        .top_other
        .as_ref()
        .map(|(comm, pct)| format!(" (busiest: `{comm}` {pct:.0} %)"))
        .unwrap_or_default();
    let quiet = format!(
        "machine before the load ({:.1} s, authd idle): other processes {:.0} %{busiest}, Postgres {:.0} %, Redis {:.0} %, idle {:.0} % of {cores} cores",
        plan.idle_probe.as_secs_f64(),
        idle.other,
        idle.postgres,
        idle.redis,
        idle.idle
    );
    progress(&quiet);
    report.header.push(quiet);

    // Users for the login rows, all with one password hash at the configured parameters.
    let params = running.config.argon2.params().map_err(anyhow::Error::msg)?;
    let phc = {
        let params = params.clone();
        tokio::task::spawn_blocking(move || argon2_phc(params)).await??
    };
    let emails = (0..plan.login_users).map(login_email).collect();
    seed_users(server, &running.sessions, emails, &phc).await?;
    let load = Arc::new(Load {
        addr: running.addr,
        host: running.addr.to_string(),
        basic,
        login_users: plan.login_users,
        access: Vec::new(),
        chains: Vec::new(),
        revoke_pool: Vec::new(),
        revoke_next: AtomicUsize::new(0),
        login_next: AtomicUsize::new(0),
    });

    // Memory under simultaneous logins.
    progress(&format!("{} simultaneous logins (peak RSS)…", plan.burst_logins));
    report.burst = Some(login_burst(&load, plan.burst_logins).await?);

    // argon2id at the configured parameters: one hash on one core (after the
    // burst, so the timing buffers are not in its peak RSS), and on all cores at once.
    let reps = plan.argon2_reps;
    let times = tokio::task::spawn_blocking(move || argon2_hash_times(params, reps, cores)).await??;
    report.argon2_ms = median(&times.warm) * 1e3;
    report.argon2_cold_ms = median(&times.cold) * 1e3;
    report.argon2_parallel_rate = times.parallel_rate;
    progress(&format!(
        "argon2id one hash: {:.1} ms (median of {reps}, memory reused; {:.1} ms with a fresh allocation) → login limit \
         {cores} cores ÷ t = {:.1}/s; {cores} threads at once: {:.1} hashes/s",
        report.argon2_ms,
        report.argon2_cold_ms,
        cores as f64 / (report.argon2_ms / 1e3),
        times.parallel_rate
    ));

    // Space per stored session, Postgres then Redis.
    if plan.sessions > 0 {
        progress(&format!("storing {} sessions through authd's store…", plan.sessions));
        let (space, bulk) = store_sessions(server, &running.sessions, &pool, plan.sessions, &phc).await?;
        report.space = Some(space);
        progress(&format!("caching {} sessions through authd's cache…", plan.sessions));
        let mut redis = world.redis.clone();
        report.cache = Some(fill_cache(server, &running.sessions, &mut redis, &world.redis_prefix, bulk).await?);
        report.rss_after_fill_kib = proc_status_kib("VmRSS");
    }

    // Sessions and tokens the load rows use.
    let max_c = plan.concurrency.iter().copied().max().unwrap_or(1);
    progress("seeding the sessions the load uses…");
    let sessions = &running.sessions;
    let access_set = seed_sessions(
        server,
        sessions,
        "access",
        plan.access_users,
        plan.sessions_per_access_user,
        &phc,
    )
    .await?;
    let chains = seed_sessions(server, sessions, "refresh", max_c, 1, &phc).await?;
    // Storage per session after one refresh and after 1,000 (invariant 9).
    let (samples, refreshes) = if plan.smoke { (2, 10) } else { (10, 1000) };
    progress(&format!(
        "refreshing {samples} sessions {refreshes} times each (storage per session)…"
    ));
    let sample = seed_sessions(server, sessions, "storage", samples, 1, &phc).await?;
    report.refresh_storage = Some(refresh_storage(server, sessions, &pool, sample, refreshes).await?);
    let revoke_pool = if plan.ops.contains(&Op::Revoke) {
        seed_sessions(server, sessions, "revoke", plan.revoke_pool.div_ceil(10), 10, &phc).await?
    } else {
        Vec::new()
    };
    // One session per revocation of the propagation row, plus its warm-up.
    let victims = if plan.ops.contains(&Op::Propagation) {
        seed_sessions(server, sessions, "propagation", plan.revocations + 1, 1, &phc).await?
    } else {
        Vec::new()
    };
    let access = access_tokens(sessions, &access_set)?;
    let load = Arc::new(Load {
        access,
        chains: chains.into_iter().map(|s| Mutex::new(s.refresh_token)).collect(),
        revoke_pool: revoke_pool.into_iter().map(|s| s.refresh_token).collect(),
        revoke_next: AtomicUsize::new(0),
        login_next: AtomicUsize::new(0),
        addr: load.addr,
        host: load.host.clone(),
        basic: load.basic.clone(),
        login_users: load.login_users,
    });
    sqlx::query("ANALYZE").execute(&pool).await?;
    // Warm: one bearer check per access token puts every session in the cache.
    let warm = http_cell(
        &load,
        Op::Me,
        32.min(load.access.len()),
        Duration::from_secs(20),
        Some(load.access.len() as u64),
    )
    .await?;
    if warm.errors > 0 {
        bail!("warm-up failed: {}", warm.first_error.unwrap_or_default());
    }

    // The downstream verifier, following this authd as a service would.
    let downstream = [Op::Verifier, Op::VerifierCached, Op::Propagation];
    let verifier = if plan.ops.iter().any(|op| downstream.contains(op)) {
        let verifier = connect_verifier(ds, running).await?;
        progress(&format!(
            "verifier connected: {} key(s), {} revoked session(s) in its snapshot",
            verifier.known_keys(),
            verifier.revoked_sessions()
        ));
        Some(verifier)
    } else {
        None
    };

    // The cells.
    let tokens = Arc::new(load.access.clone());
    for &op in &plan.ops {
        if let (Some(verifier), Op::Verifier) = (&verifier, op) {
            // Raw Ed25519 of the very tokens the verifier checks, interleaved on one thread.
            let fresh = mint_pool(&running.sessions, &access_set, plan.fresh_vs_raw_tokens, cores).await?;
            let key = public_key_of(running.addr, fresh.first().map(String::as_str).unwrap_or("")).await?;
            let k = fresh_vs_raw(ds, verifier, key, fresh).await?;
            progress(&format!(
                "verifier, new tokens, 1 thread, per CPU second: {}/s; raw Ed25519 of the same {} tokens: aws-lc-rs {}/s ({:.1} %), \
                 ring {}/s ({:.1} %); by the wall clock {:.1} % of aws-lc-rs",
                fmt_rate(k.verifier.cpu),
                k.tokens,
                fmt_rate(k.aws.cpu),
                k.verifier.cpu / k.aws.cpu * 100.0,
                fmt_rate(k.ring.cpu),
                k.verifier.cpu / k.ring.cpu * 100.0,
                k.verifier.wall / k.aws.wall * 100.0
            ));
            report.verifier_raw = Some(k);
        }
        if let (Some(verifier), Op::Propagation) = (&verifier, op) {
            let victims = access_tokens(sessions, &victims)?;
            progress(&format!(
                "revoking {} sessions one by one while {} tasks keep the verifier busy…",
                plan.revocations, plan.propagation_load_tasks
            ));
            let p = propagation(
                ds,
                verifier,
                running.addr,
                victims,
                tokens.clone(),
                plan.propagation_load_tasks,
            )
            .await?;
            progress(&format!(
                "revoke → verifier refusal: {} revocations, from the answer p50 {} p99 {} max {}; errors {}{}",
                p.revocations,
                fmt_delay(p.delays.value_at_quantile(0.5)),
                fmt_delay(p.delays.value_at_quantile(0.99)),
                fmt_delay(p.delays.max()),
                p.errors,
                p.first_error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default()
            ));
            report.propagation = Some(p);
            continue;
        }
        for &c in &plan.concurrency {
            let cell = if let (Some(verifier), Op::Verifier) = (&verifier, op) {
                // Tokens the verifier has never seen, enough for the cell (as for `verify`).
                let want = (plan.cell.as_secs_f64() * NEW_TOKENS_PER_SEC * c.min(cores) as f64) as usize;
                let fresh = mint_pool(&running.sessions, &access_set, want.clamp(1000, MAX_NEW_TOKENS), cores).await?;
                verifier_cell(ds, verifier, Arc::new(fresh), true, c, plan.cell).await?
            } else if let (Some(verifier), Op::VerifierCached) = (&verifier, op) {
                verifier_cell(ds, verifier, tokens.clone(), false, c, plan.cell).await?
            } else if op == Op::Verify {
                // Tokens never verified before, enough for the cell (it stops early, and says so, if they run out).
                let want = (plan.cell.as_secs_f64() * NEW_TOKENS_PER_SEC * c.min(cores) as f64) as usize;
                let fresh = mint_pool(&running.sessions, &access_set, want.clamp(1000, MAX_NEW_TOKENS), cores).await?;
                verify_cell(server, &running.sessions, Arc::new(fresh), true, c, plan.cell).await?
            } else if op == Op::VerifyCached {
                verify_cell(server, &running.sessions, tokens.clone(), false, c, plan.cell).await?
            } else {
                http_cell(&load, op, c, plan.cell, None).await?
            };
            progress(&format!(
                "{:<22} c={c:<3} {:>9}/s  p50 {:>8}  p90 {:>8}  p99 {:>8}  errors {}{}",
                op.label(),
                fmt_rate(cell.rate()),
                fmt_ns(cell.hist.value_at_quantile(0.5)),
                fmt_ns(cell.hist.value_at_quantile(0.9)),
                fmt_ns(cell.hist.value_at_quantile(0.99)),
                cell.errors,
                cell.first_error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ));
            report.cells.push(cell);
        }
    }
    report.rss_end_kib = proc_status_kib("VmRSS");
    report.hwm_end_kib = proc_status_kib("VmHWM");

    // Signatures: authd's JWT path against raw Ed25519.
    progress("JWT sign/verify vs raw Ed25519…");
    let sessions = running.sessions.clone();
    let owner = access_set
        .first()
        .cloned()
        .ok_or_else(|| anyhow!("no seeded session"))?;
    let budget = plan.crypto;
    report.crypto = Some(tokio::task::spawn_blocking(move || crypto_rates(&sessions, &owner, budget)).await??);

    // The machine's own limits.
    if plan.baselines {
        baselines(plan, world, &pool, &mut report).await;
    }
    pool.close().await;
    Ok(report)
}

/// A new access token for each seeded session, as a login would sign it.
fn access_tokens(sessions: &SessionService, seeded: &[SeededSession]) -> anyhow::Result<Vec<String>> {
    seeded
        .iter()
        .map(|s| {
            sessions
                .seed_access_token(&s.record)
                .map_err(|e| anyhow!("signing an access token: {e}"))
        })
        .collect()
}
