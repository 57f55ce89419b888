//! Debian's headless Chromium driven over WebDriver: chromedriver on a free port, a fresh
//! profile per run, no network beyond loopback; screenshots go to
//! `$CARGO_TARGET_DIR/console-screenshots/`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use thirtyfour::prelude::*;

/// chromedriver, killed on drop.
pub struct Driver {
    child: Child,
    pub port: u16,
    _profile: tempfile::TempDir,
    pub driver: Option<WebDriver>,
}

/// Where the screenshots go.
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            // target/debug/deps/<test> → target
            std::env::current_exe()
                .ok()
                .and_then(|e| e.parent()?.parent()?.parent().map(PathBuf::from))
        })
        .unwrap_or_else(|| PathBuf::from("target"));
    target.join("console-screenshots")
}

impl Driver {
    /// Starts chromedriver and a Chromium session. Fails with the install hint when the
    /// browser is missing (`bash console/tests/setup.sh`).
    pub async fn start() -> Result<Driver> {
        for p in ["chromium", "chromedriver"] {
            if !mindora_tests::servers::have(p) {
                bail!("{p} is missing: run `bash console/tests/setup.sh`");
            }
        }
        let port = mindora_tests::free_port()?;
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chromedriver")?;
        let profile = tempfile::tempdir()?;
        let mut d = Driver {
            child,
            port,
            _profile: profile,
            driver: None,
        };
        mindora_tests::wait_for(Duration::from_secs(20), "chromedriver", || {
            Ok(std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ()))
        })?;
        let mut caps = DesiredCapabilities::chrome();
        caps.set_binary("/usr/bin/chromium")?;
        for arg in [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1400,1000",
        ] {
            caps.add_arg(arg)?;
        }
        caps.add_arg(&format!("--user-data-dir={}", d._profile.path().display()))?;
        let driver = WebDriver::new(format!("http://127.0.0.1:{port}"), caps)
            .await
            .context("starting a Chromium session")?;
        // Every lookup waits for its element (up to 10 s): after a click the next page may
        // not have committed yet, and a single look then fails on a busy machine.
        driver
            .set_implicit_wait_timeout(std::time::Duration::from_secs(10))
            .await
            .context("setting the implicit wait")?;
        d.driver = Some(driver);
        Ok(d)
    }

    pub fn get(&self) -> Result<&WebDriver> {
        self.driver.as_ref().context("no browser session")
    }

    /// Saves a PNG screenshot named `name` and returns its path.
    pub async fn shot(&self, name: &str) -> Result<PathBuf> {
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{name}.png"));
        self.get()?.screenshot(&path).await?;
        println!("screenshot: {}", path.display());
        Ok(path)
    }

    /// The element `by`, waited for up to 20 s: after a click that submits a form the
    /// browser may still show the old page (the click returns before the navigation
    /// commits), so a single look can miss an element that is on its way. When it is
    /// missing, the error says which page
    /// the browser is on (URL, title, the page's text) and a screenshot
    /// `missing-<what>.png` is saved, so a failure explains itself.
    pub async fn must_find(&self, by: By, what: &str) -> Result<WebElement> {
        let d = self.get()?;
        let found = d
            .query(by)
            .wait(Duration::from_secs(20), Duration::from_millis(200))
            .first()
            .await;
        match found {
            Ok(e) => Ok(e),
            Err(e) => {
                let url = d
                    .current_url()
                    .await
                    .map(|u| u.to_string())
                    .unwrap_or_default();
                let title = d.title().await.unwrap_or_default();
                let text = match d.find(By::Tag("body")).await {
                    Ok(b) => b.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                };
                let shot = self
                    .shot(&format!("missing-{what}"))
                    .await
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|e| format!("(no screenshot: {e})"));
                bail!(
                    "{what} not found ({e}) on {url}, title {title:?}; screenshot {shot}; page text:\n{text}"
                )
            }
        }
    }

    pub async fn quit(mut self) -> Result<()> {
        if let Some(d) = self.driver.take() {
            d.quit().await?;
        }
        Ok(())
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
