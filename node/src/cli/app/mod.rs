//! `archy app ...`: the developer's tools (validate, render, pack, publish, retract)
//! and the operator's app lifecycle (install ... logs), which talks to the daemon.

mod dev;
mod lifecycle;
pub(super) mod publish;
mod scaffold;

use std::{path::PathBuf, process::ExitCode};

use clap::Subcommand;

use super::node::DataArg;

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
    /// Start a new app: a folder with a manifest that validates, a root filesystem with
    /// a web page, a Containerfile and a README of the steps to publish it.
    Init(scaffold::InitArgs),
    /// Build an OCI image archive from a root filesystem directory (without podman), or
    /// take an image built with podman or docker as it is (--from).
    ///
    /// From a directory the archive is deterministic: the same directory gives the same
    /// bytes, and so the same BLAKE3 content hash.
    Pack {
        /// The directory that becomes the image's root filesystem.
        #[arg(required_unless_present = "from", conflicts_with = "from")]
        dir: Option<PathBuf>,
        /// An image built elsewhere: `podman:IMAGE` (podman save), `docker:IMAGE` (docker
        /// save), or the path of an oci-archive or docker-archive tar. Checked like any
        /// image a node loads, and written as it is.
        #[arg(long, value_name = "SOURCE")]
        from: Option<String>,
        /// Where to write the archive.
        #[arg(long)]
        out: PathBuf,
        /// The name `podman load` gives the image (`org.opencontainers.image.ref.name`;
        /// default: the --out file name without `.oci.tar`).
        #[arg(long, conflicts_with = "from")]
        name: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        /// The image's default command and its arguments, after `--`
        /// (`archy app pack rootfs --out a.tar -- /bin/busybox httpd -f -p 8080`).
        #[arg(last = true, value_name = "CMD", conflicts_with = "from")]
        cmd: Vec<String>,
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
        /// If another source (the catalog or another developer) has an app with this id
        /// installed, uninstall that one and install this with fresh data. The replaced
        /// app's data is kept; `archy app uninstall APP_ID --purge` removes it.
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        market: lifecycle::MarketChoice,
        #[command(flatten)]
        follow: lifecycle::FollowArgs,
    },
    /// Uninstall an app: its container goes; its data stays unless --purge.
    Uninstall {
        app_id: String,
        /// Also delete the app's data and secrets, and the data any app it replaced
        /// (same id, other source) left behind.
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
        data: DataArg,
    },
    /// List installed apps with their phase and version.
    List {
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
    },
    /// Show one app: phase, version, last error.
    Status {
        app_id: String,
        #[command(flatten)]
        data: DataArg,
        #[arg(long)]
        json: bool,
    },
    /// Show an app's recent log lines.
    Logs {
        app_id: String,
        #[command(flatten)]
        data: DataArg,
    },
}

/// Runs one `archy app` command.
pub fn run(cmd: AppCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AppCommand::Validate { file, json } => dev::validate(&file, json),
        AppCommand::Render { file, json } => dev::render(&file, json),
        AppCommand::Init(args) => scaffold::init(args),
        AppCommand::Pack {
            dir,
            from,
            out,
            name,
            cmd,
            json,
        } => match (dir, from) {
            (_, Some(from)) => dev::pack_from(&from, &out, json),
            (Some(dir), None) => dev::pack(&dir, &out, name, cmd, json),
            (None, None) => anyhow::bail!("give the root filesystem directory, or --from"),
        },
        AppCommand::Publish(args) => publish::run(args),
        AppCommand::Retract(args) => publish::retract(args),
        AppCommand::Install {
            app_id,
            version,
            replace,
            market,
            follow,
        } => lifecycle::install(&app_id, version, replace, &market, &follow),
        AppCommand::Uninstall {
            app_id,
            purge,
            follow,
        } => lifecycle::uninstall(&app_id, purge, &follow),
        AppCommand::Start { app_id, follow } => lifecycle::set_running(&app_id, "start", &follow),
        AppCommand::Stop { app_id, follow } => lifecycle::set_running(&app_id, "stop", &follow),
        AppCommand::Restart { app_id, data } => lifecycle::restart(&app_id, &data),
        AppCommand::List { data, json } => lifecycle::list(&data, json),
        AppCommand::Status { app_id, data, json } => lifecycle::status(&app_id, &data, json),
        AppCommand::Logs { app_id, data } => lifecycle::logs(&app_id, &data),
    }
}
