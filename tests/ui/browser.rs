//! Headless Chromium driven over WebDriver (Debian's `chromium` and `chromium-driver`,
//! through the `fantoccini` crate): chromedriver on a free port, a fresh profile in a
//! temporary folder, and blocking helpers that wait for elements and conditions (never a
//! fixed sleep). Screenshots go to `target/ui-artifacts/<test>/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::common::free_port;
use crate::common::ops::{listening, wait_until};

/// How long a wait for an element or a condition may take.
const WAIT: Duration = Duration::from_secs(30);

/// One browser session; chromedriver and Chromium end on drop.
pub struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    _profile: tempfile::TempDir,
    artifacts: PathBuf,
    shots: std::cell::Cell<u32>,
    /// `http://127.0.0.1:<admin port>`.
    pub origin: String,
}

/// Where a test's screenshots go: `target/ui-artifacts/<test>/` (or `$UI_ARTIFACTS/<test>`).
pub fn artifacts_dir(test: &str) -> PathBuf {
    let base = std::env::var_os("UI_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_TARGET_TMPDIR"))
                .parent()
                .unwrap()
                .join("ui-artifacts")
        });
    let dir = base.join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Browser {
    /// Starts chromedriver and a headless Chromium `width`×`height`, for the admin
    /// listener on `admin_port`; screenshots under [`artifacts_dir`]`(test)`.
    pub fn start(admin_port: u16, test: &str, width: u32, height: u32) -> Browser {
        let port = free_port();
        let driver = Command::new(driver_bin())
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (apt-get install chromium-driver)");
        assert!(
            wait_until(Duration::from_secs(20), || listening(port)),
            "chromedriver did not listen on {port}"
        );
        let profile = tempfile::tempdir().unwrap();
        let args = vec![
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            format!("--user-data-dir={}", profile.path().display()),
            format!("--window-size={width},{height}"),
        ];
        let mut caps = serde_json::Map::new();
        let mut options = json!({"args": args});
        if let Some(bin) = chromium_bin() {
            options["binary"] = json!(bin);
        }
        caps.insert("goog:chromeOptions".into(), options);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = rt
            .block_on(
                ClientBuilder::new(connector)
                    .capabilities(caps)
                    .connect(&format!("http://127.0.0.1:{port}")),
            )
            .expect("a Chromium session");
        Browser {
            rt,
            client: Some(client),
            driver,
            _profile: profile,
            artifacts: artifacts_dir(test),
            shots: std::cell::Cell::new(0),
            origin: format!("http://127.0.0.1:{admin_port}"),
        }
    }

    fn c(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    /// Opens `path` (e.g. `/ui/`) on the admin listener.
    pub fn open(&self, path: &str) {
        let url = format!("{}{path}", self.origin);
        self.rt.block_on(self.c().goto(&url)).unwrap();
    }

    /// Goes to the dashboard page `hash` (e.g. `#/upstreams/new`) and waits for its title.
    /// The page is rendered afresh even when it is the one shown.
    pub fn page(&self, hash: &str, title: &str) {
        let same = self.script(&format!("return location.hash === {};", json!(hash)));
        if same == Value::Bool(true) {
            self.script("location.hash = '#/';");
            self.wait_text("#page-title", "Overview");
        }
        self.script(&format!("location.hash = {};", json!(hash)));
        self.wait_text("#page-title", title);
    }

    /// Runs JavaScript in the page; its return value.
    pub fn script(&self, js: &str) -> Value {
        self.rt.block_on(self.c().execute(js, vec![])).unwrap()
    }

    /// Waits until an element matches `css`.
    pub fn find(&self, css: &str) -> Element {
        let found = self
            .rt
            .block_on(self.c().wait().at_most(WAIT).for_element(Locator::Css(css)));
        found.unwrap_or_else(|e| panic!("no {css} within {WAIT:?}: {e}\n{}", self.body_text()))
    }

    /// The visible text of the element `css` ("" when there is none).
    pub fn text(&self, css: &str) -> String {
        let js = format!(
            "const e = document.querySelector({}); return e ? e.innerText : '';",
            json!(css)
        );
        self.script(&js).as_str().unwrap_or_default().to_string()
    }

    /// Waits until `cond` (JavaScript returning a boolean) holds.
    pub fn wait_for(&self, what: &str, cond: &str) {
        let end = Instant::now() + WAIT;
        let js = format!("return Boolean({cond});");
        loop {
            if self.script(&js) == Value::Bool(true) {
                return;
            }
            if Instant::now() > end {
                panic!("{what}: not within {WAIT:?}\n{}", self.body_text());
            }
            self.rt
                .block_on(async { tokio::time::sleep(Duration::from_millis(50)).await });
        }
    }

    /// Waits until the text of `css` contains `needle`; returns the text.
    pub fn wait_text(&self, css: &str, needle: &str) -> String {
        let cond = format!(
            "(document.querySelector({0}) || {{innerText: ''}}).innerText.includes({1})",
            json!(css),
            json!(needle)
        );
        self.wait_for(&format!("{css} showing {needle:?}"), &cond);
        self.text(css)
    }

    /// Types `text` into the empty control `css` (cleared first).
    pub fn fill(&self, css: &str, text: &str) {
        let el = self.find(css);
        self.rt.block_on(el.clear()).unwrap();
        self.rt.block_on(el.send_keys(text)).unwrap();
    }

    /// Clicks `css`.
    pub fn click(&self, css: &str) {
        let el = self.find(css);
        self.rt.block_on(el.click()).unwrap();
    }

    /// Picks the option with value `value` in the select `css`.
    pub fn choose(&self, css: &str, value: &str) {
        let el = self.find(css);
        self.rt.block_on(el.select_by_value(value)).unwrap();
    }

    /// Chooses the file `path` in the file input `css`.
    pub fn upload(&self, css: &str, path: &str) {
        let el = self.find(css);
        self.rt.block_on(el.send_keys(path)).unwrap();
    }

    /// Saves a screenshot of the whole page as `<n>-<name>.png` in the test's artifacts
    /// folder (the window is made as tall as the page for it, then restored).
    pub fn shot(&self, name: &str) -> PathBuf {
        let n = self.shots.get() + 1;
        self.shots.set(n);
        let (w, h) = self.rt.block_on(self.c().get_window_size()).unwrap();
        let page = self
            .script("return document.documentElement.scrollHeight - window.innerHeight;")
            .as_f64()
            .unwrap_or(0.0);
        let taller = page > 1.0;
        if taller {
            let grow = u32::try_from(h).unwrap() + page.ceil() as u32;
            self.rt
                .block_on(self.c().set_window_size(u32::try_from(w).unwrap(), grow))
                .unwrap();
        }
        let png = self.rt.block_on(self.c().screenshot()).unwrap();
        if taller {
            self.rt
                .block_on(
                    self.c()
                        .set_window_size(u32::try_from(w).unwrap(), u32::try_from(h).unwrap()),
                )
                .unwrap();
        }
        let path = self.artifacts.join(format!("{n:02}-{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Resizes the window.
    pub fn resize(&self, width: u32, height: u32) {
        self.rt
            .block_on(self.c().set_window_size(width, height))
            .unwrap();
        self.wait_for(
            "the window resized",
            &format!("window.innerWidth === {width}"),
        );
    }

    /// Whether the page is wider than the window (content cut off at this width).
    pub fn overflows(&self) -> bool {
        self.script("return document.documentElement.scrollWidth > window.innerWidth + 1;")
            == Value::Bool(true)
    }

    /// The page's text, for failure messages.
    pub fn body_text(&self) -> String {
        self.rt
            .block_on(self.c().execute("return document.body.innerText;", vec![]))
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// The page's markup.
    pub fn source(&self) -> String {
        self.rt.block_on(self.c().source()).unwrap()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            let _ = self.rt.block_on(c.close());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn driver_bin() -> String {
    std::env::var("CHROMEDRIVER").unwrap_or_else(|_| {
        ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("chromedriver")
            .to_string()
    })
}

fn chromium_bin() -> Option<String> {
    std::env::var("CHROMIUM").ok().or_else(|| {
        ["/usr/lib/chromium/chromium", "/usr/bin/chromium"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .map(str::to_string)
    })
}
