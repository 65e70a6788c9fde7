//! Headless Chromium driven through chromedriver's W3C WebDriver protocol (plain JSON over
//! HTTP, so no client crate is needed). scripts/test installs Debian's chromium and
//! chromium-driver.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Whether the browser tests can run; without chromedriver they fail, unless
/// SPAWNER_SKIP_BROWSER=1 says to skip them.
pub fn available() -> bool {
    let found = Command::new("chromedriver")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found && std::env::var("SPAWNER_SKIP_BROWSER").is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED: chromedriver not found and SPAWNER_SKIP_BROWSER=1");
        return false;
    }
    assert!(
        found,
        "chromedriver not found: scripts/test installs Debian's chromium and chromium-driver \
         (apt-get install chromium chromium-driver), or set SPAWNER_SKIP_BROWSER=1 to skip"
    );
    true
}

/// The script of [`Browser::shown`]: the element `arguments[0]` is laid out, with a size.
const SHOWN: &str = "const e = document.querySelector(arguments[0]); \
     if (!e || !e.getClientRects().length) return false; \
     const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0;";

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn start() -> Browser {
        Self::start_with(&[]).await
    }

    /// Chromium with `extra` arguments too (`--host-resolver-rules=MAP attacker.test
    /// 127.0.0.1`: a name of another site that reaches a server of the test).
    pub async fn start_with(extra: &[String]) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = http.get(format!("{base}/status")).send().await;
            if let Ok(r) = ready {
                let v: Value = r.json().await.unwrap_or(Value::Null);
                if v["value"]["ready"] == true {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().expect("profile dir");
        let mut args: Vec<String> = [
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--window-size=1100,760",
            "--hide-scrollbars",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        args.extend(extra.iter().cloned());
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": args }
        }}});
        let resp: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("session json");
        let session = resp["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {resp}"))
            .to_string();
        Browser {
            driver,
            base,
            session,
            http,
            _profile: profile,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp: Value = req
            .send()
            .await
            .expect("webdriver call")
            .json()
            .await
            .expect("webdriver json");
        if resp["value"]["error"].is_string() {
            panic!("webdriver {path}: {}", resp["value"]);
        }
        resp["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    pub async fn js(&self, script: &str, args: Value) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Runs `script` as an async function body: its `return` may be a promise, whose value
    /// is returned.
    pub async fn js_async(&self, script: &str, args: Value) -> Value {
        let wrapped = format!(
            "const done = arguments[arguments.length - 1];\
             (async (...args) => {{ {script} }})(...Array.from(arguments).slice(0, -1))\
             .then(done, (e) => done({{error: String(e)}}));"
        );
        self.call(
            reqwest::Method::POST,
            "/execute/async",
            Some(json!({"script": wrapped, "args": args})),
        )
        .await
    }

    /// Runs `script` (as [`Browser::js`]) in the `index`th frame of the page, whatever its
    /// origin, then comes back to the page.
    pub async fn js_in_frame(&self, index: u64, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/frame",
            Some(json!({ "id": index })),
        )
        .await;
        let v = self.js(script, json!([])).await;
        self.call(reqwest::Method::POST, "/frame", Some(json!({ "id": null })))
            .await;
        v
    }

    async fn element(&self, css: &str) -> String {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    /// Waits until `css` is on view (a view is shown after the hash changes, a moment after
    /// the click that changed it).
    async fn visible(&self, css: &str) {
        self.wait_for(
            &format!("{css} on view"),
            "const e = document.querySelector(arguments[0]); return !!e && e.getClientRects().length > 0;",
            json!([css]),
        )
        .await;
    }

    pub async fn click(&self, css: &str) {
        self.visible(css).await;
        let e = self.element(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Types `text` into the input `css`, as a user would.
    pub async fn type_into(&self, css: &str, text: &str) {
        self.visible(css).await;
        let e = self.element(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/clear"),
            Some(json!({})),
        )
        .await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// The text of the first element matching `css`, or null.
    pub async fn text(&self, css: &str) -> Value {
        self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
            json!([css]),
        )
        .await
    }

    /// Waits (bounded) until `script` returns something truthy in the page; returns it.
    pub async fn wait_for(&self, what: &str, script: &str, args: Value) -> Value {
        let deadline = Instant::now() + crate::common::PATIENCE;
        loop {
            let v = self.js(script, args.clone()).await;
            if !(v.is_null() || v == false || v == "" || v == 0) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "the page never showed {what}; body: {}",
                self.text("main").await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the element `css` has the text `want`.
    pub async fn wait_text(&self, css: &str, want: &str) {
        self.wait_for(
            &format!("{css} = {want:?}"),
            "const e = document.querySelector(arguments[0]); return !!e && e.textContent.trim() === arguments[1];",
            json!([css, want]),
        )
        .await;
    }

    /// Resizes the window (the page's layout at a phone's width, say); returns the width
    /// the page then has (`innerWidth`).
    pub async fn set_window_size(&self, width: u32, height: u32) -> u64 {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        )
        .await;
        self.js("return window.innerWidth;", json!([]))
            .await
            .as_u64()
            .unwrap_or_default()
    }

    /// Whether `css` is on view: laid out, with a size.
    pub async fn shown(&self, css: &str) -> bool {
        self.js(SHOWN, json!([css])).await == true
    }

    /// Waits until `css` is on view (see [`Self::shown`]): what appears once a fetch answers.
    pub async fn wait_shown(&self, css: &str) {
        self.wait_for(&format!("{css} on view"), SHOWN, json!([css]))
            .await;
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64"))
            .expect("png")
    }
}

impl Drop for Browser {
    /// Ends the session (chromedriver then closes Chromium), then stops chromedriver.
    fn drop(&mut self) {
        use std::io::{Read, Write};
        let addr = self.base.trim_start_matches("http://").to_string();
        if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                s,
                "DELETE /session/{} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.session
            );
            // Until the whole answer is in (chromedriver answers once Chromium has quit),
            // not until the connection closes: chromedriver keeps it open, and reading to
            // the end waited out the 10 s timeout for every browser.
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = s.read(&mut buf) {
                seen.extend_from_slice(&buf[..n]);
                if answered(&seen) {
                    break;
                }
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Whether `bytes` hold a whole HTTP response: its head and as much body as its
/// `Content-Length` says (none without one).
fn answered(bytes: &[u8]) -> bool {
    let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    bytes.len() >= end + 4 + length
}
