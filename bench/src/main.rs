//! `authd-bench`: throughput, latency and memory of authd's hot paths over
//! loopback, each printed as a ratio to a limit of this machine measured in
//! the same run (issue 6).
//!
//! authd runs inside this process on a tokio runtime of its own (threads
//! named `authd-srv`, plus whatever threads authd starts itself, such as its
//! hashing threads), built from the production defaults, against the real
//! Postgres and Redis: a fresh database `authd_bench_<random>` and a unique
//! Redis key prefix, both removed at the end. Users and sessions are seeded
//! through authd's own library (its `testing` feature: the store contract and
//! the login's own session shape), never through SQL of its schema. The load
//! client (threads `bench-cli`) is a small hyper HTTP/1.1 client with one
//! keep-alive connection per concurrent worker; latencies go to HDR
//! histograms. Every loop is bounded in time and in count, and only loopback
//! addresses are ever contacted.
//!
//! ```sh
//! cargo run -p authd-bench -- --smoke                              # every path once, a few s; CI
//! cargo run --release -p authd-bench -- --quick                    # ~30 s
//! cargo run --release -p authd-bench                               # ~3 min
//! cargo run --release -p authd-bench -- --sessions 1000000         # full space run
//! cargo run --release -p authd-bench -- --ops verifier,verifier-cached,propagation --no-baselines
//!                                                                 # the downstream verifier (issue 11)
//! ```
//!
//! Modules: [`cli`] (arguments and the plan they give), [`world`] (the
//! scratch database, Redis prefix and directory), [`server`] (authd
//! in-process), [`seed`] (users, sessions, cache fill), [`load`] (the HTTP
//! load client and in-process verify cells), [`baselines`] (argon2, raw
//! Ed25519, redis-benchmark, pgbench), [`downstream`] (the `authd-verify`
//! verifier following this authd, on a runtime of its own, threads
//! `bench-ds`), [`cpu`] (where the CPU time went), [`phases`] (the order of
//! a run), [`report`] (the table and the targets).

// A load tool measures wall-clock time by design.
#![allow(clippy::disallowed_methods)]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::runtime::Handle;

// The allocator of the `authd` binary, so the in-process server is measured as it ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod baselines;
mod cli;
mod cpu;
mod downstream;
mod load;
mod phases;
mod report;
mod seed;
mod server;
mod world;

use cli::{Args, Plan};
use world::{progress, World};

/// authd's runtime threads; the CPU accounting tells them from the client's.
pub const SERVER_THREADS: &str = "authd-srv";
/// The load client's runtime threads.
pub const CLIENT_THREADS: &str = "bench-cli";
/// The downstream verifier's runtime threads (a service of its own).
pub const DOWNSTREAM_THREADS: &str = "bench-ds";

fn main() -> ExitCode {
    match start() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("authd-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn start() -> anyhow::Result<()> {
    let args = Args::parse();
    let plan = Plan::new(&args)?;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .thread_name(SERVER_THREADS)
        .enable_all()
        .build()?;
    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .thread_name(CLIENT_THREADS)
        .enable_all()
        .build()?;
    let downstream = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .thread_name(DOWNSTREAM_THREADS)
        .enable_all()
        .build()?;
    let handles = Runtimes {
        server: server.handle().clone(),
        downstream: downstream.handle().clone(),
    };
    let outcome = client.block_on(run(args, plan, cores, handles));
    downstream.shutdown_timeout(Duration::from_secs(2));
    server.shutdown_timeout(Duration::from_secs(2));
    client.shutdown_timeout(Duration::from_secs(2));
    outcome
}

/// The runtimes besides the client's (which runs the bench itself).
pub struct Runtimes {
    /// authd's.
    pub server: Handle,
    /// The downstream verifier's.
    pub downstream: Handle,
}

async fn run(args: Args, plan: Plan, cores: usize, runtimes: Runtimes) -> anyhow::Result<()> {
    world::STARTED.get_or_init(Instant::now);
    let world = World::create(&args).await?;
    let _ = cpu::BENCH_DB.set(world.db_name.clone());
    progress(&format!(
        "database {}, Redis prefix {}, scratch {}",
        world.db_name,
        world.redis_prefix,
        world.dir.display()
    ));
    let outcome = phases::bench(&plan, cores, &runtimes, &world).await;
    let failures = match &outcome {
        Ok(report) => report.failures(plan.smoke),
        Err(_) => 1,
    };
    let cleanup = world.destroy(failures > 0).await;
    let report = outcome?;
    cleanup?;
    print!("{}", report.render());
    if plan.smoke {
        if failures > 0 {
            anyhow::bail!("smoke run: {failures} failures (see the notes above)");
        }
        progress("smoke run: every path answered as it should");
    }
    Ok(())
}
