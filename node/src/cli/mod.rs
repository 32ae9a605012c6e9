//! Command-line definitions and dispatch for `archy`.

mod demo;
mod dev;
mod key;
mod lifecycle;
mod market;
mod publish;
mod relay;
mod swarm;

use std::{path::PathBuf, process::ExitCode};

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
    Node(lifecycle::NodeCommand),
    /// The origin: serve a signed publish dir to the swarm.
    #[command(subcommand)]
    Origin(lifecycle::OriginCommand),
    /// Apps: validate, render and pack manifests and images; publish and retract them on
    /// the Nostr marketplace (developer tools).
    #[command(subcommand)]
    App(AppCommand),
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
    Fetch(swarm::FetchArgs),
    /// Serve and announce every blob a data dir's store holds, until Ctrl-C.
    Seed(swarm::SeedArgs),
    /// Internal: the process runtime's in-namespace helpers (started by the node).
    #[command(hide = true)]
    ProcessHelper {
        #[arg(value_parser = ["supervise", "exec", "userns"])]
        role: String,
        app_dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Check a manifest against the schema and the security policy.
    ///
    /// Prints every problem with its field path, the bad value and what is allowed.
    /// Exits 0 when the manifest is valid, 1 otherwise.
    Validate {
        /// The manifest file (YAML or JSON, root key `app`).
        file: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the normalised manifest (every default filled in) and the runtime
    /// configuration it becomes.
    Render {
        /// The manifest file (YAML or JSON, root key `app`).
        file: PathBuf,
        /// Print JSON instead of YAML.
        #[arg(long)]
        json: bool,
    },
    /// Build an OCI image archive from a root filesystem directory, without podman.
    ///
    /// The archive is deterministic: the same directory gives the same bytes, and so
    /// the same BLAKE3 content hash.
    Pack {
        /// The directory that becomes the image's root filesystem.
        dir: PathBuf,
        /// Where to write the `oci-archive` tar.
        #[arg(long)]
        out: PathBuf,
        /// Default command of the image (repeat for each argument).
        #[arg(long = "cmd", num_args = 1..)]
        cmd: Vec<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Announce an app release on the Nostr marketplace: validate, hash and inspect
    /// the image, sign, publish to every relay, report per relay.
    Publish(publish::PublishArgs),
    /// Withdraw an app from the Nostr marketplace: delete (NIP-09) its app and release
    /// announcements on every relay.
    Retract(publish::RetractArgs),
    /// Install an app: APP_ID from the signed catalog, or PUBKEY/APP_ID from the Nostr
    /// marketplace (shown with its trust score; "unverified" apps need
    /// --allow-unverified). The node verifies, fetches, runs and health-checks it;
    /// progress is shown until it is healthy or has failed.
    Install {
        app_id: String,
        /// Install this version instead of the latest.
        #[arg(long)]
        version: Option<String>,
        #[command(flatten)]
        market: lifecycle::MarketChoice,
        #[command(flatten)]
        follow: lifecycle::FollowArgs,
    },
    /// Uninstall an app: its container goes; its data stays unless --purge.
    Uninstall {
        app_id: String,
        /// Also delete the app's data and secrets.
        #[arg(long)]
        purge: bool,
        #[command(flatten)]
        follow: lifecycle::FollowArgs,
    },
    /// Start a stopped app.
    Start {
        app_id: String,
        #[command(flatten)]
        follow: lifecycle::FollowArgs,
    },
    /// Stop an app (it stays installed and stopped across restarts).
    Stop {
        app_id: String,
        #[command(flatten)]
        follow: lifecycle::FollowArgs,
    },
    /// Restart an app's container.
    Restart {
        app_id: String,
        #[command(flatten)]
        data: lifecycle::DataArg,
    },
    /// List installed apps with their phase and version.
    List {
        #[command(flatten)]
        data: lifecycle::DataArg,
        #[arg(long)]
        json: bool,
    },
    /// Show one app: phase, version, last error.
    Status {
        app_id: String,
        #[command(flatten)]
        data: lifecycle::DataArg,
        #[arg(long)]
        json: bool,
    },
    /// Show an app's recent log lines.
    Logs {
        app_id: String,
        #[command(flatten)]
        data: lifecycle::DataArg,
    },
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
        Command::App(cmd) => match cmd {
            AppCommand::Validate { file, json } => dev::validate(&file, json),
            AppCommand::Render { file, json } => dev::render(&file, json),
            AppCommand::Pack {
                dir,
                out,
                cmd,
                json,
            } => dev::pack(&dir, &out, cmd, json),
            AppCommand::Publish(args) => publish::run(args),
            AppCommand::Retract(args) => publish::retract(args),
            AppCommand::Install {
                app_id,
                version,
                market,
                follow,
            } => lifecycle::install(&app_id, version, &market, &follow),
            AppCommand::Uninstall {
                app_id,
                purge,
                follow,
            } => lifecycle::uninstall(&app_id, purge, &follow),
            AppCommand::Start { app_id, follow } => {
                lifecycle::set_running(&app_id, "start", &follow)
            }
            AppCommand::Stop { app_id, follow } => lifecycle::set_running(&app_id, "stop", &follow),
            AppCommand::Restart { app_id, data } => lifecycle::restart(&app_id, &data),
            AppCommand::List { data, json } => lifecycle::list(&data, json),
            AppCommand::Status { app_id, data, json } => lifecycle::status(&app_id, &data, json),
            AppCommand::Logs { app_id, data } => lifecycle::logs(&app_id, &data),
        },
        Command::Node(cmd) => lifecycle::node(cmd),
        Command::Origin(cmd) => lifecycle::origin(cmd),
        Command::Key(cmd) => key::run(cmd),
        Command::Relay(cmd) => relay::run(cmd),
        Command::Market(cmd) => market::run(cmd),
        Command::Fetch(args) => swarm::fetch(args),
        Command::Seed(args) => swarm::seed(args),
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
