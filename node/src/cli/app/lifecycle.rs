//! `archy app install|uninstall|start|stop|restart|list|status|logs`: the operator's
//! app commands. They talk to the daemon over its local API and follow its progress
//! events until the app is where it was asked to be.

use std::{
    process::ExitCode,
    time::{Duration, Instant},
};

use crate::cli::progress::{shares, ByteProgress};

use anyhow::Context;
use archy_discovery::market::AppHandle;
use archy_node::{
    app_identity::{self, AppOwner},
    client::ApiClient,
    config::NodeConfig,
    executor::{ProgressEvent, Stage},
};
use clap::Args;
use serde_json::json;

use crate::cli::node::DataArg;

#[derive(Debug, Clone, Args)]
pub struct FollowArgs {
    #[command(flatten)]
    pub data: DataArg,
    /// Print the event stream as JSON lines instead of a progress display.
    #[arg(long)]
    pub json: bool,
    /// Give up waiting after this many seconds (the daemon carries on).
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
}

/// Whether the daemon's state reflects an accepted request: the app's observed
/// generation has reached the accepted one, or (uninstall, no generation) it is gone.
fn settled(api: &ApiClient, app_id: &str, accepted: &serde_json::Value) -> bool {
    let state = api.get_json(&format!("/v1/apps/{app_id}"));
    match accepted
        .get("generation")
        .and_then(serde_json::Value::as_u64)
    {
        Some(g) => state
            .ok()
            .and_then(|v| v["observed_generation"].as_u64())
            .is_some_and(|o| o >= g),
        None => state.is_err(),
    }
}

/// Sends a request, then follows the app's events until a terminal one.
fn follow(
    args: &FollowArgs,
    app_id: &str,
    path: &str,
    body: serde_json::Value,
) -> anyhow::Result<ExitCode> {
    let api = ApiClient::from_data_dir(&args.data.data)?;
    let events = api.events()?; // subscribe first: no event can be missed
    let accepted = api.post(path, body)?;
    if !args.json {
        eprintln!("{app_id}: accepted ({accepted})");
        if let Some(kept) = accepted["replaced"]["kept_data"].as_str() {
            eprintln!("{app_id}: replaces the app from {}; its data stays at {kept} (`archy app uninstall {app_id} --purge` removes it)", accepted["replaced"]["owner"]);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let mut display = StageDisplay::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let e: ProgressEvent = events.recv_timeout(left).with_context(|| {
            format!(
                "no result within {} s; see `archy app status {app_id}`",
                args.timeout
            )
        })?;
        if e.app_id != app_id {
            continue;
        }
        if args.json {
            println!("{}", serde_json::to_string(&e)?);
        } else {
            display.show(&e);
        }
        match e.stage {
            // A pass already under way when the request arrived also ends in `done`;
            // only a pass that has seen the request settles it.
            Stage::Done if settled(&api, app_id, &accepted) => return Ok(ExitCode::SUCCESS),
            Stage::Failed => {
                if !args.json {
                    eprintln!("{app_id}: failed: {}", e.message);
                }
                return Ok(ExitCode::FAILURE);
            }
            _ => {}
        }
    }
}

/// The human progress display: one line per stage, and during `fetch` the shared byte
/// progress display (bytes, rate, ETA).
struct StageDisplay {
    fetch: Option<ByteProgress>,
}

impl StageDisplay {
    fn new() -> Self {
        Self { fetch: None }
    }

    fn show(&mut self, e: &ProgressEvent) {
        let stage = e.stage.as_str();
        if e.stage == Stage::Fetch && e.bytes_total > 0 {
            self.fetch
                .get_or_insert_with(|| ByteProgress::new(stage, e.bytes_total))
                .update(
                    e.bytes_done,
                    e.bytes_total,
                    &shares(e.sources.iter().map(|(n, b)| (n.clone(), b))),
                );
            return;
        }
        if let Some(mut bar) = self.fetch.take() {
            bar.finish();
        }
        let bytes = if e.bytes_total > 0 {
            format!(" {}/{} bytes", e.bytes_done, e.bytes_total)
        } else {
            String::new()
        };
        eprintln!("  {stage:<8}{bytes} {}", e.message);
    }
}

/// How a marketplace app is chosen: where to look, whose trust counts, what to accept.
#[derive(Debug, Clone, Args)]
pub struct MarketChoice {
    /// Relay to resolve PUBKEY/APP_ID on (repeat; default: `relays` in config.toml).
    #[arg(long = "relay")]
    pub relays: Vec<String>,
    /// Your public key, the root of your web of trust (default: `me` in config.toml).
    #[arg(long)]
    pub me: Option<String>,
    /// Install even if the app's trust tier is "unverified".
    #[arg(long)]
    pub allow_unverified: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

pub fn install(
    id: &str,
    version: Option<String>,
    replace: bool,
    market: &MarketChoice,
    args: &FollowArgs,
) -> anyhow::Result<ExitCode> {
    if id.contains('/') {
        return install_from_market(&id.parse()?, version, replace, market, args);
    }
    follow(
        args,
        id,
        &format!("/v1/apps/{id}/install"),
        json!({"version": version, "replace": replace}),
    )
}

/// Who holds `app_id` on this node now, if it is installed from another owner.
fn held_by_other(api: &ApiClient, app_id: &str, owner: &AppOwner) -> Option<AppOwner> {
    let app = api.get_json(&format!("/v1/apps/{app_id}")).ok()?;
    let holder = AppOwner::from_dir_name(app["desired"]["owner"].as_str()?);
    (holder != *owner).then_some(holder)
}

/// `archy app install PUBKEY/APP_ID`: resolve on the marketplace, show the trust score,
/// refuse "unverified" unless allowed, confirm, then hand the announcement to the daemon
/// (which validates the manifest again and verifies the image by its hash).
fn install_from_market(
    handle: &AppHandle,
    version: Option<String>,
    replace: bool,
    choice: &MarketChoice,
    args: &FollowArgs,
) -> anyhow::Result<ExitCode> {
    let cfg = NodeConfig::load(&args.data.data)?;
    let relays = if choice.relays.is_empty() {
        cfg.relays.clone()
    } else {
        choice.relays.clone()
    };
    anyhow::ensure!(
        !relays.is_empty(),
        "no relays: pass --relay URL or set `relays` in config.toml"
    );
    let sync = crate::cli::market::SyncArgs {
        relays,
        me: choice.me.clone().or(cfg.me.clone()),
        timeout: 10,
        json: false,
    };
    let app_id = &handle.app_id;
    let result = crate::cli::block_on(crate::cli::market::fetch(&sync))?;
    let app = result
        .view
        .resolve(&handle.developer, app_id)
        .with_context(|| format!("{handle}: not found on any reachable relay"))?;
    let release = app
        .release(version.as_deref())
        .with_context(|| format!("{handle}: no such release"))?;
    let tier = app.trust.tier;
    eprintln!(
        "{app_id} {} ({}): trust score {}, tier {tier:?}",
        release.manifest.version,
        app.handle(),
        app.trust.score
    );
    for r in &app.trust.reasons {
        eprintln!("  {:>+4}  {}", r.points, r.text);
    }
    // Collisions with other developers' apps, shown before anything is decided.
    for w in &app.listing.warnings {
        eprintln!("  warning: {w}");
    }
    if tier == archy_discovery::trust::Tier::Unverified && !choice.allow_unverified {
        anyhow::bail!("{handle} is unverified: nobody you trust vouches for it; pass --allow-unverified to install it anyway");
    }
    // The daemon refuses an id another source holds; say so before asking.
    let owner = AppOwner::from(handle);
    let api = ApiClient::from_data_dir(&args.data.data)?;
    if let Some(holder) = held_by_other(&api, app_id, &owner) {
        app_identity::claim(app_id, Some(&holder), &owner, replace)?;
        eprintln!("  warning: replaces {app_id} from {holder}: that app goes (its data is kept) and this one starts with fresh data");
    }
    if !choice.yes {
        use std::io::IsTerminal;
        anyhow::ensure!(
            std::io::stdin().is_terminal(),
            "confirmation needed: pass --yes to install without asking"
        );
        eprint!("install it? [y/N] ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("not installed");
            return Ok(ExitCode::FAILURE);
        }
    }
    let body = json!({"market": {"handle": app.handle(), "manifest": release.manifest, "image": release.image, "providers": release.providers}, "replace": replace});
    follow(args, app_id, &format!("/v1/apps/{app_id}/install"), body)
}

pub fn uninstall(id: &str, purge: bool, args: &FollowArgs) -> anyhow::Result<ExitCode> {
    follow(
        args,
        id,
        &format!("/v1/apps/{id}/uninstall"),
        json!({"purge": purge}),
    )
}

pub fn set_running(id: &str, action: &str, args: &FollowArgs) -> anyhow::Result<ExitCode> {
    follow(args, id, &format!("/v1/apps/{id}/{action}"), json!({}))
}

pub fn restart(id: &str, data: &DataArg) -> anyhow::Result<ExitCode> {
    let v =
        ApiClient::from_data_dir(&data.data)?.post(&format!("/v1/apps/{id}/restart"), json!({}))?;
    println!("{v}");
    Ok(ExitCode::SUCCESS)
}

pub fn list(data: &DataArg, json: bool) -> anyhow::Result<ExitCode> {
    let v = ApiClient::from_data_dir(&data.data)?.get_json("/v1/apps")?;
    if json {
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    let apps = v.as_array().cloned().unwrap_or_default();
    if apps.is_empty() {
        println!("no apps installed");
    }
    for a in apps {
        println!(
            "{:<32} {:<12} {:<10} {}",
            a["id"].as_str().unwrap_or("?"),
            a["phase"].as_str().unwrap_or("?"),
            a["version"].as_str().unwrap_or("-"),
            a["last_error"].as_str().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn status(id: &str, data: &DataArg, json: bool) -> anyhow::Result<ExitCode> {
    let v = ApiClient::from_data_dir(&data.data)?.get_json(&format!("/v1/apps/{id}"))?;
    if json {
        println!("{v}");
    } else {
        println!(
            "{id}: {} (version {})",
            v["phase"].as_str().unwrap_or("?"),
            v["version"].as_str().unwrap_or("-")
        );
        if let Some(e) = v["last_error"].as_str() {
            println!("  last error: {e}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn logs(id: &str, data: &DataArg) -> anyhow::Result<ExitCode> {
    print!(
        "{}",
        ApiClient::from_data_dir(&data.data)?.get_text(&format!("/v1/apps/{id}/logs"))?
    );
    Ok(ExitCode::SUCCESS)
}
