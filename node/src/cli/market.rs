//! `archy market search|show|endorse|report`: browse the Nostr marketplace and give
//! an opinion on what is there.
//!
//! `search` and `show` sync from every given relay
//! (`archy_discovery::client::sync_market`), score every app against the operator's
//! key and follow list (`--me`), and print each result with its trust score, tier and
//! the reasons behind them. `endorse` and `report` sign and send one event.

use std::{process::ExitCode, time::Duration};

use archy_discovery::{
    announcement::{endorsement_builder, report_builder},
    client::{sync_market, RelayReport, SyncOptions, SyncResult},
    error_chain,
    market::{AppHandle, ScoredApp},
};
use nostr_sdk::prelude::*;

use super::app::publish::{send, SendArgs};
use clap::{Args, Subcommand};
use serde_json::json;

#[derive(Debug, Subcommand)]
pub enum MarketCommand {
    /// List marketplace apps matching every word (all apps without words), best first.
    Search {
        /// Words to look for in the app id, name, description and categories.
        words: Vec<String>,
        #[command(flatten)]
        sync: SyncArgs,
    },
    /// Show one app, given as PUBKEY/APP_ID (npub or hex key).
    Show {
        /// e.g. npub1.../org.example.notes
        app: AppHandle,
        #[command(flatten)]
        sync: SyncArgs,
    },
    /// Endorse an app (PUBKEY/APP_ID) with your key. Counts for operators who follow you.
    Endorse {
        app: AppHandle,
        #[command(flatten)]
        send: SendArgs,
    },
    /// Report an app (PUBKEY/APP_ID) with your key (NIP-56). Lowers its score and tier
    /// for operators who follow you.
    Report {
        app: AppHandle,
        /// What is wrong with it.
        #[arg(long, value_parser = ["malware", "spam", "impersonation", "illegal", "profanity", "nudity", "other"])]
        reason: String,
        /// Free text for humans.
        #[arg(long, default_value = "")]
        text: String,
        #[command(flatten)]
        send: SendArgs,
    },
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Relay to read from (repeat for several).
    #[arg(
        long = "relay",
        required = true,
        env = "ARCHY_RELAYS",
        value_delimiter = ','
    )]
    pub relays: Vec<String>,
    /// Your public key (npub or hex): the root of your web of trust.
    #[arg(long, env = "ARCHY_ME")]
    pub me: Option<String>,
    /// Seconds each relay may take per request.
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `fut` on a fresh multi-threaded runtime (the CLI is synchronous).
pub fn run(cmd: MarketCommand) -> anyhow::Result<ExitCode> {
    super::block_on(async move {
        match cmd {
            MarketCommand::Search { words, sync } => {
                let result = fetch(&sync).await?;
                let hits = result.view.search(&words);
                print_results(&result, &hits, sync.json);
                Ok(ExitCode::SUCCESS)
            }
            MarketCommand::Show { app, sync } => {
                let result = fetch(&sync).await?;
                match result.view.resolve(&app.developer, &app.app_id) {
                    Some(found) => {
                        print_results(&result, &[found], sync.json);
                        Ok(ExitCode::SUCCESS)
                    }
                    None => {
                        print_results(&result, &[], sync.json);
                        eprintln!("{app}: not found on any reachable relay");
                        Ok(ExitCode::FAILURE)
                    }
                }
            }
            MarketCommand::Endorse { app, send: args } => {
                let keys = super::key::load_keys(&args.key)?;
                let event =
                    endorsement_builder(&app.developer, &app.app_id).sign_with_keys(&keys)?;
                sign_off(&args, format!("endorse {app}"), event).await
            }
            MarketCommand::Report {
                app,
                reason,
                text,
                send: args,
            } => {
                let keys = super::key::load_keys(&args.key)?;
                let report: Report = reason
                    .parse()
                    .map_err(|_| anyhow::anyhow!("--reason {reason:?}: unknown report type"))?;
                let event = report_builder(&app.developer, &app.app_id, report, &text)
                    .sign_with_keys(&keys)?;
                sign_off(&args, format!("report {app} ({reason})"), event).await
            }
        }
    })
}

async fn sign_off(args: &SendArgs, label: String, event: Event) -> anyhow::Result<ExitCode> {
    let sent = send(args, &[(label, event)]).await?;
    if args.json {
        println!("{}", sent.to_json());
    } else {
        sent.print();
    }
    Ok(sent.exit_code())
}

pub(super) async fn fetch(args: &SyncArgs) -> anyhow::Result<SyncResult> {
    let operator = args
        .me
        .as_deref()
        .map(|s| super::key::parse_public_key(s, "--me"))
        .transpose()?;
    let result = sync_market(&SyncOptions {
        relays: args.relays.clone(),
        operator,
        timeout: Duration::from_secs(args.timeout),
    })
    .await?;
    if result.relays.iter().all(|r| !r.ok) {
        let errors: Vec<String> = result
            .relays
            .iter()
            .map(|r| format!("{}: {}", r.url, relay_problem(r)))
            .collect();
        anyhow::bail!("no relay answered:\n  {}", errors.join("\n  "));
    }
    Ok(result)
}

/// What went wrong with a relay, all causes on one line.
fn relay_problem(report: &RelayReport) -> String {
    report
        .error
        .as_ref()
        .map_or_else(|| "failed".to_string(), |e| error_chain(e))
}

fn print_results(result: &SyncResult, hits: &[&ScoredApp], as_json: bool) {
    let rejected: Vec<_> = result
        .view
        .rejections()
        .iter()
        .map(|r| {
            json!({"event_id": r.event_id.to_hex(), "author": r.author.to_hex(), "relay": r.relay, "reason": error_chain(&r.reason)})
        })
        .collect();
    if as_json {
        println!(
            "{}",
            json!({
                "apps": hits.iter().map(|a| a.to_json()).collect::<Vec<_>>(),
                "relays": result.relays,
                "rejected": rejected,
            })
        );
        return;
    }
    for a in hits {
        let l = &a.listing;
        let m = &l.current.content.manifest;
        println!(
            "{:>4}  {:<10}  {} {}  {}",
            a.trust.score,
            a.trust.tier.to_string(),
            m.name,
            m.version,
            a.handle()
        );
        println!("      {}", m.description.short);
        for r in &a.trust.reasons {
            println!("      {:>+4}  {}", r.points, r.text);
        }
        for w in &l.warnings {
            println!("      warning: {w}");
        }
    }
    if hits.is_empty() {
        println!("no apps found");
    }
    for r in result.relays.iter().filter(|r| !r.ok) {
        eprintln!("relay {}: {}", r.url, relay_problem(r));
    }
    if !rejected.is_empty() {
        eprintln!(
            "{} event(s) refused (see the warnings above, or use --json)",
            rejected.len()
        );
    }
}
