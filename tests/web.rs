//! The live web view (`vmm run --web`, issue 19) on the real VMM and guest,
//! driven in real headless Chromium through chromedriver's WebDriver
//! protocol (plain HTTP and JSON): the page-table explorer shows the
//! `cow` program's copy-on-write pages read-only in both processes after
//! the fork, and the child's written page writable on a frame of its own
//! after its write, while the parent's stays read-only on the old frame;
//! the physical map's counts equal `--inspect physmap`'s at the same stop.
//! The page's log lists the child's copy-on-write faults one by one (the
//! guest's fault ring) at the addresses it wrote, as `/api/faults` does.
//! A screenshot is kept as CI's artefact at
//! `target/artefacts/web/cow-child-wrote.png` (checked: a PNG of the
//! page's size). The API's errors are tested with plain HTTP, and its
//! answers through `jq`.
//!
//! Without chromium and chromedriver the browser test is skipped with a
//! loud message, except in CI (`CI=true`), where it fails.

mod common;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bounds every wait: far above what anything takes, even under load.
const WAIT: Duration = Duration::from_secs(180);

/// One HTTP/1.1 request with `Connection: close`: (status, body).
fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    try_http(addr, method, path, body).unwrap_or_else(|e| panic!("{method} http://{addr}{path}: {e}"))
}

fn try_http(addr: &str, method: &str, path: &str, body: Option<&str>) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(WAIT))?;
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())?;
    // Read the head, then as many bytes as Content-Length says (some
    // servers keep the connection open despite `Connection: close`), or
    // to the end.
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(h) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..h]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:").and_then(|v| v.trim().parse::<usize>().ok()));
            if len.is_some_and(|n| raw.len() >= h + 4 + n) {
                break;
            }
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    Ok(parse_response(&raw))
}

fn parse_response(raw: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(raw);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let chunked =
        head.lines().any(|l| l.to_ascii_lowercase().replace(' ', "").starts_with("transfer-encoding:chunked"));
    if !chunked {
        return (status, rest.to_string());
    }
    let (mut out, mut r) = (String::new(), rest);
    while let Some((len, tail)) = r.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        r = tail[n..].trim_start_matches("\r\n");
    }
    (status, out)
}

fn get_json(addr: &str, path: &str) -> (u16, Value) {
    let (st, b) = http(addr, "GET", path, None);
    (st, serde_json::from_str(&b).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {b}")))
}

/// A running `vmm run --web`, its stderr collected.
struct Vmm {
    child: Child,
    addr: String,
    stderr: Arc<Mutex<String>>,
}

impl Vmm {
    fn start(args: &[&str]) -> Vmm {
        let mut a = vec!["run", "--timeout", "240", "--web", "127.0.0.1:0", "--web-wait"];
        a.extend_from_slice(args);
        let mut child = Command::new(common::vmm_path())
            .args(&a)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vmm");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let err = child.stderr.take().unwrap();
        let collected = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                {
                    let mut c = collected.lock().unwrap();
                    c.push_str(&line);
                    c.push('\n');
                }
                if let Some(rest) = line.strip_prefix("vmm: web view at http://") {
                    let _ = tx.send(rest.split('/').next().unwrap_or("").to_string());
                }
            }
        });
        let addr = rx.recv_timeout(WAIT).unwrap_or_else(|_| panic!("no URL printed: {}", stderr.lock().unwrap()));
        assert!(
            stderr.lock().unwrap().contains("(loopback only;"),
            "the VMM says it binds to loopback: {}",
            stderr.lock().unwrap()
        );
        Vmm { child, addr, stderr }
    }

    fn state(&self) -> Value {
        get_json(&self.addr, "/api/state").1
    }

    /// Waits for the run to end; its exit status.
    fn wait(&mut self) -> i32 {
        let t = Instant::now();
        while t.elapsed() < WAIT {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code().unwrap_or(-1);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the VMM did not end: {}", self.stderr.lock().unwrap());
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while t.elapsed() < WAIT {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// A WebDriver session on chromedriver, which this test started.
struct Browser {
    driver: Child,
    addr: String,
    session: String,
    _profile: tempdir::Dir,
}

mod tempdir {
    /// A directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new(name: &str) -> Dir {
            let p = std::env::temp_dir().join(format!("mmemu-web-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A child process killed when dropped.
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        // Killed if anything below fails, as Browser's drop kills it after.
        let mut driver = KillOnDrop(Some(driver));
        let addr = format!("127.0.0.1:{port}");
        wait_until("chromedriver", || {
            try_http(&addr, "GET", "/status", None)
                .ok()
                .and_then(|(_, b)| serde_json::from_str::<Value>(&b).ok())
                .is_some_and(|v| v["value"]["ready"] == Value::Bool(true))
        });
        // One profile per browser: two Chromiums on one profile (tests run
        // in parallel) hand their windows to each other.
        static BROWSERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = BROWSERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let profile = tempdir::Dir::new(&format!("profile-{n}"));
        // As the machine's notes say Chromium runs here: as root, headless,
        // no background networking, a fresh profile.
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--window-size=1280,1600", format!("--user-data-dir={}", profile.0.display())]}}}});
        let (st, b) = http(&addr, "POST", "/session", Some(&caps.to_string()));
        let v: Value = serde_json::from_str(&b).unwrap_or(Value::Null);
        let session = v["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session ({st}): {b}")).to_string();
        Browser { driver: driver.0.take().expect("the driver"), addr, session, _profile: profile }
    }

    fn cmd(&self, method: &str, path: &str, body: Value) -> Value {
        let p = format!("/session/{}{path}", self.session);
        let b = (method == "POST").then(|| body.to_string());
        let (st, text) = http(&self.addr, method, &p, b.as_deref());
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{p}: {text}"));
        assert_eq!(st, 200, "WebDriver {method} {p}: {text}");
        v["value"].clone()
    }

    fn goto(&self, url: &str) {
        self.cmd("POST", "/url", json!({ "url": url }));
    }

    fn script(&self, js: &str) -> Value {
        self.cmd("POST", "/execute/sync", json!({"script": js, "args": []}))
    }

    fn find(&self, css: &str) -> String {
        let v = self.cmd("POST", "/element", json!({"using": "css selector", "value": css}));
        v[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}: {v}")).to_string()
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("/element/{e}/click"), json!({}));
    }

    fn text(&self, css: &str) -> String {
        let e = self.find(css);
        self.cmd("GET", &format!("/element/{e}/text"), json!({})).as_str().unwrap_or("").to_string()
    }

    fn attr(&self, css: &str, name: &str) -> String {
        let e = self.find(css);
        self.cmd("GET", &format!("/element/{e}/attribute/{name}"), json!({})).as_str().unwrap_or("").to_string()
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("/element/{e}/clear"), json!({}));
        self.cmd("POST", &format!("/element/{e}/value"), json!({ "text": text }));
    }

    /// Saves a screenshot of the page at `path` and checks the file: a
    /// PNG (signature, then the IHDR chunk) whose size is the viewport's
    /// in device pixels, with image data.
    fn screenshot(&self, path: &std::path::Path) {
        let b64 = self.cmd("GET", "/screenshot", json!({}));
        let png = decode_base64(b64.as_str().unwrap());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, &png).unwrap();
        let png = std::fs::read(path).unwrap();
        assert!(png.len() > 1000, "{}: {} bytes", path.display(), png.len());
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{}: a PNG's signature", path.display());
        assert_eq!(&png[12..16], b"IHDR", "the first chunk is IHDR");
        let be = |o: usize| u32::from_be_bytes(png[o..o + 4].try_into().unwrap()) as u64;
        let (w, h) = (be(16), be(20));
        let view = self.script("return [Math.round(window.innerWidth * window.devicePixelRatio), Math.round(window.innerHeight * window.devicePixelRatio)]");
        assert_eq!(json!([w, h]), view, "the PNG is the page's viewport");
        assert!(w >= 800 && h >= 600, "{w}x{h}: the window asked for is 1280x1600");
        assert!(png.windows(4).any(|c| c == b"IDAT") && png.ends_with(b"IEND\xaeB`\x82"), "image data and an end");
    }

    /// The page's own figures (`window.mmemu`).
    fn stats(&self) -> Value {
        self.script("return JSON.parse(JSON.stringify(window.mmemu))")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let p = format!("/session/{}", self.session);
        let _ = std::panic::catch_unwind(|| http(&self.addr, "DELETE", &p, None));
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn decode_base64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let bits: Vec<u8> = s.bytes().filter_map(val).collect();
    let mut out = Vec::with_capacity(bits.len() * 3 / 4);
    for c in bits.chunks(4) {
        let n = c.iter().enumerate().fold(0u32, |n, (i, &v)| n | (v as u32) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..c.len()]);
    }
    out
}

/// Whether the browser test can run here; in CI it must.
fn chromium_present() -> bool {
    let have = |p: &str| Command::new(p).arg("--version").output().is_ok_and(|o| o.status.success());
    if have("/usr/bin/chromium") && have("chromedriver") {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "CI=true but chromium or chromedriver cannot run: .ci/run installs Debian's chromium and chromium-driver"
        );
    }
    eprintln!("\n*** SKIPPED: tests/web.rs browser test: chromium and chromedriver are not installed (apt-get install chromium chromium-driver) ***\n");
    false
}

/// Clicks "Run to next checkpoint" until the page says the guest is
/// held at `name`, and the page has fetched its views for that stop.
fn step_to(b: &Browser, vmm: &Vmm, name: &str) {
    let want = format!("paused at '{name}'");
    for _ in 0..20 {
        if b.text("#state") == want {
            break;
        }
        let seq = vmm.state()["seq"].as_u64().unwrap();
        b.click("#step");
        wait_until("the next stop", || {
            let s = vmm.state();
            s["state"] == "paused" && s["seq"].as_u64().unwrap() > seq || s["state"] == "ended"
        });
        wait_until("the page to show the stop", || {
            b.text("#state").starts_with("paused at") || b.text("#state") == "ended"
        });
    }
    assert_eq!(b.text("#state"), want, "{}", vmm.stderr.lock().unwrap());
    wait_until("the page's views of this stop", || {
        let s = b.stats();
        s["refreshed"].as_u64().is_some() && s["refreshed"] == s["seq"]
    });
}

/// Picks `root` in the address-space menu and waits for its VMAs and
/// ranges.
fn choose_root(b: &Browser, root: &str) {
    b.click(&format!("#root option[value='{root}']"));
    if root != "kernel" {
        wait_until("the VMAs", || b.text("#vmas").starts_with(&format!("pid {root}:")));
        wait_until("the mapped ranges", || b.text("#ranges").starts_with(&format!("pid {root}:")));
    }
}

/// The rows of a table on the page, as text cells (the header left out).
fn table_rows(b: &Browser, css: &str) -> Vec<Vec<String>> {
    let v = b.script(&format!(
        "return [...document.querySelectorAll('{css} tr')].slice(1).map(r => [...r.children].map(c => c.textContent))"
    ));
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect())
        .collect()
}

/// Reveals `va` in the tree (Walk and reveal) and returns the selected
/// leaf's row: (writable, frame, text).
fn reveal(b: &Browser, va: u64) -> (bool, String, String) {
    let hex = format!("{va:#x}");
    b.script("document.querySelectorAll('.ent.sel').forEach(e => e.classList.remove('sel')); window.mmemu.walk = null; return 0");
    b.type_into("#va", &hex);
    b.click("#reveal");
    wait_until("the revealed leaf", || {
        b.script(&format!("return !!document.querySelector('.ent.sel[data-va=\"{hex}\"]') && !!window.mmemu.walk"))
            == Value::Bool(true)
    });
    let css = format!(".ent.sel[data-va=\"{hex}\"]");
    assert_eq!(b.attr(&css, "data-kind"), "leaf");
    let text = b.text(&css);
    let w = b.attr(&css, "data-w") == "true";
    // The walk panel agrees with the row.
    let walk = b.text("#walk");
    assert!(walk.contains(if w { "effective: writable" } else { "effective: read-only" }), "{walk}");
    assert!(walk.contains("page descriptor"), "{walk}");
    (w, b.attr(&css, "data-target"), text)
}

/// The page's physical-map legend: class -> frames.
fn page_counts(b: &Browser) -> serde_json::Map<String, Value> {
    let v = b.script(
        "const m = {}; for (const r of document.querySelectorAll('#pm-counts tr[data-class]')) m[r.dataset.class] = Number(r.querySelector('td.n').textContent); return m",
    );
    v.as_object().cloned().unwrap()
}

#[test]
fn page_table_explorer_shows_cow_and_physmap_matches_inspect() {
    if !chromium_present() {
        return;
    }
    let hexv = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
    let json_out = common::TempFile::absent("web-inspect.json");
    let svg_dir = tempdir::Dir::new("physmap");
    let physmap_arg = format!("physmap:{}", svg_dir.0.display());
    let json_arg = format!("--json={}", json_out.path());
    let mut vmm = Vmm::start(&[
        "--cmdline",
        "selftest=process",
        "--inspect-at",
        "cow-shared,cow-child-wrote",
        "--inspect",
        &format!("{physmap_arg},vmas,buddyinfo,vmstat"),
        &json_arg,
    ]);
    let b = Browser::start();
    b.goto(&format!("http://{}/", vmm.addr));
    wait_until("the page to connect", || b.stats()["connected"] == Value::Bool(true));
    assert_eq!(b.text("#state"), "paused at 'pause'", "--web-wait holds the guest at the start");

    step_to(&b, &vmm, "cow-shared");
    // The two `cow` processes, from the page's process table.
    let rows = b.script(
        "return [...document.querySelectorAll('#ps tr[data-pid]')].map(r => [...r.children].map(c => c.textContent))",
    );
    let cows: Vec<&Vec<Value>> =
        rows.as_array().unwrap().iter().filter_map(|r| r.as_array()).filter(|r| r[6] == "cow").collect();
    assert_eq!(cows.len(), 2, "{rows}");
    let parent = cows.iter().find(|r| r[1] == "0").unwrap()[0].as_str().unwrap().to_string();
    let child = cows.iter().find(|r| r[1] == parent.as_str()).unwrap()[0].as_str().unwrap().to_string();

    // `cow`'s 64-page private mapping `a`: the parent has not written it
    // since the fork, so it is one read-only range of 64 pages there (the
    // child may already have run and copied a page or two).
    choose_root(&b, &parent);
    let ranges = b.script(
        "return [...document.querySelectorAll('#ranges tr')].slice(1).map(r => [...r.children].map(c => c.textContent))",
    );
    let area = ranges
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r.as_array())
        .find(|r| r[2].as_str().unwrap().parse::<u64>().unwrap() == 64 && r[3].as_str().unwrap() == "r-- user")
        .unwrap_or_else(|| panic!("no read-only range of 64 pages in the parent: {ranges}"))
        .clone();
    let va = u64::from_str_radix(area[0].as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
    // The parent's VMAs on the page: the guest's list with Rss and Swap,
    // row for row what `--inspect vmas` printed at this stop; the COW area
    // lies in one private writable anonymous VMA with its 64 pages resident.
    let page_vmas = table_rows(&b, "#vmas");
    let inspected_vmas: Vec<Value> = std::fs::read_to_string(json_out.path())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &Value| v["view"] == "vmas" && v["checkpoint"] == "cow-shared")
        .collect();
    assert_eq!(inspected_vmas.len(), 1, "one vmas view at cow-shared");
    let cli_parent = inspected_vmas[0]["data"]["procs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"].as_u64().map(|n| n.to_string()).as_deref() == Some(parent.as_str()))
        .unwrap_or_else(|| panic!("the parent in --inspect vmas: {}", inspected_vmas[0]))
        .clone();
    let cli_rows: Vec<Vec<String>> = cli_parent["vmas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            ["start", "end", "perms", "kind", "name", "size_kb", "rss_kb", "swap_kb", "huge_kb"]
                .iter()
                .map(|k| v[k].as_str().map_or_else(|| v[k].to_string(), str::to_string))
                .chain([if v["thp_eligible"] == true { "yes" } else { "-" }.to_string()])
                .collect()
        })
        .collect();
    assert_eq!(page_vmas, cli_rows, "the page's VMAs against --inspect vmas at the same stop");
    let cow_vma = page_vmas
        .iter()
        .find(|r| hexv(&r[0]) <= va && va < hexv(&r[1]))
        .unwrap_or_else(|| panic!("no VMA holds {va:#x}: {page_vmas:?}"));
    assert_eq!((cow_vma[2].as_str(), cow_vma[3].as_str()), ("rw-p", "anon"), "{cow_vma:?}");
    assert!(cow_vma[6].parse::<u64>().unwrap() >= 64 * 4, "the 64 touched pages are resident: {cow_vma:?}");
    // Page 32, which the child never writes: shared read-only by both.
    let shared = va + 32 * 4096;
    let (w, parent_frame0, text) = reveal(&b, va);
    assert!(!w, "the parent's COW page is read-only after the fork: {text}");
    assert!(text.contains("ro"), "{text}");
    let (w, parent_frame, text) = reveal(&b, shared);
    assert!(!w, "the parent's COW page is read-only after the fork: {text}");
    choose_root(&b, &child);
    let (w, child_frame, text) = reveal(&b, shared);
    assert!(!w, "the child's COW page is read-only after the fork: {text}");
    assert!(text.contains("ro"), "{text}");
    assert_eq!(parent_frame, child_frame, "one frame shared copy-on-write");

    // The physical map's counts equal --inspect physmap's at this stop.
    wait_until("the physical map", || !page_counts(&b).is_empty());
    let counts = page_counts(&b);
    let inspected: Vec<Value> = std::fs::read_to_string(json_out.path())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &Value| v["view"] == "physmap" && v["checkpoint"] == "cow-shared")
        .collect();
    assert_eq!(inspected.len(), 1, "one physmap view at cow-shared");
    let frames = inspected[0]["data"]["frames"].as_object().unwrap().clone();
    assert!(frames.len() > 5, "{frames:?}");
    assert_eq!(counts, frames, "the page's counts against --inspect physmap's");

    // The charts plot what the guest reported at this stop: the latest
    // point of each line is --inspect's figure at the same checkpoint
    // (free blocks per order summed over the zones; the plotted vmstat
    // counters).
    let view = |name: &str| -> Value {
        let all: Vec<Value> = std::fs::read_to_string(json_out.path())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|v| v["view"] == name && v["checkpoint"] == "cow-shared")
            .collect();
        assert_eq!(all.len(), 1, "one {name} view at cow-shared");
        all[0]["data"].clone()
    };
    let zones = view("buddyinfo")["zones"].as_array().unwrap().clone();
    let orders = zones.iter().map(|z| z["free"].as_array().unwrap().len()).max().unwrap();
    let want_buddy: Vec<String> = (0..orders)
        .map(|o| format!("order {o}: {}", zones.iter().map(|z| z["free"][o].as_u64().unwrap_or(0)).sum::<u64>()))
        .collect();
    let counters = view("vmstat")["counters"].as_array().unwrap().clone();
    let counter = |n: &str| counters.iter().find(|c| c["name"] == n).and_then(|c| c["value"].as_u64());
    let legend = |svg: &str| -> Vec<String> {
        let v = b.script(&format!(
            "return [...document.querySelectorAll('#{svg} text')].map(t => t.textContent).filter(t => t.includes(': '))"
        ));
        v.as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect()
    };
    wait_until("the free-pages chart at this stop", || legend("buddy-chart") == want_buddy);
    let lines = b.script("return document.querySelectorAll('#buddy-chart polyline').length");
    assert_eq!(lines, json!(orders), "one line per order");
    let vm = legend("vm-chart");
    assert!(!vm.is_empty(), "the vmstat chart plots its default counters");
    for l in &vm {
        let (name, value) = l.split_once(": ").unwrap();
        assert_eq!(
            Some(value.parse::<u64>().unwrap()),
            counter(name),
            "the vmstat chart's {l} against --inspect vmstat"
        );
    }

    // The physical map zooms out to the whole 1 TiB space (RAM a sliver
    // at its start, the rest hole) and in again 8x at a click.
    b.click("#pm-space");
    wait_until("the 1 TiB map", || b.text("#pm-range").starts_with("0x0..0x10000000000"));
    b.click("#pm-all");
    wait_until("the map of RAM", || !b.text("#pm-range").starts_with("0x0..0x10000000000"));
    let whole = b.text("#pm-range");
    b.click("#pm");
    wait_until("a closer map", || b.text("#pm-range") != whole);
    let span = |t: &str| -> u64 {
        let r = t.split_whitespace().next().unwrap();
        let (a, z) = r.split_once("..").unwrap();
        hexv(z) - hexv(a)
    };
    assert_eq!(span(&b.text("#pm-range")) * 8, span(&whole), "8x closer: {} then {whole}", b.text("#pm-range"));
    b.click("#pm-out");
    wait_until("zoomed out again", || span(&b.text("#pm-range")) == span(&whole));

    // After the child's writes (pages 0..16): its page 0 is its own copy,
    // writable, on a new frame; the parent's stays read-only on its old
    // frame; page 32 is still one frame shared read-only by both.
    step_to(&b, &vmm, "cow-child-wrote");
    choose_root(&b, &child);
    let (w, child_new, text) = reveal(&b, va);
    assert!(w, "the child's written page is writable after its COW fault: {text}");
    assert_ne!(child_new, parent_frame0, "the child's copy is a new frame");
    let (w, child32, text) = reveal(&b, shared);
    assert!(!w, "the child's page 32 (not written) is still read-only: {text}");
    choose_root(&b, &parent);
    let (w, parent_after, text) = reveal(&b, va);
    assert!(!w, "the parent's page is still read-only after the child's write: {text}");
    assert_eq!(parent_after, parent_frame0, "the parent keeps the old frame");
    let (w, parent32, _) = reveal(&b, shared);
    assert!(!w);
    assert_eq!(
        (parent32.as_str(), child32.as_str()),
        (child_frame.as_str(), child_frame.as_str()),
        "page 32 is still shared"
    );

    // The page's log lists the child's copy-on-write faults one by one:
    // exactly pages 0..16 of the area (the ones it wrote), each a write
    // that ended well; the parent has none there. The API agrees.
    let page_faults = |pid: &str, kind: &str| -> Vec<u64> {
        let v = b.script(&format!(
            "return [...document.querySelectorAll('#log li.fault[data-pid=\"{pid}\"][data-kind=\"{kind}\"]')].map(l => [l.dataset.addr, l.dataset.result, l.textContent])"
        ));
        let mut a: Vec<u64> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                assert_eq!(l[1], "ok", "{l}");
                assert!(l[2].as_str().unwrap().contains(" write "), "a COW fault is a write: {l}");
                hexv(l[0].as_str().unwrap())
            })
            .filter(|a| (va..va + 64 * 4096).contains(a))
            .collect();
        a.sort_unstable();
        a
    };
    let written: Vec<u64> = (0..16).map(|i| va + i * 4096).collect();
    assert_eq!(page_faults(&child, "cow"), written, "the child's COW faults in the page's log: {}", b.text("#log"));
    assert_eq!(page_faults(&parent, "cow"), Vec::<u64>::new(), "the parent wrote nothing since the fork");
    let (st, api) = get_json(&vmm.addr, &format!("/api/faults?pid={child}"));
    assert_eq!(st, 200, "{api}");
    let mut cow: Vec<u64> = api["faults"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "cow" && f["write"] == true && f["result"] == "ok")
        .map(|f| hexv(f["addr"].as_str().unwrap()))
        .filter(|a| (va..va + 64 * 4096).contains(a))
        .collect();
    cow.sort_unstable();
    assert_eq!(cow, written, "GET /api/faults?pid={child}: {api}");
    assert!(
        api["faults"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["pid"].as_u64().map(|p| p.to_string()) == Some(child.clone())),
        "pid= filters: {api}"
    );

    // The screenshot kept as CI's artefact (.ci/run lists it).
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("artefacts/web/cow-child-wrote.png");
    b.screenshot(&shot);
    eprintln!("web: screenshot at {} ({} bytes)", shot.display(), std::fs::metadata(&shot).unwrap().len());
    // And the log with those faults, scrolled into view.
    b.script("document.getElementById('p-log').scrollIntoView(); return 0");
    let shot = shot.with_file_name("cow-child-wrote-log.png");
    b.screenshot(&shot);
    eprintln!("web: screenshot at {} ({} bytes)", shot.display(), std::fs::metadata(&shot).unwrap().len());

    // Bytes per update beside their peers, for README's results: the same
    // updates with every vmstat counter instead of the changed ones (the
    // VMM's count), and the whole physical map as the page fetches it.
    let st = vmm.state();
    let (sent, bytes, full) = (
        st["updates_sent"].as_u64().unwrap(),
        st["update_bytes"].as_u64().unwrap(),
        st["update_full_bytes"].as_u64().unwrap(),
    );
    assert!(sent > 0 && bytes <= full, "{st}");
    let map_bytes = http(&vmm.addr, "GET", "/api/physmap?cells=8192", None).1.len();
    eprintln!(
        "web: {sent} updates so far, {} bytes each on average; with every counter instead of the changed ones: {} bytes; the whole physical map (8192 cells): {map_bytes} bytes",
        bytes / sent,
        full / sent
    );

    b.click("#resume");
    assert_eq!(vmm.wait(), 0, "the selftests pass under the web view: {}", vmm.stderr.lock().unwrap());
    // The page keeps what it received after the VMM is gone: the figures
    // of every update of the run (README, "Live web view (issue 19)").
    let s = b.stats();
    let lat: Vec<u64> = s["latencies"].as_array().unwrap().iter().filter_map(Value::as_u64).collect();
    let sizes: Vec<u64> = s["sizes"].as_array().unwrap().iter().filter_map(Value::as_u64).collect();
    assert!(lat.len() >= 4 && !sizes.is_empty(), "{s}");
    eprintln!(
        "web: {} updates, {} bytes each on average (max {}); checkpoint -> page latencies (ms, target under 100): {lat:?}; {}",
        sizes.len(),
        sizes.iter().sum::<u64>() / sizes.len() as u64,
        sizes.iter().max().unwrap(),
        vmm.stderr.lock().unwrap().lines().find(|l| l.starts_with("vmm: web view:")).unwrap_or("")
    );
}

#[test]
fn api_errors_are_clear_and_harmless() {
    let mut vmm = Vmm::start(&["--cmdline", "checkpoint=boot exit=0"]);
    let a = vmm.addr.clone();
    // Held before the first instruction: no descriptor yet.
    let (st, v) = get_json(&a, "/api/procs");
    assert_eq!(st, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("descriptor"), "{v}");
    let (st, _) = http(&a, "POST", "/api/step", None);
    assert_eq!(st, 200);
    wait_until("checkpoint 'ready'", || vmm.state()["at"] == "ready");

    let cases: [(&str, &str, u16, &str); 16] = [
        ("GET", "/api/walk?root=999&va=0x1000", 404, "no live process with pid 999"),
        ("GET", "/api/walk?root=me&va=0x1000", 400, "neither 'kernel' nor a pid"),
        ("GET", "/api/walk?va=0x800000000000", 400, "not canonical"),
        ("GET", "/api/walk?va=zz", 400, "not a number"),
        ("GET", "/api/walk", 400, "va=ADDRESS is missing"),
        ("GET", "/api/walk?va=1&color=red", 400, "takes no parameter 'color'"),
        ("GET", "/api/physmap?from=0x100000000000", 400, "out of range"),
        ("GET", "/api/physmap?cells=0", 400, "out of range"),
        ("GET", "/api/pt?depth=9", 400, "out of range"),
        ("GET", "/api/pt?root=kernel&va=0x1000&depth=3", 404, "no table at depth 3"),
        ("GET", "/api/view/tlb", 404, "no view 'tlb'"),
        ("GET", "/api/nothing", 404, "no API at /api/nothing"),
        ("POST", "/api/walk?va=0x1000", 405, "GET only"),
        ("GET", "/api/pause", 405, "use POST"),
        ("GET", "/ws", 400, "WebSocket"),
        ("GET", "/api/walk?va=%zz", 400, "percent-escape"),
    ];
    for (method, path, status, says) in cases {
        let (st, body) = http(&a, method, path, None);
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{path}: not JSON: {body}"));
        assert_eq!(st, status, "{method} {path}: {body}");
        assert!(v["error"].as_str().unwrap_or("").contains(says), "{method} {path}: {body}");
    }
    for (method, path, body, status, says) in [
        ("GET", "/api/vmas?root=kernel", None, 400, "the kernel has no VMAs"),
        ("GET", "/api/vmas?root=999", None, 404, "no process with pid 999"),
        ("GET", "/api/vmas?root=1&va=2", None, 400, "takes no parameter 'va'"),
        ("GET", "/api/run", None, 405, "use POST"),
        ("POST", "/api/run", Some("{\"cmd\": \"ls\"}"), 409, "--shell"),
        ("POST", "/api/run", Some("ls"), 400, "not JSON"),
        ("POST", "/api/run", Some("{\"line\": 1}"), 400, "no string \"cmd\""),
        ("GET", "/api/console?since=zz", None, 400, "not a number"),
        ("GET", "/api/faults?pid=me", None, 400, "not a process id"),
        ("GET", "/api/faults?limit=0", None, 400, "out of range"),
        ("GET", "/api/faults?addr=0x1000", None, 400, "takes no parameter 'addr'"),
        ("POST", "/api/faults", None, 405, "GET only"),
        ("DELETE", "/api/state", None, 405, "GET only"),
        ("GET", "/api/pt?root=kernel&va=0x1000&depth=x", None, 400, "not a number"),
        ("GET", "/api/physmap?from=0x2000&to=0x1000", None, 400, "must be below"),
        ("GET", "/api/view/", None, 404, "no view ''"),
    ] {
        let (st, body) = http(&a, method, path, body);
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{path}: not JSON: {body}"));
        assert_eq!(st, status, "{method} {path}: {body}");
        assert!(v["error"].as_str().unwrap_or("").contains(says), "{method} {path}: {body}");
    }
    // The map zooms out past RAM to the whole 1 TiB space and in to one
    // frame: RAM's frames keep their classes, the rest is hole ('.').
    let (st, all) = get_json(&a, "/api/physmap?cells=8192");
    assert_eq!(st, 200, "{all}");
    let end = u64::from_str_radix(all["ram_end"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
    let (st, space) = get_json(&a, "/api/physmap?from=0&to=0x10000000000&cells=1024");
    assert_eq!(st, 200, "{space}");
    let m = space["map"].as_str().unwrap();
    assert_eq!(m.len(), 1024, "{space}");
    // 1 GiB a cell: every cell after the first lies wholly past RAM
    // (under 1 GiB here), so it is hole.
    assert!(end < 1 << 30, "this test's guest is under 1 GiB: {end:#x}");
    assert!(m[1..].chars().all(|c| c == '.'), "cells past RAM are holes: {m}");
    let straddle = format!("/api/physmap?from={:#x}&to={:#x}&cells=8", end - 0x4000, end + 0x4000);
    let (st, v) = get_json(&a, &straddle);
    assert_eq!(st, 200, "{v}");
    let m = v["map"].as_str().unwrap();
    assert!(m.len() == 8 && !m[..4].contains('.') && &m[4..] == "....", "4 frames of RAM, 4 of hole: {v}");
    assert_eq!(v["frames_per_cell"], 1.0, "{v}");
    let (st, v) = get_json(&a, "/api/physmap?from=0x100000&to=0x101000&cells=64");
    assert_eq!((st, v["cells"].as_u64(), v["map"].as_str().map(str::len)), (200, Some(1), Some(1)), "one frame: {v}");
    let (st, v) = get_json(&a, "/api/physmap?from=0xfffffff000&to=0x10000001000");
    assert_eq!(st, 400, "past 1 TiB: {v}");
    assert!(v["error"].as_str().unwrap().contains("1 TiB"), "{v}");
    // What users pipe the API through: jq reads every answer, errors too.
    let jq = |path: &str, filter: &str| -> String {
        let body = http(&a, "GET", path, None).1;
        let mut c = Command::new("jq")
            .args(["-e", "-r", filter])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("jq (.ci/run installs it)");
        c.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{path} | jq {filter}: {} {body}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(jq("/api/state", ".state"), "paused");
    assert!(jq("/api/procs", ".ps.procs | length").parse::<u64>().is_ok());
    assert_eq!(jq("/api/walk?va=0xffffffff80200000", ".outcome.result"), "mapped");
    assert!(jq("/api/walk?root=999&va=0x1000", ".error").contains("no live process with pid 999"));
    // The boot's own faults so far (the kernel's first processes), each
    // with its address, pid, kind and result; `next` counts them all.
    let n: u64 = jq("/api/faults", ".next").parse().unwrap();
    let listed: u64 =
        jq("/api/faults", "[.faults[] | select(.addr | startswith(\"0x\")) | select(.kind != \"?\")] | length")
            .parse()
            .unwrap();
    assert!(listed <= n, "{listed} faults listed of {n}");
    assert_eq!(jq("/api/faults?limit=1", ".faults | length").parse::<u64>().unwrap(), n.min(1));

    let (st, v) = get_json(&a, "/api/console?since=0");
    assert_eq!(st, 200, "{v}");
    assert!(v["text"].as_str().unwrap().contains("mmemu kernel"), "the console's output so far: {v}");
    let long = format!("/api/walk?va={}", "1".repeat(5000));
    assert_eq!(http(&a, "GET", &long, None).0, 414);
    // Garbage that is not HTTP at all, and a request cut short.
    for junk in ["BLAH\r\n\r\n", "GET /api/state HTTP/1.1\r\nHost: x\r\nContent-Length: 99999\r\n\r\nab"] {
        let mut s = TcpStream::connect(&a).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(junk.as_bytes());
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    // Good requests still work, the guest is where it was, and it runs on.
    let (st, v) = get_json(&a, "/api/walk?va=0xffffffff80200000");
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["outcome"]["result"], "mapped", "{v}");
    assert!(v["page"]["pfn"].is_string(), "the frame's page descriptor: {v}");
    let (st, v) = get_json(&a, "/api/pt?root=kernel&va=0xffffffff80200000&depth=3");
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["level"], "PTE");
    let s = vmm.state();
    assert_eq!((s["state"].as_str(), s["at"].as_str()), (Some("paused"), Some("ready")), "{s}");
    assert_eq!(http(&a, "POST", "/api/resume", None).0, 200);
    assert_eq!(vmm.wait(), 0, "{}", vmm.stderr.lock().unwrap());
}

/// A static program that greets, stops at checkpoint `hello-ran` and exits.
const HELLO: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(int argc, char **argv) {
    char *heap = malloc(64 << 10);
    heap[0] = 1;
    printf("hello from %s with %d args: %s\n", argv[0], argc - 1, argc > 1 ? argv[1] : "");
    fflush(stdout);
    syscall(503, "hello-ran", 9);
    return 0;
}
"#;

/// Controls: a program of the initrd started from the page (typed into
/// the guest's console shell, `--shell`) runs, shows in the process
/// table with its VMAs and its output in the page's console; the API
/// refuses what the shell cannot take, and `exit N` through the API ends
/// the run with status N.
#[test]
fn a_program_starts_from_the_page() {
    if !chromium_present() {
        return;
    }
    let dir = common::Scratch::new("web-run");
    let prog = common::compile("gcc", HELLO, &dir.0, "hello", &["-static"]);
    let root = dir.0.join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::copy(&prog, root.join("hello")).unwrap();
    let mut vmm = Vmm::start(&["--shell", "--initrd", root.to_str().unwrap()]);
    let b = Browser::start();
    b.goto(&format!("http://{}/", vmm.addr));
    wait_until("the page to connect", || b.stats()["connected"] == Value::Bool(true));
    // The shell is up (and reading its console) at checkpoint 'ready'.
    step_to(&b, &vmm, "ready");
    b.type_into("#cmd", "hello from-the-page");
    b.click("#run");
    wait_until("the line to be accepted", || b.script("return document.getElementById('cmd').value") == "");
    assert_eq!(b.text("#error"), "", "no error for a good line");
    // The held guest reads the line when it runs on.
    step_to(&b, &vmm, "hello-ran");
    let ps = table_rows(&b, "#ps");
    let hello = ps.iter().find(|r| r[6] == "hello").unwrap_or_else(|| panic!("hello in the process table: {ps:?}"));
    choose_root(&b, &hello[0]);
    let vmas = table_rows(&b, "#vmas");
    let kinds: Vec<&str> = vmas.iter().map(|r| r[3].as_str()).collect();
    assert!(kinds.contains(&"heap") && kinds.contains(&"stack"), "the program's VMAs: {vmas:?}");
    wait_until("the program's output in the page's console", || {
        b.text("#console-out").contains("hello from hello with 1 args: from-the-page")
    });
    assert!(b.text("#log").contains("run 'hello from-the-page'"), "{}", b.text("#log"));

    // The same through the plain API: refusals first, then a line that
    // ends the run.
    let a = vmm.addr.clone();
    for (body, status, says) in [
        ("{\"cmd\": \"\"}", 400, "empty"),
        ("{\"cmd\": \"hello \\u00e9\"}", 400, "printable ASCII"),
        (&*format!("{{\"cmd\": \"hello {}\"}}", "x".repeat(80)), 400, "at most 63"),
    ] {
        let (st, resp) = http(&a, "POST", "/api/run", Some(body));
        assert_eq!(st, status, "{body}: {resp}");
        assert!(resp.contains(says), "{body}: {resp}");
    }
    let (st, resp) = http(&a, "POST", "/api/run", Some("{\"cmd\": \"exit 7\"}"));
    assert_eq!(st, 200, "{resp}");
    b.click("#resume");
    assert_eq!(vmm.wait(), 7, "exit 7 typed through the API: {}", vmm.stderr.lock().unwrap());
}

/// The progress line (issue 19's "progress output for long work"): drawn
/// on stderr when it is a terminal the console does not share, nothing at
/// all when stderr is piped. The same run both ways, so the piped check
/// is not vacuous.
#[test]
fn progress_is_drawn_on_a_terminal_and_nothing_is_written_when_piped() {
    use std::os::fd::{FromRawFd, OwnedFd};
    let args = ["run", "--timeout", "240", "--cmdline", "selftest=buddy"];

    // Piped: stderr holds the VMM's own lines only.
    let out = Command::new(common::vmm_path())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run vmm");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("selftest"), "the run's summary is there: {err}");
    for extra in ["\r", "\x1b[", "booting: the guest", "running: the memory manager", "self-test checks reported"] {
        assert!(!err.contains(extra), "piped stderr holds progress output {extra:?}: {err:?}");
    }

    // On a terminal (the console to /dev/null): the spinner is drawn.
    let (mut m, mut s) = (-1, -1);
    // SAFETY: openpty writes two descriptors into the pointed-to ints; the
    // name, termios and winsize pointers may be null.
    let r = unsafe { libc::openpty(&mut m, &mut s, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
    assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and are owned by nobody else.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
    let mut child = Command::new(common::vmm_path())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(slave))
        .spawn()
        .expect("spawn vmm");
    let mut reader = std::fs::File::from(master);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    // Read until the slave's last holder (the VMM) is gone (EIO).
    let t = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            s2.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let status = child.wait().expect("wait for vmm");
    let _ = t.join();
    let tty = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    assert_eq!(status.code(), Some(0), "{tty}");
    assert!(
        tty.contains("booting: the guest") || tty.contains("running: the memory manager"),
        "the progress line on the terminal: {tty:?}"
    );
}
