//! The web view's HTTP side (tiny_http): the embedded page, the JSON API
//! of [`super::api`], the controls, and a WebSocket (tungstenite over the
//! upgraded connection) that pushes each update to the page.

use super::{api, ApiError, RunState, Shared};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tiny_http::{Header, Method, Request, Response};

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// Threads answering requests (a WebSocket gets a thread of its own).
const WORKERS: usize = 4;
/// Browsers attached at once; more get 503.
const CLIENTS_MAX: usize = 16;
/// Longest URL accepted.
const URL_MAX: usize = 4096;
/// How long a request waits for the vCPU to stop and answer.
const JOB_DEADLINE: Duration = Duration::from_secs(10);

fn header(k: &str, v: &str) -> Header {
    Header::from_bytes(k.as_bytes(), v.as_bytes()).expect("static header")
}

fn reply(req: Request, status: u16, ctype: &str, body: String) {
    let r = Response::from_string(body)
        .with_status_code(status)
        .with_header(header("Content-Type", ctype))
        .with_header(header("Cache-Control", "no-store"));
    // A browser that went away is no error of ours.
    let _ = req.respond(r);
}

fn reply_json(req: Request, r: Result<String, ApiError>) {
    match r {
        Ok(body) => reply(req, 200, "application/json", body),
        Err(e) => {
            let body = serde_json::json!({"error": e.message}).to_string();
            reply(req, e.status, "application/json", body)
        }
    }
}

/// Starts the workers, the sampler and (per browser) the WebSocket
/// pushers.
pub fn spawn(http: tiny_http::Server, shared: Arc<Shared>) -> std::io::Result<()> {
    let http = Arc::new(http);
    for i in 0..WORKERS {
        let (http, shared) = (http.clone(), shared.clone());
        std::thread::Builder::new().name(format!("web{i}")).spawn(move || {
            while let Ok(req) = http.recv() {
                handle(req, &shared);
            }
        })?;
    }
    let s = shared.clone();
    std::thread::Builder::new().name("web-sampler".into()).spawn(move || loop {
        std::thread::sleep(super::SAMPLE_PERIOD);
        match s.state() {
            RunState::Ended => break,
            RunState::Running if s.clients.load(Ordering::Acquire) > 0 => s.request_sample(),
            _ => {}
        }
    })?;
    Ok(())
}

/// Longest request body read.
const BODY_MAX: u64 = 4096;

/// The request's body as UTF-8 text, at most [`BODY_MAX`] bytes.
fn read_body(req: &mut Request) -> Result<String, ApiError> {
    use std::io::Read;
    let mut b = Vec::new();
    req.as_reader()
        .take(BODY_MAX + 1)
        .read_to_end(&mut b)
        .map_err(|e| ApiError::bad(format!("cannot read the request body: {e}")))?;
    if b.len() as u64 > BODY_MAX {
        return Err(ApiError { status: 413, message: format!("the body is longer than {BODY_MAX} bytes") });
    }
    String::from_utf8(b).map_err(|_| ApiError::bad("the body is not UTF-8"))
}

fn handle(mut req: Request, shared: &Arc<Shared>) {
    let url = req.url().to_string();
    if url.len() > URL_MAX {
        return reply_json(
            req,
            Err(ApiError { status: 414, message: format!("the URL is longer than {URL_MAX} bytes") }),
        );
    }
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let method = req.method().clone();
    let get = method == Method::Get || method == Method::Head;
    match (path, get) {
        ("/" | "/index.html", true) => reply(req, 200, "text/html; charset=utf-8", INDEX_HTML.into()),
        ("/app.js", true) => reply(req, 200, "text/javascript; charset=utf-8", APP_JS.into()),
        ("/style.css", true) => reply(req, 200, "text/css; charset=utf-8", STYLE_CSS.into()),
        ("/ws", true) => websocket(req, shared),
        ("/api/state", true) => reply_json(req, Ok(shared.state_json().to_string())),
        ("/api/log", true) => {
            let since = api::query_pairs(query).and_then(|p| {
                p.iter()
                    .find(|(k, _)| k == "since")
                    .map(|(_, v)| api::parse_num("since", v))
                    .transpose()
                    .map(|s| s.unwrap_or(0))
            });
            reply_json(req, since.map(|s| serde_json::json!({"events": shared.events_since(s)}).to_string()))
        }
        ("/api/history", true) => {
            let names = mm_core::descriptor::VM_EVENT_NAMES;
            let body = serde_json::json!({"vmstat_names": names, "samples": shared.history()}).to_string();
            reply_json(req, Ok(body))
        }
        ("/api/pause" | "/api/resume" | "/api/step", false) if method == Method::Post => {
            let r = match path {
                "/api/pause" => shared.request_pause(),
                "/api/resume" => shared.request_resume(),
                _ => shared.request_step(),
            };
            reply_json(req, r.map(|()| shared.state_json().to_string()))
        }
        ("/api/run", false) if method == Method::Post => {
            let r = read_body(&mut req).and_then(|b| {
                let v: serde_json::Value = serde_json::from_str(&b).map_err(|e| {
                    ApiError::bad(format!("the body is not JSON ({e}): give {{\"cmd\": \"PROGRAM ARGS\"}}"))
                })?;
                let cmd = v
                    .get("cmd")
                    .and_then(|c| c.as_str())
                    .ok_or_else(|| ApiError::bad("the body has no string \"cmd\": give {\"cmd\": \"PROGRAM ARGS\"}"))?;
                shared.run_line(cmd)
            });
            reply_json(req, r.map(|()| shared.state_json().to_string()))
        }
        ("/api/run", true) => reply_json(
            req,
            Err(ApiError { status: 405, message: "/api/run types into the guest's console: use POST".into() }),
        ),
        ("/api/console", true) => {
            let since = api::query_pairs(query).and_then(|p| {
                p.iter()
                    .find(|(k, _)| k == "since")
                    .map(|(_, v)| api::parse_num("since", v))
                    .transpose()
                    .map(|s| s.unwrap_or(0))
            });
            reply_json(
                req,
                since.map(|s| {
                    let (text, next) = super::console_since(s);
                    serde_json::json!({"text": text, "next": next}).to_string()
                }),
            )
        }
        ("/api/pause" | "/api/resume" | "/api/step", true) => reply_json(
            req,
            Err(ApiError { status: 405, message: format!("{path} changes the guest's state: use POST") }),
        ),
        (p, true) if p.starts_with("/api/") => {
            let r = api::parse(&p["/api/".len()..], query).and_then(|q| shared.run_job(q, JOB_DEADLINE));
            reply_json(req, r)
        }
        (p, false) if p.starts_with("/api/") => {
            reply_json(req, Err(ApiError { status: 405, message: format!("{p} answers GET only") }))
        }
        _ => reply_json(req, Err(ApiError::not_found(format!("nothing at {path}; the page is at /")))),
    }
}

/// Upgrades to a WebSocket and pushes updates until the browser goes.
fn websocket(req: Request, shared: &Arc<Shared>) {
    let key = req.headers().iter().find(|h| h.field.equiv("Sec-WebSocket-Key")).map(|h| h.value.to_string());
    let Some(key) = key else {
        return reply_json(req, Err(ApiError::bad("/ws is a WebSocket: connect with a WebSocket client")));
    };
    if shared.clients.load(Ordering::Acquire) >= CLIENTS_MAX {
        return reply_json(
            req,
            Err(ApiError { status: 503, message: format!("{CLIENTS_MAX} browsers are attached already") }),
        );
    }
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let resp = Response::empty(101)
        .with_header(header("Upgrade", "websocket"))
        .with_header(header("Connection", "Upgrade"))
        .with_header(header("Sec-WebSocket-Accept", &accept));
    let stream = req.upgrade("websocket", resp);
    let shared = shared.clone();
    // Subscribed before the count rises, so the next checkpoint's update
    // reaches this browser.
    let rx = shared.subscribe();
    shared.clients.fetch_add(1, Ordering::AcqRel);
    let spawned = std::thread::Builder::new().name("web-ws".into()).spawn({
        let shared = shared.clone();
        move || {
            let mut ws = tungstenite::WebSocket::from_raw_socket(stream, tungstenite::protocol::Role::Server, None);
            let hello = serde_json::json!({
                "t": "hello",
                "vmstat_names": mm_core::descriptor::VM_EVENT_NAMES,
                "state": shared.state_json(),
            });
            let mut ok = ws.send(tungstenite::Message::text(hello.to_string())).is_ok();
            // Plots start from a sample now, running or held.
            let _ = shared.run_job(api::Query::Sample, JOB_DEADLINE);
            while ok {
                ok = match rx.recv_timeout(Duration::from_secs(2)) {
                    Ok(m) => ws.send(tungstenite::Message::text(m.as_str())).is_ok(),
                    // A ping now and then finds a browser that went away.
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        ws.send(tungstenite::Message::Ping(Vec::new().into())).is_ok()
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => false,
                };
                if shared.state() == RunState::Ended {
                    // Drain what is queued (the end message), then close.
                    while let Ok(m) = rx.try_recv() {
                        let _ = ws.send(tungstenite::Message::text(m.as_str()));
                    }
                    let _ = ws.close(None);
                    let _ = ws.flush();
                    break;
                }
            }
            shared.clients.fetch_sub(1, Ordering::AcqRel);
        }
    });
    if spawned.is_err() {
        shared.clients.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::time::Duration;

    /// Sends one keep-alive request on a new connection; the connection,
    /// once answered (None: no answer within the timeout).
    fn keep_alive_get(addr: SocketAddr) -> Option<TcpStream> {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = [0u8; 256];
        match c.read(&mut buf) {
            Ok(n) if buf[..n].starts_with(b"HTTP/1.1 200") => Some(c),
            _ => None,
        }
    }

    /// The pool behind the server (vendored tiny_http's `TaskPool`) gives
    /// every connection a thread while a browser's keep-alive connections
    /// hold the others: eight connections arrive at once (as a page's
    /// fetches do) while fewer pool threads are idle, all kept open.
    /// Upstream 0.12.0 notified the idle threads, then, the woken threads
    /// not having run yet, queued the rest for them too instead of
    /// starting threads: nobody read those until a keep-alive connection
    /// closed (here: never, a 5 s timeout).
    #[test]
    fn a_burst_of_connections_is_served_while_keep_alive_ones_hold_threads() {
        for round in 0..3 {
            let server = std::sync::Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
            let addr = server.server_addr().to_ip().unwrap();
            let s = server.clone();
            std::thread::spawn(move || {
                while let Ok(req) = s.recv() {
                    let _ = req.respond(tiny_http::Response::from_string("ok"));
                }
            });
            let held = keep_alive_get(addr).expect("a first request");
            // The pool's idle threads settle into their wait.
            std::thread::sleep(Duration::from_millis(200));
            let go = std::sync::Arc::new(std::sync::Barrier::new(8));
            let burst: Vec<_> = (0..8)
                .map(|_| {
                    let go = go.clone();
                    std::thread::spawn(move || {
                        go.wait();
                        keep_alive_get(addr)
                    })
                })
                .collect();
            let conns: Vec<Option<TcpStream>> = burst.into_iter().map(|t| t.join().unwrap()).collect();
            let answered = conns.iter().filter(|c| c.is_some()).count();
            assert_eq!(answered, 8, "round {round}: {} of 8 connections went unanswered for 5 s", 8 - answered);
            drop((held, conns));
        }
    }
}
