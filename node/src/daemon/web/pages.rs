//! The dashboard's HTML, as maud templates over plain view structs: the handlers in
//! [`super`] gather the data, these functions only lay it out. Every page reads without
//! JavaScript; `live.js` adds progress and log updates where a page has a place for them.

use maud::{html, Markup, DOCTYPE};

/// A page's frame: title, navigation, the logout form.
pub fn layout(title: &str, nav: Option<(&str, &str)>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Archy" }
                link rel="stylesheet" href="/assets/style.css";
                script src="/assets/live.js" defer {}
            }
            body {
                header {
                    a.brand href="/" { "Archy" }
                    @if let Some((current, csrf)) = nav {
                        nav {
                            @for (href, label) in [("/", "Store"), ("/apps", "My apps"), ("/node", "Node")] {
                                a href=(href) aria-current=[(current == label).then_some("page")] { (label) }
                            }
                            form.inline method="post" action="/logout" {
                                input type="hidden" name="csrf" value=(csrf);
                                button.link type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A message page: a refusal, a confirmation that something happened.
pub fn message(title: &str, nav: Option<(&str, &str)>, text: &str, back: &str) -> Markup {
    layout(
        title,
        nav,
        html! {
            h1 { (title) }
            p.notice { (text) }
            p { a href=(back) { "Back" } }
        },
    )
}

pub fn login(problem: Option<&str>, password_set: bool) -> Markup {
    layout(
        "Log in",
        None,
        html! {
            h1 { "Log in to this node" }
            @if let Some(p) = problem { p.error role="alert" { (p) } }
            @if password_set {
                form.card method="post" action="/login" {
                    label for="password" { "Password" }
                    input #password type="password" name="password" autocomplete="current-password" required autofocus;
                    button type="submit" { "Log in" }
                }
            } @else {
                p.notice { "No dashboard password is set on this node. Set one with "
                    code { "archy node web-password --data DIR" }
                    ", or open a one-time login link from "
                    code { "archy node web-url --data DIR" } "." }
            }
        },
    )
}

/// One app of the signed catalog, as a Store card shows it.
pub struct CatalogCard {
    pub id: String,
    pub name: String,
    pub version: String,
    pub description: String,
    pub category: Option<String>,
    pub image_size: u64,
    pub releases: usize,
    pub installed: Option<String>,
}

/// One marketplace app, as a Store card shows it.
pub struct MarketCard {
    pub handle: String,
    pub developer: String,
    pub app_id: String,
    pub name: String,
    pub version: String,
    pub description: String,
    pub categories: Vec<String>,
    pub tier: String,
    pub score: i32,
    pub reasons: Vec<(i32, String)>,
    pub warnings: Vec<String>,
    pub reports: usize,
    pub releases: Vec<String>,
    pub image_size: u64,
    pub installed: Option<String>,
}

impl MarketCard {
    pub fn detail_href(&self) -> String {
        format!("/store/market/{}/{}", self.developer, self.app_id)
    }
}

/// What the relays said in the last sync.
pub struct MarketStatus {
    pub configured: Vec<String>,
    /// (relay, answered, events, problem)
    pub relays: Vec<(String, bool, usize, Option<String>)>,
    pub synced_ago: Option<u64>,
    pub syncing: bool,
    pub error: Option<String>,
    pub total: usize,
}

pub struct StoreQuery<'a> {
    pub q: &'a str,
    pub category: &'a str,
    pub categories: &'a [String],
    pub page: usize,
    pub pages: usize,
}

pub fn store(
    csrf: &str,
    query: &StoreQuery<'_>,
    catalog: &[CatalogCard],
    catalog_note: Option<&str>,
    market: &[MarketCard],
    status: &MarketStatus,
) -> Markup {
    layout(
        "Store",
        Some(("Store", csrf)),
        html! {
            h1 { "Store" }
            form.search role="search" method="get" action="/" {
                input type="search" name="q" value=(query.q) placeholder="Search apps" aria-label="Search apps";
                select name="category" aria-label="Category" {
                    option value="" { "All categories" }
                    @for c in query.categories {
                        option value=(c) selected[c == query.category] { (c) }
                    }
                }
                button type="submit" { "Search" }
            }
            div.columns {
                section #catalog {
                    h2 { "Signed catalog" }
                    @if let Some(note) = catalog_note { p.notice { (note) } }
                    @if catalog.is_empty() && catalog_note.is_none() { p.muted { "No catalog app matches" @if query.page > 1 { " on this page" } "." } }
                    div.cards {
                        @for c in catalog { (catalog_card(csrf, c)) }
                    }
                }
                section #market {
                    h2 { "Marketplace" }
                    (market_status(csrf, status))
                    @if market.is_empty() && !status.configured.is_empty() { p.muted { "No marketplace app matches" @if query.page > 1 { " on this page" } "." } }
                    div.cards {
                        @for m in market { (market_card(m)) }
                    }
                }
            }
            @if query.pages > 1 {
                nav.pages aria-label="Store pages" {
                    @if query.page > 1 {
                        a rel="prev" href=(page_href(query, query.page - 1)) { "Previous" }
                    }
                    span { "Page " (query.page) " of " (query.pages) }
                    @if query.page < query.pages {
                        a rel="next" href=(page_href(query, query.page + 1)) { "Next" }
                    }
                }
            }
        },
    )
}

fn page_href(query: &StoreQuery<'_>, page: usize) -> String {
    format!(
        "/?q={}&category={}&page={page}",
        encode(query.q),
        encode(query.category)
    )
}

/// Percent-encodes a query value.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn market_status(csrf: &str, s: &MarketStatus) -> Markup {
    html! {
        @if s.configured.is_empty() {
            p.notice { "No marketplace relays are configured (" code { "relays" } " in config.toml)." }
        } @else {
            div.relays {
                @if let Some(ago) = s.synced_ago {
                    span { (s.total) " app" @if s.total != 1 { "s" } ", synced " (ago_text(ago)) ". " }
                } @else if s.syncing {
                    span { "Syncing with the relays…" }
                }
                @for (url, ok, events, problem) in &s.relays {
                    span.relay.ok[*ok].failed[!*ok] title=[problem.as_deref()] {
                        (url) ": " @if *ok { "answered (" (events) " events)" } @else { "did not answer" }
                    }
                }
                @if let Some(e) = &s.error { span.error { "Last sync failed: " (e) } }
                form.inline method="post" action="/market/sync" {
                    input type="hidden" name="csrf" value=(csrf);
                    button.link type="submit" { "Sync now" }
                }
            }
        }
    }
}

pub fn ago_text(seconds: u64) -> String {
    match seconds {
        0..=59 => format!("{seconds} s ago"),
        60..=3599 => format!("{} min ago", seconds / 60),
        3600..=172_799 => format!("{} h ago", seconds / 3600),
        _ => format!("{} days ago", seconds / 86_400),
    }
}

pub fn size_text(bytes: u64) -> String {
    const MIB: f64 = (1 << 20) as f64;
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / MIB)
    } else {
        format!("{:.0} KiB", (bytes as f64 / 1024.0).ceil())
    }
}

fn catalog_card(csrf: &str, c: &CatalogCard) -> Markup {
    html! {
        article.card data-app=(c.id) {
            h3 { a href={"/store/catalog/" (c.id)} { (c.name) } " " span.version { (c.version) } }
            p.badges { span.badge.catalog { "signed catalog" } @if let Some(cat) = &c.category { span.badge { (cat) } } }
            p { (c.description) }
            p.meta { code { (c.id) } " · image " (size_text(c.image_size)) " · " (c.releases) " release" @if c.releases != 1 { "s" } }
            @if let Some(v) = &c.installed {
                p { a href={"/apps/" (c.id)} { "Installed (" (v) ")" } }
            } @else {
                form method="post" action={"/apps/" (c.id) "/install"} {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="source" value="catalog";
                    button type="submit" { "Install" }
                }
            }
        }
    }
}

fn tier_badge(tier: &str, score: i32) -> Markup {
    html! { span class={"badge tier " (tier)} { (tier) " · score " (score) } }
}

fn market_card(m: &MarketCard) -> Markup {
    html! {
        article.card data-app=(m.app_id) {
            h3 { a href=(m.detail_href()) { (m.name) } " " span.version { (m.version) } }
            p.badges { span.badge.market { "marketplace" } (tier_badge(&m.tier, m.score)) @for c in &m.categories { span.badge { (c) } } }
            p { (m.description) }
            p.meta.handle { code { (short_npub(&m.developer)) "/" (m.app_id) } " · image " (size_text(m.image_size)) " · " (m.releases.len()) " release" @if m.releases.len() != 1 { "s" } }
            @for w in &m.warnings { p.warning { "⚠ " (w) } }
            @if m.reports > 0 { p.warning { "⚠ reported " (m.reports) " time" @if m.reports != 1 { "s" } } }
            details {
                summary { "Why this score" }
                ul.reasons { @for (points, text) in &m.reasons { li { span.points { (format!("{points:+}")) } " " (text) } } }
            }
            @if let Some(v) = &m.installed {
                p { a href={"/apps/" (m.app_id)} { "Installed (" (v) ")" } }
            } @else {
                p { a.button href=(m.detail_href()) { "Details and install" } }
            }
        }
    }
}

/// `npub1abcd…wxyz`.
pub fn short_npub(npub: &str) -> String {
    if npub.len() <= 20 {
        return npub.to_string();
    }
    format!("{}…{}", &npub[..10], &npub[npub.len() - 6..])
}

/// One release a version picker offers.
pub struct ReleaseOption {
    pub version: String,
    pub image_size: u64,
}

pub fn catalog_app(
    csrf: &str,
    c: &CatalogCard,
    long: Option<&str>,
    releases: &[ReleaseOption],
) -> Markup {
    layout(
        &c.name,
        Some(("Store", csrf)),
        html! {
            h1 { (c.name) " " span.version { (c.version) } }
            p.badges { span.badge.catalog { "signed catalog" } @if let Some(cat) = &c.category { span.badge { (cat) } } }
            p { (c.description) }
            @if let Some(l) = long { p.long { (l) } }
            p.meta { code { (c.id) } " · from the catalog the publisher signed; every byte is checked against its BLAKE3 hash" }
            @if let Some(v) = &c.installed { p { a href={"/apps/" (c.id)} { "Installed (" (v) ")" } } }
            (install_form(csrf, &c.id, "catalog", None, releases, false))
        },
    )
}

fn install_form(
    csrf: &str,
    id: &str,
    source: &str,
    handle: Option<&str>,
    releases: &[ReleaseOption],
    confirm: bool,
) -> Markup {
    html! {
        form.card.install method="post" action={"/apps/" (id) "/install"} {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="source" value=(source);
            @if let Some(h) = handle { input type="hidden" name="handle" value=(h); }
            label for="version" { "Version" }
            select #version name="version" {
                @for (i, r) in releases.iter().enumerate() {
                    option value=(r.version) selected[i == 0] { (r.version) " (" (size_text(r.image_size)) ")" }
                }
            }
            @if confirm {
                label.confirm {
                    input type="checkbox" name="confirm" value="yes" required;
                    " I understand this app is unverified and want to install it anyway"
                }
            }
            button type="submit" { "Install" }
        }
    }
}

pub fn market_app(
    csrf: &str,
    m: &MarketCard,
    long: Option<&str>,
    releases: &[ReleaseOption],
    relays: &[String],
    endorsers: usize,
    problem: Option<&str>,
) -> Markup {
    let unverified = m.tier == "unverified";
    layout(
        &m.name,
        Some(("Store", csrf)),
        html! {
            h1 { (m.name) " " span.version { (m.version) } }
            p.badges { span.badge.market { "marketplace" } (tier_badge(&m.tier, m.score)) @for c in &m.categories { span.badge { (c) } } }
            @if let Some(p) = problem { p.error role="alert" { (p) } }
            p { (m.description) }
            @if let Some(l) = long { p.long { (l) } }
            p.meta.handle { "Developer " code { (m.handle) } }
            p.meta { "Carried by " (relays.join(", ")) "; endorsed by " (endorsers) " key" @if endorsers != 1 { "s" } }
            @for w in &m.warnings { p.warning { "⚠ " (w) } }
            @if m.reports > 0 { p.warning { "⚠ reported " (m.reports) " time" @if m.reports != 1 { "s" } } }
            h2 { "Trust: " (m.tier) ", score " (m.score) }
            ul.reasons { @for (points, text) in &m.reasons { li { span.points { (format!("{points:+}")) } " " (text) } } }
            @if let Some(v) = &m.installed { p { a href={"/apps/" (m.app_id)} { "Installed (" (v) ")" } } }
            @if unverified {
                p.warning.confirm-text {
                    "This app is unverified: nobody you trust vouches for it. It runs confined, but you are trusting its developer with what you give it."
                }
            }
            (install_form(csrf, &m.app_id, "market", Some(&m.handle), releases, unverified))
        },
    )
}

/// One installed app, as My apps and its own page show it.
pub struct InstalledApp {
    pub id: String,
    pub name: String,
    /// `signed catalog` or the marketplace handle.
    pub source: String,
    pub market_handle: Option<String>,
    pub phase: String,
    pub version: Option<String>,
    pub wants_running: bool,
    pub update: Option<String>,
    pub held_back: Option<(String, String)>,
    pub last_error: Option<String>,
    /// The app's web ports, as links (shown while it runs).
    pub links: Vec<String>,
}

impl InstalledApp {
    fn running(&self) -> bool {
        self.phase == "running"
    }
}

pub fn my_apps(csrf: &str, apps: &[InstalledApp]) -> Markup {
    layout(
        "My apps",
        Some(("My apps", csrf)),
        html! {
            h1 { "My apps" }
            @if apps.is_empty() { p.muted { "No apps installed yet. " a href="/" { "Open the Store" } } }
            div.cards {
                @for a in apps {
                    article.card data-app=(a.id) {
                        h3 { a href={"/apps/" (a.id)} { (a.name) } " " span.version { (a.version.as_deref().unwrap_or("-")) } }
                        p.badges { span class={"badge phase " (a.phase)} { (a.phase) } span.badge { (a.source) } }
                        @if let Some(u) = &a.update { p.notice { "Update available: " (u) } }
                        @if let Some((v, why)) = &a.held_back { p.warning { "Held back: " (v) " (" (why) ")" } }
                        @if let Some(e) = &a.last_error { p.error { (e) } }
                        @if a.running() { @for l in &a.links { p { a href=(l) rel="noreferrer" target="_blank" { "Open " (l) } } } }
                        (actions(csrf, a))
                    }
                }
            }
        },
    )
}

/// An app's buttons, one form (one CSRF token) for all: each button posts to its own
/// action; Uninstall leads to its confirmation page.
fn actions(csrf: &str, a: &InstalledApp) -> Markup {
    let to = |verb: &str| format!("/apps/{}/{verb}", a.id);
    html! {
        @if a.phase != "uninstalling" {
            form.actions method="post" action=(to("install")) {
                input type="hidden" name="csrf" value=(csrf);
                @if a.wants_running {
                    button type="submit" formaction=(to("stop")) { "Stop" }
                    button type="submit" formaction=(to("restart")) { "Restart" }
                } @else {
                    button type="submit" formaction=(to("start")) { "Start" }
                }
                @if let Some(v) = &a.update {
                    @if let Some(h) = &a.market_handle {
                        input type="hidden" name="source" value="market";
                        input type="hidden" name="handle" value=(h);
                    } @else {
                        input type="hidden" name="source" value="catalog";
                    }
                    input type="hidden" name="version" value=(v);
                    button type="submit" { "Update to " (v) }
                }
                a.button.danger href=(to("uninstall")) { "Uninstall" }
            }
        }
    }
}

pub fn app_page(csrf: &str, a: &InstalledApp, logs: &str) -> Markup {
    layout(
        &a.name,
        Some(("My apps", csrf)),
        html! {
            h1 { (a.name) " " span.version { (a.version.as_deref().unwrap_or("-")) } }
            p.badges { span #phase class={"badge phase " (a.phase)} { (a.phase) } span.badge { (a.source) } }
            @if a.running() { @for l in &a.links { p { a.open href=(l) rel="noreferrer" target="_blank" { "Open " (l) } } } }
            section #progress data-app=(a.id) data-link=[a.links.first()] aria-live="polite" {
                ol.trail {}
                p.stage { "Progress appears here while the node works on this app." }
                progress max="1" value="0" hidden {}
                p.bytes {}
                ul.sources {}
            }
            @if let Some(u) = &a.update { p.notice { "Update available: " (u) } }
            @if let Some((v, why)) = &a.held_back { p.warning { "Held back: " (v) ": " (why) } }
            @if let Some(e) = &a.last_error { p.error #last-error { (e) } }
            (actions(csrf, a))
            h2 { "Log" }
            pre #logs data-app=(a.id) { (logs) }
        },
    )
}

pub fn uninstall(csrf: &str, id: &str, purge: bool) -> Markup {
    layout(
        "Uninstall",
        Some(("My apps", csrf)),
        html! {
            @if purge {
                h1 { "Delete " (id) " and its data?" }
                p.warning { "Its data directory is deleted for good: settings, files, databases. This cannot be undone." }
                form method="post" action={"/apps/" (id) "/uninstall"} {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="purge" value="yes";
                    button.danger type="submit" { "Uninstall and delete its data" }
                }
            } @else {
                h1 { "Uninstall " (id) "?" }
                p { "The app stops and its container and image go. Its data is kept, so installing it again picks up where it was." }
                form method="post" action={"/apps/" (id) "/uninstall"} {
                    input type="hidden" name="csrf" value=(csrf);
                    button.danger type="submit" { "Uninstall, keep its data" }
                }
                p { a href={"/apps/" (id) "/uninstall?purge=yes"} { "Also delete its data…" } }
            }
            p { a href={"/apps/" (id)} { "Cancel" } }
        },
    )
}

/// The Node page: rows of (label, value) per section.
pub fn node(csrf: &str, sections: &[(&str, Vec<(String, String)>)], errors: &[String]) -> Markup {
    layout(
        "Node",
        Some(("Node", csrf)),
        html! {
            h1 { "Node" }
            @for (title, rows) in sections {
                section.card {
                    h2 { (title) }
                    dl { @for (k, v) in rows { dt { (k) } dd { (v) } } }
                }
            }
            section.card {
                h2 { "Recent errors" }
                @if errors.is_empty() { p.muted { "None." } }
                ul { @for e in errors { li.error { (e) } } }
            }
        },
    )
}

pub fn confirm_unverified(csrf: &str, m: &MarketCard, version: &str) -> Markup {
    layout(
        "Confirm",
        Some(("Store", csrf)),
        html! {
            h1 { "Install an unverified app?" }
            p.warning { (m.handle) " " (version) " is " strong { (m.tier) } " (score " (m.score) "): nobody you trust vouches for it." }
            ul.reasons { @for (points, text) in &m.reasons { li { span.points { (format!("{points:+}")) } " " (text) } } }
            @for w in &m.warnings { p.warning { "⚠ " (w) } }
            form.card method="post" action={"/apps/" (m.app_id) "/install"} {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="source" value="market";
                input type="hidden" name="handle" value=(m.handle);
                input type="hidden" name="version" value=(version);
                label.confirm {
                    input type="checkbox" name="confirm" value="yes" required;
                    " I understand this app is unverified and want to install it anyway"
                }
                button type="submit" { "Install" }
            }
            p { a href=(m.detail_href()) { "Cancel" } }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_outside_is_escaped() {
        let page = message(
            "<script>alert(1)</script>",
            None,
            "\"><img src=x onerror=alert(1)>",
            "/",
        )
        .into_string();
        assert!(!page.contains("<script>alert"));
        assert!(!page.contains("<img src=x"));
        assert!(page.contains("&lt;script&gt;"));
    }

    #[test]
    fn figures_read_well() {
        assert_eq!(size_text(512), "1 KiB");
        assert_eq!(size_text(5 << 20), "5.0 MiB");
        assert_eq!(size_text(3 << 30), "3.0 GiB");
        assert_eq!(ago_text(5), "5 s ago");
        assert_eq!(ago_text(125), "2 min ago");
        assert_eq!(encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(short_npub("npub1"), "npub1");
    }
}
