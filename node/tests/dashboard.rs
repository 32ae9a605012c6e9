//! The web dashboard in real browsers: Debian's chromium (through chromedriver) and
//! firefox-esr (through geckodriver), headless, driven over WebDriver from Rust with
//! fantoccini, each against its own `archy node run --web` on the process runtime, with
//! a signed catalog and an `archy relay run` relay carrying a marketplace app.
//!
//! One operator's flow: a wrong password is refused; log in; search the Store; install a
//! catalog app and watch its progress on the page until it is healthy; open its link;
//! stop and start it; a marketplace app (unverified) is refused until the confirmation
//! is given; a change without the CSRF token and a request for a foreign Host are
//! refused; every page fits a 360 px phone screen; a one-time link logs in once;
//! uninstall with the data. Each page is saved as a screenshot under
//! `target/tmp/dashboard/<browser>/`.
#![allow(clippy::unwrap_used)]

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use archy_node::client::ApiClient;
use common::{archy, HelloApp};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

mod common;

const PASSWORD: &str = "correct horse battery staple";
/// An endpoint id no node has: the marketplace app's image is served by nobody, so its
/// install is accepted and then waits.
const UNSERVED: &str = "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd";

/// A browser engine the flow runs in, with the WebDriver server that drives it.
#[derive(Debug, Clone, Copy)]
enum Engine {
    Chromium,
    Firefox,
}

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Engine::Chromium => "chromium",
            Engine::Firefox => "firefox",
        }
    }

    /// The browser and its driver, with what installs them.
    fn tools(self) -> ([&'static str; 2], &'static str) {
        match self {
            Engine::Chromium => (
                ["chromium", "chromedriver"],
                "apt-get install chromium chromium-driver",
            ),
            Engine::Firefox => (
                ["firefox-esr", "geckodriver"],
                "apt-get install firefox-esr; cargo install --locked geckodriver",
            ),
        }
    }

    /// `None` when the browser and its driver are installed, else what is missing.
    fn missing(self) -> Option<String> {
        let (tools, install) = self.tools();
        tools
            .into_iter()
            .find(|tool| {
                !Command::new(tool)
                    .arg("--version")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            })
            .map(|tool| format!("{tool} is not installed ({install})"))
    }

    /// The WebDriver capabilities: headless, 1280 x 1000.
    fn capabilities(self) -> serde_json::Map<String, Value> {
        let mut caps = serde_json::Map::new();
        match self {
            Engine::Chromium => caps.insert(
                "goog:chromeOptions".into(),
                json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"]}),
            ),
            Engine::Firefox => caps.insert(
                "moz:firefoxOptions".into(),
                json!({"binary": "/usr/bin/firefox-esr", "args": ["-headless", "-width=1280", "-height=1000"]}),
            ),
        };
        caps
    }
}

/// geckodriver's `moz/context` command: later commands go to the page (`content`) or
/// to the browser itself (`chrome`), where Firefox keeps its zoom.
#[derive(Debug)]
struct MozContext(&'static str);

impl fantoccini::wd::WebDriverCompatibleCommand for MozContext {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!(
            "session/{}/moz/context",
            session.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({"context": self.0}).to_string()),
        )
    }
}

/// A WebDriver server (chromedriver, geckodriver) on a free port, killed on drop.
struct Driver {
    child: std::process::Child,
    url: String,
}

impl Driver {
    fn start(engine: Engine) -> Self {
        let port = common::free_port();
        let mut cmd = match engine {
            Engine::Chromium => {
                let mut c = Command::new("chromedriver");
                c.arg(format!("--port={port}"));
                c
            }
            Engine::Firefox => {
                // System access: the zoom that makes a phone's viewport (see
                // `Browser::phone`) is set in the browser's own context.
                let mut c = Command::new("geckodriver");
                c.args(["--host", "127.0.0.1", "--port", &port.to_string()])
                    .arg("--allow-system-access");
                c
            }
        };
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        common::wait_until(
            "the WebDriver server to listen",
            Duration::from_secs(20),
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The browser, the dashboard's base URL and where screenshots go.
struct Browser {
    engine: Engine,
    client: Client,
    base: String,
    shots: PathBuf,
    /// The node's data dir: a failed wait shows what the daemon says of its apps.
    data: PathBuf,
}

impl Browser {
    async fn open(engine: Engine, driver: &Driver, base: String, data: &Path) -> Self {
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(engine.capabilities())
            .connect(&driver.url)
            .await
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", engine.name()));
        let shots = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("dashboard")
            .join(engine.name());
        std::fs::create_dir_all(&shots).unwrap();
        Self {
            engine,
            client,
            base,
            shots,
            data: data.to_path_buf(),
        }
    }

    async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap();
    }

    async fn css(&self, selector: &str) -> fantoccini::elements::Element {
        match self
            .client
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(selector))
            .await
        {
            Ok(e) => e,
            Err(e) => panic!("no {selector} on {}: {e}", self.path().await),
        }
    }

    async fn text(&self, selector: &str) -> String {
        self.css(selector).await.text().await.unwrap()
    }

    async fn body(&self) -> String {
        self.text("body").await
    }

    async fn path(&self) -> String {
        self.client
            .current_url()
            .await
            .map(|u| u.path().to_string())
            .unwrap_or_default()
    }

    /// Clicks the first `selector` whose text contains `label`.
    async fn click(&self, selector: &str, label: &str) {
        for e in self.client.find_all(Locator::Css(selector)).await.unwrap() {
            if e.text().await.unwrap_or_default().contains(label) {
                e.click().await.unwrap();
                return;
            }
        }
        panic!("no {selector} saying {label:?} on {}", self.path().await);
    }

    /// Waits until the page's body text satisfies `ok` (reloading every half second
    /// when `reload`).
    async fn wait_for_text(&self, what: &str, reload: bool, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let body = self.client.find(Locator::Css("body")).await.ok();
            let text = match body {
                Some(b) => b.text().await.unwrap_or_default(),
                None => String::new(),
            };
            if ok(&text) {
                return text;
            }
            if Instant::now() >= deadline {
                let apps = ApiClient::from_data_dir(&self.data)
                    .and_then(|api| api.get_json("/v1/apps"))
                    .map(|a| a.to_string())
                    .unwrap_or_else(|e| e.to_string());
                panic!(
                    "{what}: not within 90 s; the page says:\n{text}\nthe daemon's apps: {apps}"
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            if reload {
                let _ = self.client.refresh().await;
            }
        }
    }

    /// A phone's viewport, 360 CSS px wide: the window itself in Chromium; in Firefox,
    /// whose windows are at least 500 px wide, a 500 px window with the page zoomed to
    /// 139 % (until the next navigation). `false` goes back to the desktop.
    async fn phone(&self, on: bool) {
        match (self.engine, on) {
            (Engine::Chromium, true) => self.client.set_window_size(360, 780).await.unwrap(),
            (Engine::Firefox, _) => {
                let (width, zoom) = if on {
                    (500, 500.0 / 360.0)
                } else {
                    (1280, 1.0)
                };
                self.client.set_window_size(width, 1000).await.unwrap();
                self.client.issue_cmd(MozContext("chrome")).await.unwrap();
                self.client
                    .execute(
                        "ZoomManager.setZoomForBrowser(gBrowser.selectedBrowser, arguments[0]);",
                        vec![json!(zoom)],
                    )
                    .await
                    .unwrap();
                self.client.issue_cmd(MozContext("content")).await.unwrap();
            }
            (Engine::Chromium, false) => self.client.set_window_size(1280, 1000).await.unwrap(),
        }
    }

    async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    /// `fetch(path, init)` from the page: the answer's status.
    async fn fetch_status(&self, path: &str, init: Value) -> u64 {
        let script = "const [path, init, done] = arguments; \
                      fetch(path, init).then(r => done(r.status), e => done(String(e)));";
        let got = self
            .client
            .execute_async(script, vec![json!(path), init])
            .await
            .unwrap();
        got.as_u64()
            .unwrap_or_else(|| panic!("fetch {path} failed: {got}"))
    }
}

/// A developer's marketplace app: the busybox web app under another id, published
/// (unverified: nobody the operator follows vouches for it) to `relay`.
fn publish_market_app(dir: &Path, relay: &str) -> String {
    std::fs::create_dir_all(dir).unwrap();
    common::busybox_image(dir, "notes");
    let manifest = dir.join("notes.yaml");
    let yaml = HelloApp::new("2.0.0", common::free_port())
        .yaml()
        .replace("org.example.hello", "org.example.notes")
        .replace("name: Hello", "name: Field Notes");
    std::fs::write(&manifest, yaml).unwrap();
    let key = dir.join("dev.nsec");
    common::assert_ok(
        &archy(&["key", "new", "--out", key.to_str().unwrap()]),
        "key new",
    );
    let out = archy(&[
        "app",
        "publish",
        manifest.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--relay",
        relay,
        "--provider",
        UNSERVED,
        "--timeout",
        "5",
        "--json",
    ]);
    common::assert_ok(&out, "app publish");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["handle"].as_str().unwrap().to_string()
}

fn app_state(data: &Path, id: &str) -> Option<Value> {
    ApiClient::from_data_dir(data)
        .unwrap()
        .get_json(&format!("/v1/apps/{id}"))
        .ok()
}

/// A raw HTTP/1.1 request to the dashboard; the status code.
fn raw_status(addr: &str, request: &str) -> u16 {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Opens `GET /events` with `cookie` and reads the status line; the connection stays
/// open (a live stream) until dropped.
fn open_stream(addr: &str, cookie: &str) -> (std::net::TcpStream, u16) {
    use std::io::{BufRead, BufReader};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /events HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\n\r\n"
    )
    .unwrap();
    let mut line = String::new();
    BufReader::new(s.try_clone().unwrap())
        .read_line(&mut line)
        .unwrap();
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (s, status)
}

#[test]
fn an_operator_runs_the_node_from_chromium() {
    operator_flow(Engine::Chromium);
}

#[test]
fn an_operator_runs_the_node_from_firefox() {
    operator_flow(Engine::Firefox);
}

fn operator_flow(engine: Engine) {
    if !common::can_run(common::needs_process_apps().or(engine.missing())) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let _cleanup = common::ProcessCleanup(vec![data.clone()]);

    // A signed catalog with the hello app, and a relay with a marketplace app.
    let apps = common::busybox_apps(dir.path(), "hello from the catalog");
    let port = common::free_port();
    // It takes 3 s to answer after it starts, so its progress is on screen a while.
    let slow = HelloApp::new("1.0.0", port)
        .yaml()
        .replace(
            "cmd: [/bin/busybox, httpd, -f, -p, '8080', -h, /www]",
            "cmd: [/bin/busybox, sh, -c, 'sleep 3; exec /bin/busybox httpd -f -p 8080 -h /www']",
        )
        .replace("retries: 4", "retries: 20");
    assert!(slow.contains("sleep 3") && slow.contains("retries: 20"));
    std::fs::write(apps.join("hello.yaml"), slow).unwrap();
    let publish = common::publish_signed(&apps, dir.path());
    let relay = common::start(
        &["relay", "run", "--listen", "127.0.0.1:0"].map(String::from),
        "relay listening on ws://127.0.0.1:",
    );
    let relay_url = relay.ready.split_whitespace().nth(3).unwrap().to_string();
    let handle = publish_market_app(&dir.path().join("dev"), &relay_url);

    // The node, with the dashboard and the relay, and a password.
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("config.toml"),
        format!("relays = [\"{relay_url}\"]\n"),
    )
    .unwrap();
    let mut set = Command::new(env!("CARGO_BIN_EXE_archy"))
        .args(["node", "web-password", "--data"])
        .arg(&data)
        .stdin(Stdio::piped())
        .output_with_stdin("short\n");
    assert!(!set.status.success(), "a short password is refused");
    assert!(String::from_utf8_lossy(&set.stderr).contains("at least"));
    set = Command::new(env!("CARGO_BIN_EXE_archy"))
        .args(["node", "web-password", "--data"])
        .arg(&data)
        .stdin(Stdio::piped())
        .output_with_stdin(&format!("{PASSWORD}\n"));
    common::assert_ok(&set, "web-password");
    let _node = common::start_node_cmd(
        common::node_cmd(
            &data,
            &format!("web-{}", engine.name()),
            "process",
            Some(&publish),
        )
        .args(["--web", "127.0.0.1:0"]),
    );
    common::wait_until("the dashboard to listen", Duration::from_secs(20), || {
        data.join("web.addr").exists()
    });
    let addr = std::fs::read_to_string(data.join("web.addr")).unwrap();
    let base = format!("http://{}", addr.trim());

    // A page asked for with a host name nobody configured (DNS rebinding) is refused.
    assert_eq!(
        raw_status(
            addr.trim(),
            "GET /login HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
        ),
        421
    );

    let driver = Driver::start(engine);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let b = Browser::open(engine, &driver, base.clone(), &data).await;

        // Not logged in: every page leads to the login.
        b.goto("/apps").await;
        assert_eq!(b.path().await, "/login");
        b.shot("login").await;

        // A wrong password is refused, the right one logs in.
        b.css("#password").await.send_keys("not the password").await.unwrap();
        b.click("button", "Log in").await;
        let refused = b.wait_for_text("the refusal", false, |t| t.contains("Wrong password")).await;
        assert!(refused.contains("Log in"));
        b.css("#password").await.send_keys(PASSWORD).await.unwrap();
        b.click("button", "Log in").await;
        b.wait_for_text("the Store", false, |t| t.contains("Signed catalog")).await;
        assert_eq!(b.path().await, "/");

        // Live event streams are bounded: past the limit a new one is refused, and a
        // closed one frees its place.
        let cookie = b
            .client
            .get_named_cookie("archy_session")
            .await
            .unwrap();
        let cookie = format!("archy_session={}", cookie.value());
        let mut streams = Vec::new();
        let refused = loop {
            let (conn, status) = open_stream(addr.trim(), &cookie);
            if status != 200 {
                break status;
            }
            streams.push(conn);
            assert!(streams.len() <= 64, "no limit on event streams");
        };
        assert_eq!(refused, 503);
        assert!(streams.len() >= 8, "only {} streams allowed", streams.len());
        streams.clear();
        common::wait_until("a stream place to free up", Duration::from_secs(30), || {
            open_stream(addr.trim(), &cookie).1 == 200
        });

        // The Store: the catalog app, and the marketplace app once the relay answered.
        let store = b
            .wait_for_text("the marketplace app", true, |t| t.contains("Field Notes"))
            .await;
        assert!(store.contains("Hello"), "{store}");
        assert!(store.contains("unverified"), "{store}");
        assert!(store.contains(&format!("{relay_url}: answered")), "{store}");
        b.shot("store").await;

        // Search narrows the Store.
        b.css("input[name=q]").await.send_keys("notes").await.unwrap();
        b.click("form.search button", "Search").await;
        let found = b.wait_for_text("the search", false, |t| t.contains("No catalog app matches")).await;
        assert!(found.contains("Field Notes"), "{found}");

        // Install the catalog app: progress on its page until healthy.
        b.goto("/").await;
        b.click("#catalog article[data-app='org.example.hello'] button", "Install").await;
        b.css("#progress").await;
        assert_eq!(b.path().await, "/apps/org.example.hello");
        let mut stages = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let stage = b
                .client
                .execute(
                    "const p = document.getElementById('progress'); return p ? (p.dataset.stage || '') : 'reloaded';",
                    vec![],
                )
                .await
                .unwrap_or(json!("reloaded"));
            let stage = stage.as_str().unwrap_or_default().to_string();
            if !stage.is_empty() && stages.last() != Some(&stage) {
                stages.push(stage.clone());
            }
            if stage == "healthy" || stage == "done" {
                break;
            }
            assert!(Instant::now() < deadline, "no healthy within 90 s; stages seen: {stages:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            stages.iter().any(|s| !["healthy", "done", "reloaded"].contains(&s.as_str())),
            "the page showed the work in progress, not only the end: {stages:?}"
        );
        b.shot("install-progress").await;
        let page = b
            .wait_for_text("the app running", true, |t| t.contains("running") && t.contains("Open http://"))
            .await;
        assert!(page.contains("1.0.0"), "{page}");
        b.shot("app").await;

        // Its link opens the app.
        let link = b.css("a.open").await.attr("href").await.unwrap().unwrap();
        assert_eq!(link, format!("http://127.0.0.1:{port}/"));
        b.client.goto(&link).await.unwrap();
        assert!(b.body().await.contains("hello from the catalog"));

        // Stop, then start.
        b.goto("/apps/org.example.hello").await;
        b.click("button", "Stop").await;
        b.wait_for_text("stopped", true, |t| t.contains("stopped")).await;
        assert!(!common::http_ok([127, 0, 0, 1], port));
        b.click("button", "Start").await;
        b.wait_for_text("running again", true, |t| t.contains("running") && t.contains("Open http://")).await;
        assert!(common::http_ok([127, 0, 0, 1], port));

        // A change without the CSRF token is refused, from the page's own origin.
        let status = b
            .fetch_status(
                "/apps/org.example.hello/stop",
                json!({"method": "POST", "headers": {"content-type": "application/x-www-form-urlencoded"}, "body": "action=stop"}),
            )
            .await;
        assert_eq!(status, 403);
        let status = b
            .fetch_status(
                "/apps/org.example.hello/stop",
                json!({"method": "POST", "headers": {"x-csrf-token": "0".repeat(64)}}),
            )
            .await;
        assert_eq!(status, 403);
        assert_eq!(app_state(&data, "org.example.hello").unwrap()["phase"], "running");

        // The marketplace app is unverified: without the confirmation it is not installed.
        let (developer, app_id) = handle.split_once('/').unwrap();
        b.goto(&format!("/store/market/{developer}/{app_id}")).await;
        let detail = b.body().await;
        assert!(detail.contains("unverified") && detail.contains("Trust"), "{detail}");
        b.shot("market-app").await;
        // The browser would not submit without the box checked; the server must refuse
        // too, so the check is taken off the form.
        b.client
            .execute("document.querySelector('form.install input[name=confirm]').remove();", vec![])
            .await
            .unwrap();
        b.click("form.install button", "Install").await;
        let confirm = b.wait_for_text("the confirmation", false, |t| t.contains("Install an unverified app?")).await;
        assert!(confirm.contains("unverified"), "{confirm}");
        assert!(app_state(&data, app_id).is_none(), "not installed before the confirmation");
        b.shot("confirm-unverified").await;
        b.css("input[name=confirm]").await.click().await.unwrap();
        b.click("form button", "Install").await;
        b.wait_for_text("the market app's page", false, |t| t.contains("Field Notes")).await;
        assert_eq!(b.path().await, format!("/apps/{app_id}"));
        let notes = app_state(&data, app_id).expect("installed after the confirmation");
        assert_eq!(notes["desired"]["source"]["kind"], "market");

        // My apps: the catalog app running, the marketplace app waiting for its image,
        // with the reason.
        b.goto("/apps").await;
        let mine = b
            .wait_for_text("the market app waiting", true, |t| t.contains("ask the developer"))
            .await;
        assert!(mine.contains("Hello") && mine.contains("running"), "{mine}");
        assert!(mine.contains("Field Notes"), "{mine}");
        b.shot("my-apps").await;

        // A 360 px phone: nothing wider than the screen.
        for path in ["/", "/apps", "/node"] {
            b.goto(path).await;
            b.phone(true).await;
            let widths = b
                .client
                .execute(
                    "return [window.innerWidth, document.documentElement.scrollWidth];",
                    vec![],
                )
                .await
                .unwrap();
            let [screen, width] = [0, 1].map(|i| widths[i].as_u64().unwrap());
            assert!(screen <= 360, "{path}: the screen is {screen} px, not a phone's");
            assert!(width <= 360, "{path} is {width} px wide on a 360 px screen");
            b.shot(&format!("phone{}", path.replace('/', "-"))).await;
        }
        b.phone(false).await;

        // The Node page.
        b.goto("/node").await;
        let node = b.body().await;
        assert!(node.contains("Catalog") && node.contains("Swarm") && node.contains("process"), "{node}");
        b.shot("node").await;

        // Uninstall the market app, then the catalog app with its data (a second step).
        b.goto(&format!("/apps/{app_id}/uninstall")).await;
        b.click("button", "Uninstall, keep its data").await;
        b.goto("/apps/org.example.hello").await;
        b.click("a", "Uninstall").await;
        b.click("a", "Also delete its data").await;
        b.wait_for_text("the second step", false, |t| t.contains("cannot be undone")).await;
        b.click("button", "Uninstall and delete its data").await;
        b.wait_for_text("nothing installed", true, |t| t.contains("No apps installed yet")).await;
        assert!(!common::http_ok([127, 0, 0, 1], port));

        // Logged out, a one-time link logs in, once.
        b.click("button", "Log out").await;
        b.goto("/apps").await;
        assert_eq!(b.path().await, "/login");
        let link = common::archy_cmd(["node", "web-url", "--json", "--data"])
            .arg(&data)
            .json()
            .unwrap();
        let url = link["url"].as_str().unwrap().to_string();
        b.client.goto(&url).await.unwrap();
        b.wait_for_text("the Store after the link", false, |t| t.contains("Signed catalog")).await;
        b.client.delete_all_cookies().await.unwrap();
        b.client.goto(&url).await.unwrap();
        let spent = b.body().await;
        assert!(spent.contains("used already or has expired"), "{spent}");

        b.client.close().await.unwrap();
    });
}

/// `output()` with `input` written to stdin.
trait OutputWithStdin {
    fn output_with_stdin(&mut self, input: &str) -> std::process::Output;
}

impl OutputWithStdin for Command {
    fn output_with_stdin(&mut self, input: &str) -> std::process::Output {
        let mut child = self
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }
}
