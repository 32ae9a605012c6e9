//! The CLI's side of the local API: finds the daemon through `<data>/api.addr` and
//! authenticates with `<data>/api.token`.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    sync::mpsc,
    time::Duration,
};

use anyhow::Context;

use crate::executor::ProgressEvent;

/// A connection to one node's local API.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    token: String,
}

impl ApiClient {
    /// Reads the address and token the daemon wrote into `data`.
    pub fn from_data_dir(data: &Path) -> anyhow::Result<Self> {
        let addr = std::fs::read_to_string(data.join("api.addr")).with_context(|| {
            format!(
                "no daemon found for {} (is `archy node run --data {}` running?)",
                data.display(),
                data.display()
            )
        })?;
        let token = std::fs::read_to_string(data.join("api.token"))
            .with_context(|| format!("cannot read {}", data.join("api.token").display()))?;
        Ok(Self {
            base: format!("http://{}", addr.trim()),
            token: token.trim().to_string(),
        })
    }

    fn agent() -> ureq::Agent {
        ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(3))
            .build()
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<ureq::Response> {
        let req = Self::agent()
            .request(method, &format!("{}{path}", self.base))
            .set("Authorization", &format!("Bearer {}", self.token))
            .timeout(Duration::from_secs(60));
        let res = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        match res {
            Ok(r) => Ok(r),
            Err(ureq::Error::Status(code, r)) => {
                let text = r.into_string().unwrap_or_default();
                let msg = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_string))
                    .unwrap_or(text);
                anyhow::bail!("{msg} (HTTP {code})")
            }
            Err(e) => Err(anyhow::anyhow!(
                "cannot reach the daemon at {}: {e}",
                self.base
            )),
        }
    }

    pub fn get_json(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        Ok(self.call("GET", path, None)?.into_json()?)
    }

    pub fn get_text(&self, path: &str) -> anyhow::Result<String> {
        Ok(self.call("GET", path, None)?.into_string()?)
    }

    pub fn post(&self, path: &str, body: serde_json::Value) -> anyhow::Result<serde_json::Value> {
        Ok(self.call("POST", path, Some(body))?.into_json()?)
    }

    /// Subscribes to the event stream; events arrive on the returned channel.
    pub fn events(&self) -> anyhow::Result<mpsc::Receiver<ProgressEvent>> {
        let res = Self::agent()
            .get(&format!("{}/v1/events", self.base))
            .set("Authorization", &format!("Bearer {}", self.token))
            .call()
            .map_err(|e| anyhow::anyhow!("cannot subscribe to events: {e}"))?;
        let (tx, rx) = mpsc::channel();
        let reader = BufReader::new(res.into_reader());
        std::thread::spawn(move || {
            for line in reader.lines().map_while(Result::ok) {
                if let Some(data) = line.strip_prefix("data:") {
                    if let Ok(e) = serde_json::from_str::<ProgressEvent>(data.trim()) {
                        if tx.send(e).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(rx)
    }
}
