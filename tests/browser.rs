//! The browser, from `cargo test` (issue 17): the wasm suite (`tests/web.rs`: the kernels
//! against their references and one decode run per mode, in a WebGPU page) and the page itself
//! (`web/`: loaded headless, run with its defaults, and checked to reach the verdict that the
//! two modes agree bit for bit), both in headless Chromium through ChromeDriver.
//!
//! Needs Chromium, ChromeDriver (`CHROMEDRIVER`, else on PATH), the `wasm32-unknown-unknown`
//! target and `wasm-bindgen-cli` of Cargo.lock's wasm-bindgen version: `.ci/run` installs them
//! where missing. Without them the tests say what is missing and pass, except under `CI`, where
//! they fail. The page's screenshot goes to `target/web-page.png` (and to `ESS_WGPU_SCREENSHOT`
//! if set: how `docs/web-page.png` is made); `ESS_WGPU_PAGE_QUERY` sets more of the page's form
//! (`&preset=tiny-model&overlap=da`).

#![cfg(not(target_arch = "wasm32"))]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The two tests build into the same wasm32 target folder and share two cores: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// The tools the browser tests need, or what is missing with how to install it.
struct Tools {
    chromedriver: PathBuf,
}

impl Tools {
    fn find() -> Result<Tools, Vec<String>> {
        let mut missing = Vec::new();
        let on_path = |name: &str| -> Option<PathBuf> {
            let path = std::env::var_os("PATH")?;
            std::env::split_paths(&path)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        };
        let chromedriver = std::env::var_os("CHROMEDRIVER")
            .map(PathBuf::from)
            .or_else(|| on_path("chromedriver"));
        if chromedriver.is_none() || on_path("chromium").is_none() {
            missing
                .push("Chromium and ChromeDriver: apt-get install chromium chromium-driver".into());
        }
        let sysroot = Command::new("rustc").args(["--print", "sysroot"]).output();
        let has_target = sysroot.ok().is_some_and(|o| {
            let root = String::from_utf8_lossy(&o.stdout).trim().to_string();
            Path::new(&root)
                .join("lib/rustlib/wasm32-unknown-unknown")
                .is_dir()
        });
        if !has_target {
            missing.push("the wasm32 target: rustup target add wasm32-unknown-unknown".into());
        }
        let want = locked_version("wasm-bindgen");
        let have = Command::new("wasm-bindgen").arg("--version").output();
        let have = have
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        if have != format!("wasm-bindgen {want}") || on_path("wasm-bindgen-test-runner").is_none() {
            missing.push(format!(
                "wasm-bindgen-cli {want} (have: {}): cargo install wasm-bindgen-cli --version \
                 {want} --no-default-features",
                if have.is_empty() { "none" } else { &have }
            ));
        }
        match (chromedriver, missing.is_empty()) {
            (Some(chromedriver), true) => Ok(Tools { chromedriver }),
            _ => Err(missing),
        }
    }
}

/// A package's version in Cargo.lock.
fn locked_version(name: &str) -> String {
    let lock = std::fs::read_to_string(Path::new(ROOT).join("Cargo.lock")).expect("Cargo.lock");
    let entry = format!("name = \"{name}\"\nversion = \"");
    let at = lock.find(&entry).expect("the package in Cargo.lock") + entry.len();
    lock[at..].split('"').next().unwrap_or("").to_string()
}

/// The tools, or `None` after saying what is missing (a failure under CI).
fn tools() -> Option<Tools> {
    match Tools::find() {
        Ok(t) => Some(t),
        Err(missing) => {
            let what = missing.join("\n  ");
            if std::env::var_os("CI").is_some() {
                panic!("CI runs the browser tests, and this machine lacks:\n  {what}");
            }
            eprintln!(
                "browser tests not run: this machine lacks\n  {what}\n(.ci/run installs them)"
            );
            None
        }
    }
}

/// A command run to its end from the repository root; panics with its output if it fails.
fn run(what: &str, cmd: &mut Command) -> String {
    let t0 = Instant::now();
    let out = cmd
        .current_dir(ROOT)
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{text}",
        out.status
    );
    eprintln!("{what}: {:.0} s", t0.elapsed().as_secs_f64());
    text
}

#[test]
fn browser_suite_passes_in_headless_chromium() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(tools) = tools() else { return };
    let out = run(
        "the browser suite (cargo test --target wasm32-unknown-unknown --test web)",
        Command::new(cargo())
            .args([
                "test",
                "--target",
                "wasm32-unknown-unknown",
                "--test",
                "web",
            ])
            .env("CHROMEDRIVER", &tools.chromedriver)
            .env("WASM_BINDGEN_TEST_TIMEOUT", "300"),
    );
    let summary = out
        .lines()
        .filter(|l| l.starts_with("test "))
        .collect::<Vec<_>>();
    eprintln!("{}", summary.join("\n"));
    assert!(
        out.contains("test result: ok. 5 passed"),
        "expected the browser suite's 5 tests to pass:\n{out}"
    );
}

#[test]
fn the_page_reaches_a_verdict_in_headless_chromium() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(tools) = tools() else { return };
    run(
        "the page's WebAssembly (PROFILE=test web/build.sh)",
        Command::new("bash")
            .arg("web/build.sh")
            .env("PROFILE", "test"),
    );
    let server = ess_wgpu::serve::Server::bind(&Path::new(ROOT).join("web"), 0).expect("serve");
    // ESS_WGPU_PAGE_QUERY: more of the form's fields (`&preset=tiny-model&overlap=da`)
    let more = std::env::var("ESS_WGPU_PAGE_QUERY").unwrap_or_default();
    let page = format!("http://127.0.0.1:{}/?autorun{more}", server.port());
    std::thread::spawn(move || server.run());

    let driver = Driver::start(&tools.chromedriver);
    let session = driver.session();
    driver.post(&session, "url", serde_json::json!({ "url": page }));
    // the defaults: tiny preset, 4 sequences of 1024 tokens, 16 steps per mode
    let t0 = Instant::now();
    let (state, text) = loop {
        let v = driver.post(
            &session,
            "execute/sync",
            serde_json::json!({
                "script": "const v = document.getElementById('verdict'); \
                           return [v.dataset.state, v.textContent];",
                "args": []
            }),
        );
        let state = v[0].as_str().unwrap_or("").to_string();
        if ["identical", "differ", "error"].contains(&state.as_str()) {
            break (state, v[1].as_str().unwrap_or("").to_string());
        }
        if t0.elapsed() > Duration::from_secs(300) {
            panic!(
                "no verdict after 5 minutes (state {state:?}); the page's console:\n{}",
                driver.console(&session)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!("the page: {text} ({:.0} s)", t0.elapsed().as_secs_f64());
    if state != "identical" {
        eprintln!("the page's console:\n{}", driver.console(&session));
    }
    // the whole page in the picture
    let height = driver.post(
        &session,
        "execute/sync",
        serde_json::json!({ "script": "return document.documentElement.scrollHeight;", "args": [] }),
    );
    let height = height.as_u64().unwrap_or(2000).clamp(800, 6000);
    driver.post(
        &session,
        "window/rect",
        serde_json::json!({ "width": 1280, "height": height + 140 }),
    );
    let png = base64(driver.get(&session, "screenshot").as_str().unwrap_or(""));
    let shot = Path::new(ROOT).join("target/web-page.png");
    std::fs::write(&shot, &png).expect("screenshot written");
    if let Some(path) = std::env::var_os("ESS_WGPU_SCREENSHOT") {
        std::fs::write(path, &png).expect("screenshot written");
    }
    driver.delete(&session);
    assert_eq!(state, "identical", "the page's verdict: {text}");
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
}

/// ChromeDriver on a free port, ended with the test.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    fn start(chromedriver: &Path) -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let driver = Driver { child, port };
        let t0 = Instant::now();
        while driver.request("GET", "/status", None).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "chromedriver never answered"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        driver
    }

    /// A headless Chromium with WebGPU on its software adapter: `webdriver.json`'s flags (the
    /// ones the browser suite runs with).
    fn session(&self) -> String {
        let caps: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(Path::new(ROOT).join("webdriver.json"))
                .expect("webdriver.json"),
        )
        .expect("webdriver.json is JSON");
        let mut caps = caps;
        caps["goog:loggingPrefs"] = serde_json::json!({ "browser": "ALL" });
        let body = serde_json::json!({ "capabilities": { "alwaysMatch": caps } });
        let v = self
            .request("POST", "/session", Some(body))
            .expect("a session");
        v["sessionId"].as_str().expect("a session id").to_string()
    }

    fn post(&self, session: &str, what: &str, body: serde_json::Value) -> serde_json::Value {
        self.request("POST", &format!("/session/{session}/{what}"), Some(body))
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    fn get(&self, session: &str, what: &str) -> serde_json::Value {
        self.request("GET", &format!("/session/{session}/{what}"), None)
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// The page's console messages so far (ChromeDriver's browser log).
    fn console(&self, session: &str) -> String {
        let log = self.request(
            "POST",
            &format!("/session/{session}/se/log"),
            Some(serde_json::json!({ "type": "browser" })),
        );
        match log {
            Ok(v) => (v.as_array().into_iter().flatten())
                .map(|e| format!("  {} {}", e["level"], e["message"]))
                .collect::<Vec<_>>()
                .join("\n"),
            Err(e) => format!("  (no log: {e})"),
        }
    }

    fn delete(&self, session: &str) {
        let _ = self.request("DELETE", &format!("/session/{session}"), None);
    }

    /// One WebDriver request; its `value`, or the error it reported.
    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .map_err(|e| e.to_string())?;
        let body = read_response(&mut s)?;
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        match v["value"].get("error") {
            Some(e) => Err(format!("{e}: {}", v["value"]["message"])),
            None => Ok(v["value"].clone()),
        }
    }
}

/// An HTTP response's body, by its Content-Length (ChromeDriver keeps the connection open).
fn read_response(s: &mut TcpStream) -> Result<String, String> {
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before the whole response".into());
        }
        raw.extend_from_slice(&buf[..n]);
        let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .ok_or_else(|| format!("no Content-Length in {head}"))?;
        if raw.len() >= end + 4 + len {
            return Ok(String::from_utf8_lossy(&raw[end + 4..][..len]).into_owned());
        }
    }
}

/// Standard base64 (the screenshot WebDriver returns).
fn base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let sextets: Vec<u8> = text.bytes().filter_map(value).collect();
    sextets
        .chunks(4)
        .flat_map(|c| {
            let n = c.iter().fold(0u32, |a, &s| a << 6 | s as u32) << (6 * (4 - c.len()));
            let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            bytes.into_iter().take(c.len() * 3 / 4)
        })
        .collect()
}
