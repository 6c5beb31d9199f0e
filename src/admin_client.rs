//! The admin API as the `cidgate pin` and `cidgate prewarm` commands use it: they talk to the
//! running server of the data directory (or `--admin URL`), with the configured bearer token.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{bail, Context};
use futures::StreamExt;

use crate::config::Config;

/// A client of one server's admin listener.
pub struct AdminClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl AdminClient {
    /// The admin listener at `url`, or the one the data directory's running server announced.
    pub fn new(config: &Config, url: Option<&str>) -> anyhow::Result<Self> {
        let base = match url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => crate::app::running_admin_url(&config.store.dir).with_context(|| {
                format!(
                    "no running server announced its admin address in {} (start `cidgate serve` or pass --admin URL)",
                    config.store.dir.display()
                )
            })?,
        };
        Ok(Self {
            base,
            token: config.admin.token.clone(),
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .build()?,
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        if self.token.is_empty() {
            r
        } else {
            r.bearer_auth(&self.token)
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<serde_json::Value> {
        let resp = req.send().await.context("reaching the admin listener")?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("admin API answered {status}: {}", text.trim());
        }
        serde_json::from_str(&text).context("reading the admin API's answer")
    }

    /// `cidgate pin ls`: one line per pin.
    pub async fn pin_ls(&self) -> anyhow::Result<()> {
        let v = self
            .send(self.request(reqwest::Method::GET, "/admin/pins"))
            .await?;
        for p in v["store"].as_array().into_iter().flatten() {
            println!(
                "{}\t{}\tstore{}",
                p["cid"].as_str().unwrap_or("?"),
                p["reason"].as_str().unwrap_or("?"),
                p["name"]
                    .as_str()
                    .map(|n| format!("\t{n}"))
                    .unwrap_or_default()
            );
        }
        let target = v["target"].as_str().unwrap_or("?");
        if target != "embedded" {
            for p in v["made_by_cidgate"].as_array().into_iter().flatten() {
                if p["state"] == "pinned" {
                    let reason = if p["auto"] == true {
                        "auto"
                    } else {
                        "operator"
                    };
                    println!("{}\t{reason}\t{target}", p["cid"].as_str().unwrap_or("?"));
                }
            }
        }
        Ok(())
    }

    /// `cidgate pin add CID [--name]`.
    pub async fn pin_add(&self, cid: &str, name: Option<&str>) -> anyhow::Result<()> {
        let mut req = self.request(reqwest::Method::POST, &format!("/admin/pins/{cid}"));
        if let Some(n) = name {
            req = req.query(&[("name", n)]);
        }
        let v = self.send(req).await?;
        println!(
            "pinned {} in {}",
            v["cid"].as_str().unwrap_or(cid),
            v["target"].as_str().unwrap_or("the hot layer")
        );
        Ok(())
    }

    /// `cidgate pin rm CID`.
    pub async fn pin_rm(&self, cid: &str) -> anyhow::Result<()> {
        let v = self
            .send(self.request(reqwest::Method::DELETE, &format!("/admin/pins/{cid}")))
            .await?;
        if v["unpinned"] == true {
            println!("unpinned {cid}");
        } else {
            println!("{cid} was not pinned");
        }
        Ok(())
    }

    /// `cidgate prewarm CID...`: streams the server's progress into a progress bar.
    pub async fn prewarm(&self, cids: &[String]) -> anyhow::Result<()> {
        let resp = self
            .request(reqwest::Method::POST, "/admin/prewarm")
            .body(cids.join("\n"))
            .send()
            .await
            .context("reaching the admin listener")?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            bail!("admin API answered {status}: {}", text.trim());
        }
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(cids.len() as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed}]")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        let mut failed = 0;
        let mut buf = Vec::new();
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            buf.extend_from_slice(&chunk.context("reading progress")?);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line) else {
                    continue;
                };
                let cid = v["cid"].as_str().unwrap_or("?");
                let mb = v["bytes"].as_u64().unwrap_or(0) as f64 / 1e6;
                let blocks = v["blocks"].as_u64().unwrap_or(0);
                if v["done"] == true {
                    let line = match v["error"].as_str() {
                        Some(e) => {
                            failed += 1;
                            format!("{cid}: failed: {e}")
                        }
                        None => format!("{cid}: {blocks} blocks, {mb:.1} MB in the cache"),
                    };
                    match &bar {
                        Some(b) => {
                            b.println(line);
                            b.inc(1);
                        }
                        None => println!("{line}"),
                    }
                } else if let Some(b) = &bar {
                    b.set_message(format!("{cid}: {blocks} blocks, {mb:.1} MB"));
                }
            }
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        if failed > 0 {
            bail!("{failed} of {} prewarms failed", cids.len());
        }
        Ok(())
    }
}
