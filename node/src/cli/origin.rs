//! `archy origin serve`: serve a signed publish dir to the swarm.

use std::process::ExitCode;

use archy_registry::origin::OriginArgs;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum OriginCommand {
    /// Serve a publish dir to the swarm (the same command as `archy-registry serve`):
    /// verify the signed documents, import every referenced image, serve until Ctrl-C
    /// or SIGTERM, and pick up a newer signed timestamp within 2 s. Prints
    /// `origin <endpoint id>@<ip:port> ...`; nodes take that address as `--origin`.
    Serve(OriginArgs),
}

pub fn origin(cmd: OriginCommand) -> anyhow::Result<ExitCode> {
    let OriginCommand::Serve(args) = cmd;
    super::block_on(async {
        args.serve_until_stopped().await?;
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
