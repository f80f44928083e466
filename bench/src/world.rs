//! The scratch world of a run: a fresh database, a Redis key prefix and a
//! directory, always torn down; and the endpoints, loopback only.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use ring::rand::{SecureRandom, SystemRandom};
use sqlx::Connection;

use crate::cli::Args;

pub struct Endpoint {
    pub user: Option<String>,
    pub password: Option<String>,
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    pub fn parse(url: &str, default_port: u16, what: &str) -> anyhow::Result<Endpoint> {
        let (_, rest) = url
            .split_once("://")
            .ok_or_else(|| anyhow!("{what}: `{url}` is not a URL"))?;
        let (userinfo, hostpart) = match rest.rfind('@') {
            Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
            None => (None, rest),
        };
        let hostport = hostpart.split(['/', '?']).next().unwrap_or("");
        let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
            let (h, p) = bracketed
                .split_once(']')
                .ok_or_else(|| anyhow!("{what}: bad host in `{url}`"))?;
            (h.to_string(), p.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        let port = match port {
            Some(p) if !p.is_empty() => p.parse().with_context(|| format!("{what}: bad port in `{url}`"))?,
            _ => default_port,
        };
        let (user, password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((a, b)) => (Some(a.to_string()), Some(b.to_string())),
                None => (Some(u.to_string()), None),
            },
            None => (None, None),
        };
        let endpoint = Endpoint {
            user: user.filter(|u| !u.is_empty()),
            password: password.filter(|p| !p.is_empty()),
            host,
            port,
        };
        let loopback = endpoint.host == "localhost" || endpoint.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            bail!(
                "{what}: the benchmark only talks to loopback addresses, not `{}`",
                endpoint.host
            );
        }
        Ok(endpoint)
    }
}

fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let root = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{db}?{q}"),
        None => format!("{root}/{db}"),
    }
}

/// The database, Redis prefix, keys and log of one run.
pub struct World {
    admin_url: String,
    pub db_name: String,
    pub db_url: String,
    pub redis: redis::aio::MultiplexedConnection,
    pub redis_prefix: String,
    pub dir: PathBuf,
    pub log_path: PathBuf,
    pub pg: Endpoint,
    pub rd: Endpoint,
    pub pg_version: String,
    pub redis_version: String,
}

impl World {
    pub async fn create(args: &Args) -> anyhow::Result<World> {
        let pg = Endpoint::parse(&args.database_url, 5432, "--database-url")?;
        let rd = Endpoint::parse(&args.redis_url, 6379, "--redis-url")?;
        let unique = random_hex(6)?;
        let mut admin = sqlx::PgConnection::connect(&args.database_url)
            .await
            .with_context(|| format!("Postgres at {}:{} is required", pg.host, pg.port))?;
        let pg_version: String = sqlx::query_scalar("SELECT current_setting('server_version')")
            .fetch_one(&mut admin)
            .await?;
        let client = redis::Client::open(args.redis_url.as_str())?;
        let mut redis = client
            .get_multiplexed_async_connection()
            .await
            .with_context(|| format!("Redis at {}:{} is required", rd.host, rd.port))?;
        let info: String = redis::cmd("INFO").arg("server").query_async(&mut redis).await?;
        let redis_version = info_field(&info, "redis_version").unwrap_or_else(|| "?".into());

        let db_name = format!("authd_bench_{unique}");
        sqlx::query(&format!("CREATE DATABASE {db_name}"))
            .execute(&mut admin)
            .await?;
        let _ = admin.close().await;
        let dir = std::env::temp_dir().join(format!("authd-bench-{unique}"));
        std::fs::create_dir_all(dir.join("keys"))?;
        Ok(World {
            admin_url: args.database_url.clone(),
            db_url: with_database(&args.database_url, &db_name),
            db_name,
            redis,
            redis_prefix: format!("authd-bench:{unique}:"),
            log_path: dir.join("authd.log"),
            dir,
            pg,
            rd,
            pg_version,
            redis_version,
        })
    }

    pub async fn destroy(mut self, keep_log: bool) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        match sqlx::PgConnection::connect(&self.admin_url).await {
            Ok(mut admin) => {
                match sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db_name))
                    .execute(&mut admin)
                    .await
                {
                    Ok(_) => progress(&format!("dropped database {}", self.db_name)),
                    Err(e) => problems.push(format!("drop database {}: {e}", self.db_name)),
                }
                let _ = admin.close().await;
            }
            Err(e) => problems.push(format!("connect to drop {}: {e}", self.db_name)),
        }
        match delete_redis_keys(&mut self.redis, &self.redis_prefix).await {
            Ok(n) => progress(&format!("deleted {n} Redis keys {}*", self.redis_prefix)),
            Err(e) => problems.push(format!("delete Redis keys {}*: {e}", self.redis_prefix)),
        }
        if keep_log {
            let _ = std::fs::remove_dir_all(self.dir.join("keys"));
            eprintln!("authd's log of this run is kept at {}", self.log_path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            bail!("cleanup incomplete: {}", problems.join("; "))
        }
    }
}

async fn delete_redis_keys(conn: &mut redis::aio::MultiplexedConnection, prefix: &str) -> anyhow::Result<u64> {
    let pattern = format!("{prefix}*");
    let mut cursor = "0".to_string();
    let mut deleted = 0u64;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (next, keys): (String, Vec<String>) = redis::cmd("SCAN")
            .arg(&cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(5000)
            .query_async(conn)
            .await?;
        if !keys.is_empty() {
            let n: u64 = redis::cmd("UNLINK").arg(&keys).query_async(conn).await?;
            deleted += n;
        }
        if next == "0" {
            return Ok(deleted);
        }
        if Instant::now() > deadline {
            bail!("gave up after 180 s ({deleted} deleted)");
        }
        cursor = next;
    }
}

pub fn info_field(info: &str, name: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
        .map(|v| v.trim().to_string())
}

pub fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut buf = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| anyhow!("system random generator failed"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

pub static STARTED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

pub fn progress(msg: &str) {
    let t = STARTED.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("[{t:6.1}s] {msg}");
}
