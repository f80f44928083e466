//! The command line: `authd [serve|migrate|keys …|cleanup]`. Every option
//! also reads its environment variable.

use clap::{CommandFactory, Parser, Subcommand};

use crate::app::{self, Application};
use crate::auth::keys::{self, KeySet, KeyStatus};
use crate::config::{KeysCommandConfig, ServeConfig, StoreConfig};

#[derive(Parser, Debug)]
#[command(name = "authd", version, about = "Sessions and tokens done right")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the HTTP API (the default).
    Serve(Box<ServeConfig>),
    /// Apply database migrations and exit.
    Migrate(StoreConfig),
    /// Manage signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Run one pass of expiry cleanup and exit.
    Cleanup(Box<ServeConfig>),
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create the first signing key (refuses when keys exist; use rotate).
    Generate(KeysCommandConfig),
    /// Add a new signing key; older keys stay published until their tokens expire.
    Rotate(KeysCommandConfig),
    /// List keys and their status.
    List(KeysCommandConfig),
}

impl Cli {
    /// `authd` with no subcommand means `authd serve`. A bad value stops
    /// with one message naming the environment variable it came from.
    pub fn parse_with_default() -> Cli {
        let mut args: Vec<String> = std::env::args().collect();
        if args.len() == 1 {
            args.push("serve".into());
        }
        match Cli::try_parse_from(&args) {
            Ok(cli) => cli,
            Err(e) => {
                if let Some(var) = env_var_of(&e, &args) {
                    eprintln!(
                        "authd: invalid {var}: {}",
                        e.to_string().lines().next().unwrap_or_default()
                    );
                    std::process::exit(2);
                }
                e.exit()
            }
        }
    }
}

/// The environment variable behind the argument a parse error is about.
fn env_var_of(error: &clap::Error, args: &[String]) -> Option<String> {
    use clap::error::{ContextKind, ContextValue};
    let ContextValue::String(invalid) = error.get(ContextKind::InvalidArg)? else {
        return None;
    };
    let long = invalid.split_whitespace().next()?.trim_start_matches("--");
    let root = Cli::command();
    let sub = root.find_subcommand(args.get(1)?)?;
    let mut commands = vec![sub];
    while let Some(command) = commands.pop() {
        if let Some(arg) = command.get_arguments().find(|a| a.get_long() == Some(long)) {
            return arg.get_env().map(|v| v.to_string_lossy().into_owned());
        }
        commands.extend(command.get_subcommands());
    }
    None
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let Some(command) = cli.command else {
        anyhow::bail!("no command given; try `authd serve`");
    };
    match command {
        Command::Serve(config) => {
            let app = Application::build(*config, app::system_clock()).await?;
            app.run_until_stopped(app::shutdown_signal()).await
        }
        Command::Migrate(config) => {
            let store = app::open_store(&config).await?;
            store.migrate().await?;
            println!("migrations applied to {}", store.describe());
            Ok(())
        }
        Command::Cleanup(config) => {
            config.validate().map_err(anyhow::Error::msg)?;
            let store = app::open_store(&config.store).await?;
            if config.migrate_on_start {
                store.migrate().await?;
            }
            let now = app::system_clock().now();
            let cleaned =
                crate::session::cleanup::clean(store.as_ref(), now, config.cleanup_retention, config.events.retention)
                    .await?;
            println!(
                "deleted {} ended sessions and {} old session events",
                cleaned.sessions, cleaned.events
            );
            let cutoff = now - time::Duration::seconds(config.audit_retention.as_secs() as i64);
            let deleted = crate::session::cleanup::delete_old_audit(store.as_ref(), cutoff).await?;
            println!("deleted {deleted} audit events past retention");
            Ok(())
        }
        Command::Keys(KeysCommand::Generate(KeysCommandConfig { keys: config, timing })) => {
            timing.validate().map_err(anyhow::Error::msg)?;
            let existing = KeySet::load_or_empty(&config.keys_dir, app::key_timing(&config, &timing))?;
            if !existing.is_empty() {
                anyhow::bail!(
                    "{} already holds {} key(s); use `authd keys rotate` to add a new signing key",
                    config.keys_dir.display(),
                    existing.len()
                );
            }
            let kid = keys::generate(&config.keys_dir, config.alg, app::system_clock().now())?;
            println!("generated {kid} ({}) in {}", config.alg, config.keys_dir.display());
            Ok(())
        }
        Command::Keys(KeysCommand::Rotate(KeysCommandConfig { keys: config, timing })) => {
            timing.validate().map_err(anyhow::Error::msg)?;
            let now = app::system_clock().now();
            let kid = keys::generate(&config.keys_dir, config.alg, now)?;
            let set = KeySet::load(&config.keys_dir, app::key_timing(&config, &timing))?;
            let index = set.iter().position(|k| k.kid == kid).unwrap_or(0);
            match set.status(index, now) {
                KeyStatus::Published { signs_from } => println!(
                    "{kid} ({}) is published now and signs from {} (running processes pick it up within AUTHD_KEY_RELOAD_INTERVAL, or at once on SIGHUP)",
                    config.alg,
                    signs_from.format(&time::format_description::well_known::Rfc3339)?
                ),
                _ => println!("{kid} ({}) now signs new tokens", config.alg),
            }
            for line in keys::describe(&set, now) {
                println!("{line}");
            }
            Ok(())
        }
        Command::Keys(KeysCommand::List(KeysCommandConfig { keys: config, timing })) => {
            timing.validate().map_err(anyhow::Error::msg)?;
            let set = KeySet::load_or_empty(&config.keys_dir, app::key_timing(&config, &timing))?;
            if set.is_empty() {
                println!("no keys in {}", config.keys_dir.display());
            }
            for line in keys::describe(&set, app::system_clock().now()) {
                println!("{line}");
            }
            Ok(())
        }
    }
}
