//! Command-line definitions and dispatch for `archy`.

mod app;
mod demo;
mod fetch;
mod join;
mod key;
mod market;
mod node;
mod origin;
mod progress;
mod relay;
mod seed;

use std::{future::Future, path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Archy: a peer-to-peer app registry and distribution network for self-hosted nodes.
#[derive(Debug, Parser)]
#[command(name = "archy", version, about, long_about = None)]
pub struct Cli {
    /// More log output (repeat for more); `RUST_LOG` overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole system on this machine: publisher, origin, relay, three nodes and a
    /// container runtime, with no configuration and no network.
    Demo(demo::DemoArgs),
    /// The node daemon: run it, or ask it how it is.
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// The origin: serve a signed publish dir to the swarm.
    #[command(subcommand)]
    Origin(origin::OriginCommand),
    /// Apps: validate, render and pack manifests and images; publish and retract them on
    /// the Nostr marketplace (developer tools).
    #[command(subcommand)]
    App(app::AppCommand),
    /// Nostr keys for developers and operators.
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Run an embedded Nostr relay.
    #[command(subcommand)]
    Relay(relay::RelayCommand),
    /// Browse the Nostr marketplace with trust scores; endorse or report apps.
    #[command(subcommand)]
    Market(market::MarketCommand),
    /// Fetch one blob from the origin and peers at once, verifying every byte
    /// (progress with bytes, rate and each provider's share; --json for scripts).
    Fetch(fetch::FetchArgs),
    /// Serve and announce every blob a data dir's store holds, until Ctrl-C.
    Seed(seed::SeedArgs),
    /// Internal: the process runtime's in-namespace helpers (started by the node).
    #[command(hide = true)]
    ProcessHelper {
        #[arg(value_parser = ["supervise", "exec", "userns"])]
        role: String,
        app_dir: PathBuf,
    },
}

/// Runs a command's async part on the CLI's one kind of runtime (multi-threaded, with
/// every driver).
pub fn block_on<T>(fut: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(fut)
}

/// Sets up logging: `RUST_LOG` if set, else warnings (info with -v, debug with -vv).
pub fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::App(cmd) => app::run(cmd),
        Command::Node(cmd) => node::node(cmd),
        Command::Origin(cmd) => origin::origin(cmd),
        Command::Key(cmd) => key::run(cmd),
        Command::Relay(cmd) => relay::run(cmd),
        Command::Market(cmd) => market::run(cmd),
        Command::Fetch(args) => fetch::fetch(args),
        Command::Seed(args) => seed::seed(args),
        Command::ProcessHelper { role, app_dir } => {
            use archy_node::runtime::process::sandbox;
            let role = match role.as_str() {
                "supervise" => sandbox::Role::Supervise,
                "userns" => sandbox::Role::UserNs,
                _ => sandbox::Role::Exec,
            };
            Ok(sandbox::main(role, &app_dir))
        }
    }
}
