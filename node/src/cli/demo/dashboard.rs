//! The demo's dashboard step: node 1 serves the web dashboard; the step logs in with a
//! one-time link, as a browser would, and checks that every page renders with what the
//! demo did (the catalog and market apps, the installed apps, the node's swarm).

use std::time::Duration;

use anyhow::{bail, Context};

use super::{archy_json, path_str, Ctx};

/// Pages the step fetches and a text each must show.
const PAGES: [(&str, &str); 5] = [
    ("/", "Signed catalog"),
    ("/apps", "My apps"),
    ("/apps/org.example.hello", "Hello"),
    ("/store/catalog/org.example.status", "Install"),
    ("/node", "Swarm"),
];

/// A fresh one-time login link to node 1's dashboard.
pub(super) fn login_link(c: &Ctx) -> anyhow::Result<String> {
    let node = c.nodes.first().context("no node 1")?;
    let link = archy_json(&["node", "web-url", "--json", "--data", &path_str(&node.data)])?;
    link["url"]
        .as_str()
        .map(str::to_string)
        .context("web-url printed no url")
}

/// Logs in with a link and fetches each page: all must answer 200 with their text, the
/// Store must list the marketplace app, and a page without the session must not render.
pub(super) fn check_pages(c: &mut Ctx) -> anyhow::Result<String> {
    let url = login_link(c)?;
    let base = url
        .split("/login/")
        .next()
        .context("a login link ends in /login/once")?
        .to_string();
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .redirects(0)
        .build();
    let login = agent.get(&url).call().context("the login link")?;
    let cookie = login
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .context("the login link set no session cookie")?
        .to_string();
    match agent.get(&format!("{base}/apps")).call() {
        Ok(r) if r.status() == 303 => {}
        Err(e) => bail!("/apps without a session: {e}"),
        Ok(r) => bail!(
            "/apps without a session answered {} instead of a redirect to the login",
            r.status()
        ),
    }
    let mut weights = Vec::new();
    for (path, text) in PAGES {
        let page = agent
            .get(&format!("{base}{path}"))
            .set("cookie", &cookie)
            .call()
            .with_context(|| format!("GET {path}"))?
            .into_string()?;
        if !page.contains(text) {
            bail!("{path} does not show {text:?}");
        }
        weights.push(page.len());
    }
    // The dashboard synced the marketplace when node 1 started, before the developer
    // published: "Sync now" (a change, so with the page's CSRF token) brings the app in.
    // (By its id: the catalog has an app of the same name.)
    if let Some(app_id) = c.market_app.as_ref().and_then(|a| a["app_id"].as_str()) {
        let card = format!("data-app=\"{app_id}\"");
        let store = || -> anyhow::Result<String> {
            Ok(agent
                .get(&format!("{base}/"))
                .set("cookie", &cookie)
                .call()?
                .into_string()?)
        };
        let page = store()?;
        let csrf = page
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .context("the Store has no CSRF token")?
            .to_string();
        // Answered with a redirect back to the Store (not followed: redirects are off).
        let synced = agent
            .post(&format!("{base}/market/sync"))
            .set("cookie", &cookie)
            .send_form(&[("csrf", &csrf)]);
        match synced {
            Ok(r) if r.status() == 303 => {}
            Ok(r) => bail!("POST /market/sync answered {}", r.status()),
            Err(e) => bail!("POST /market/sync: {e}"),
        }
        let listed = archy_harness::poll_until(
            "the Store to list the marketplace app",
            Duration::from_secs(20),
            || store().ok().filter(|p| p.contains(&card)),
        );
        if listed.is_err() {
            bail!("the Store does not list the marketplace app {app_id} after a sync");
        }
    }
    Ok(format!(
        "{} pages render on {base} (largest {} KiB)",
        PAGES.len(),
        weights.iter().max().copied().unwrap_or(0).div_ceil(1024)
    ))
}
