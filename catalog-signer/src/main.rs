//! `catalog-signer`: the catalog publisher's offline tool.
//!
//! It makes keys, writes and rotates the root of trust, builds a catalog from a
//! directory of manifests, writes the timestamp (head), adds signatures, and verifies
//! everything exactly as a node would. It links no network code (only `archy-catalog`),
//! so it can run on an air-gapped signing machine.
//!
//! Every command takes `--json` and then prints one JSON object on stdout instead of
//! text. Exit codes: 0 success, 1 verification or build failed (the one-line reason
//! names the attack or defect), 2 bad usage or unreadable input.
//!
//! One module per command (`keygen`, `root`, `sign`, `catalog`, `timestamp`, `verify`);
//! `report` is what a command hands back, `docfile` reads and writes document files.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod catalog;
mod docfile;
mod keygen;
mod report;
mod root;
mod sign;
mod timestamp;
mod verify;

/// Offline signing tool for Archy catalogs.
///
/// A typical first publication:
///
///   catalog-signer keygen --out keys/root1        (and root2, catalog, timestamp)
///   catalog-signer root init --root-key keys/root1.pub --root-key keys/root2.pub --root-threshold 2 \
///       --catalog-key keys/catalog.pub --catalog-threshold 1 --timestamp-key keys/timestamp.pub \
///       --expires 365d --out root.json
///   catalog-signer sign root.json --key keys/root1.key --key keys/root2.key
///   catalog-signer catalog build --apps apps/ --version 1 --expires 30d --out catalog.json
///   catalog-signer sign catalog.json --key keys/catalog.key
///   catalog-signer timestamp --catalog catalog.json --version 1 --expires 1d --out timestamp.json
///   catalog-signer sign timestamp.json --key keys/timestamp.key
///   catalog-signer verify --root root.json --catalog catalog.json --timestamp timestamp.json
///
/// Validities (--expires) are durations such as 12h, 30d, 2w, 365d or "1h 30m".
#[derive(Debug, Parser)]
#[command(name = "catalog-signer", version, verbatim_doc_comment)]
struct Cli {
    /// Print one JSON object on stdout (what was written or verified) instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate an ed25519 key pair: NAME.key (mode 0600) and NAME.pub. Prints the key id.
    Keygen(keygen::KeygenArgs),
    /// Write (`init`) or rotate (`rotate`) the root of trust.
    #[command(subcommand)]
    Root(root::RootCommand),
    /// Add signatures to a root, catalog or timestamp file, in place.
    ///
    /// The signature covers the exact bytes of the document's `signed` value; signing
    /// again with the same key replaces that key's signature. A document that expires
    /// within a day gets a warning on stderr.
    Sign(sign::SignArgs),
    /// Build catalogs.
    #[command(subcommand)]
    Catalog(catalog::CatalogCommand),
    /// Write an unsigned timestamp (the head) that pins a catalog file's hash, size and version.
    Timestamp(timestamp::TimestampArgs),
    /// Verify documents exactly as a node does.
    ///
    /// Exits 0 when everything verifies; otherwise prints one line naming the attack or
    /// defect (bad signature, below threshold, expired, rollback, hash mismatch, document
    /// too large, unknown key) and exits 1.
    Verify(verify::VerifyArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let report = match cli.command {
        Command::Keygen(args) => keygen::run(args),
        Command::Root(cmd) => root::run(cmd),
        Command::Sign(args) => sign::run(args),
        Command::Catalog(cmd) => catalog::run(cmd),
        Command::Timestamp(args) => timestamp::run(args),
        Command::Verify(args) => verify::run(args),
    };
    match report {
        Ok(report) => report.print(cli.json),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
