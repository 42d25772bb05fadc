//! A small W3C WebDriver client over chromedriver, for the page's browser tests and its benchmark
//! (`onshi-page-bench`): start Debian's
//! `chromedriver` on a free loopback port, open headless Chromium with a fresh profile, and the
//! handful of commands the tests need (navigate, find, type, click, attributes, cookies,
//! screenshots). It speaks WebDriver's JSON protocol with reqwest directly: the crates that wrap
//! it (fantoccini, thirtyfour) bring a TLS stack and a second HTTP client for a loopback-only,
//! plain-HTTP conversation.
//!
//! Every wait is on a condition (an element, an attribute), polled; nothing sleeps to synchronise.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// The Enter key, as WebDriver types it.
pub const ENTER: &str = "\u{E007}";

/// chromedriver, killed on drop (with the browser it started).
#[derive(Debug)]
pub struct Driver {
    child: Child,
    base: String,
    client: reqwest::Client,
    rt: tokio::runtime::Runtime,
    _profile: tempfile::TempDir,
}

/// One browser session.
#[derive(Debug)]
pub struct Browser {
    driver: Driver,
    session: String,
}

/// A found element.
#[derive(Debug, Clone)]
pub struct Element(String);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Where Debian puts chromium and chromedriver (or `ONSHI_CHROMIUM`, `ONSHI_CHROMEDRIVER`).
fn tool(env: &str, default: &str) -> PathBuf {
    std::env::var_os(env).map_or_else(|| PathBuf::from(default), PathBuf::from)
}

impl Driver {
    pub fn start(log_dir: &Path) -> Driver {
        let driver = tool("ONSHI_CHROMEDRIVER", "/usr/bin/chromedriver");
        assert!(
            driver.exists(),
            "{} is missing: apt-get install chromium chromium-driver fonts-ipaexfont-gothic (.ci/run does)",
            driver.display()
        );
        let port = free_port();
        let log = std::fs::File::create(log_dir.join("chromedriver.log")).expect("driver log");
        let child = Command::new(&driver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log handle")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver.display()));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let client = rt.block_on(async {
            reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("an HTTP client")
        });
        let d = Driver {
            child,
            base: format!("http://127.0.0.1:{port}"),
            client,
            rt,
            _profile: tempfile::tempdir().expect("a browser profile directory"),
        };
        let ready = wait(Duration::from_secs(20), || {
            d.call("GET", "/status", None)
                .ok()
                .filter(|v| v["value"]["ready"] == true)
        });
        assert!(ready.is_some(), "chromedriver never became ready on {port}");
        d
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.client.get(url),
            "DELETE" => self.client.delete(url),
            _ => self
                .client
                .post(url)
                .header("content-type", "application/json")
                .body(body.unwrap_or_else(|| json!({})).to_string()),
        };
        self.rt.block_on(async move {
            let resp = req.send().await.map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let text = resp.text().await.map_err(|e| e.to_string())?;
            let v: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
            if status >= 400 {
                return Err(format!("{status}: {}", v["value"]));
            }
            Ok(v)
        })
    }

    /// A headless Chromium session at 1366×768.
    pub fn browser(self) -> Browser {
        let chromium = tool("ONSHI_CHROMIUM", "/usr/bin/chromium");
        let profile = self._profile.path().display().to_string();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                    "--window-size=1366,768", "--lang=ja",
                    format!("--user-data-dir={profile}"),
                ],
            },
        }}});
        let v = self
            .call("POST", "/session", Some(caps))
            .unwrap_or_else(|e| panic!("chromedriver could not open Chromium: {e}"));
        let session = v["value"]["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        Browser {
            driver: self,
            session,
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `probe` every 50 ms until it gives a value or `timeout` passes.
pub fn wait<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Browser {
    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        self.driver
            .call(method, &format!("/session/{}{path}", self.session), body)
            .map(|v| v["value"].clone())
    }

    fn must(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.cmd(method, path, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    pub fn goto(&self, url: &str) {
        self.must("POST", "/url", Some(json!({"url": url})));
    }

    pub fn url(&self) -> String {
        self.must("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn source(&self) -> String {
        self.must("GET", "/source", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The first element matching `css`, if any now.
    pub fn try_find(&self, css: &str) -> Option<Element> {
        self.cmd(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        )
        .ok()
        .and_then(|v| v[ELEMENT_KEY].as_str().map(|s| Element(s.to_string())))
    }

    /// Every element matching `css` now.
    pub fn find_all(&self, css: &str) -> Vec<Element> {
        self.must(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        )
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v[ELEMENT_KEY].as_str().map(|s| Element(s.to_string())))
                .collect()
        })
        .unwrap_or_default()
    }

    /// Waits up to 10 s for an element matching `css`.
    #[track_caller]
    pub fn find(&self, css: &str) -> Element {
        wait(Duration::from_secs(10), || self.try_find(css)).unwrap_or_else(|| {
            panic!(
                "no element '{css}' at {} within 10 s; page:\n{}",
                self.url(),
                self.source()
            )
        })
    }

    pub fn attr(&self, e: &Element, name: &str) -> Option<String> {
        self.cmd("GET", &format!("/element/{}/attribute/{name}", e.0), None)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
    }

    pub fn text(&self, e: &Element) -> String {
        self.must("GET", &format!("/element/{}/text", e.0), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Clears a field and types `text` into it.
    pub fn fill(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.must("POST", &format!("/element/{}/clear", e.0), Some(json!({})));
        self.type_into(&e, text);
    }

    pub fn type_into(&self, e: &Element, text: &str) {
        self.must(
            "POST",
            &format!("/element/{}/value", e.0),
            Some(json!({"text": text})),
        );
    }

    pub fn click(&self, css: &str) {
        let e = self.find(css);
        self.must("POST", &format!("/element/{}/click", e.0), Some(json!({})));
    }

    /// The currently focused element's `name` attribute (keyboard-first pages autofocus).
    pub fn focused_name(&self) -> Option<String> {
        let v = self.cmd("GET", "/element/active", None).ok()?;
        let e = Element(v[ELEMENT_KEY].as_str()?.to_string());
        self.attr(&e, "name")
    }

    /// A cookie as the browser holds it (HttpOnly ones too).
    pub fn cookie(&self, name: &str) -> Option<Value> {
        self.cmd("GET", &format!("/cookie/{name}"), None).ok()
    }

    /// Runs `script` (a function body; `return` gives the answer) in the page and gives its value.
    pub fn execute(&self, script: &str) -> Value {
        self.must(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// Saves a PNG of the viewport to `path`.
    pub fn screenshot(&self, path: &Path) {
        let b64 = self.must("GET", "/screenshot", None);
        let bytes = base64_decode(b64.as_str().unwrap_or_default());
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        std::fs::write(path, bytes).expect("writing the screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.cmd("DELETE", "", None);
    }
}

/// Standard base64 (what WebDriver's screenshot answers).
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter_map(val) {
        acc = (acc << 6) | c;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
