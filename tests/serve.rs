//! `unet2d serve` as clients use it: the built binary on a free loopback port with the shipped
//! digits16 model, a hand-written HTTP/1.1 client (std's TcpStream), every wait bounded.
//!
//! Run with `cargo test --release --features cli --test serve`. DDIM with few steps keeps it fast.
#![cfg(feature = "cli")]

#[path = "common/single_run.rs"]
mod single_run;
use single_run::single;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;
use candle_unet2d::pipeline::UNet2DPipeline;
use candle_unet2d::LoadOptions;
use serde_json::{json, Value};

/// A running server, killed if the test ends without stopping it.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_unet2d"))
            .args(["serve", "--host", "127.0.0.1", "--port", "0", "--log", "error"])
            .args(args)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("unet2d starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).expect("the server prints its address within 60 s");
        let addr =
            line.strip_prefix("listening on http://").unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        Self { child, addr: addr.parse().unwrap() }
    }

    fn post(&self, body: &Value) -> Reply {
        request(self.addr, "POST", "/v1/images", body.to_string().as_bytes())
    }

    fn get(&self, path: &str) -> Reply {
        request(self.addr, "GET", path, b"")
    }

    /// A metric's value (the first line that starts with `name` followed by a space).
    fn metric(&self, name: &str) -> f64 {
        let text = self.get("/metrics").text();
        metric_in(&text, name).unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn metric_in(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The error code of a JSON error body.
    fn code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or_else(|| panic!("no error code: {}", self.text())).to_owned()
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connects");
    stream.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    stream.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
}

fn write_request(stream: &mut TcpStream, addr: SocketAddr, method: &str, path: &str, body: &[u8]) {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
}

/// One request on its own connection (`Connection: close`: the answer ends at EOF).
fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Reply {
    let mut stream = connect(addr);
    write_request(&mut stream, addr, method, path, body);
    read_reply(&mut stream)
}

fn read_reply(stream: &mut TcpStream) -> Reply {
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("reads the answer");
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())).collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Reply { status, headers, body }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let end = data.windows(2).position(|w| w == b"\r\n").expect("a chunk size line");
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..end]).trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[end + 2..end + 2 + size]);
        data = &data[end + 2 + size + 2..];
    }
}

fn digits16() -> UNet2DPipeline {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/digits16");
    UNet2DPipeline::from_pretrained(path, &LoadOptions::default()).unwrap()
}

fn base64(data: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(data.as_str().expect("data is a string")).expect("base64")
}

fn png_pixels(data: &Value) -> Vec<u8> {
    let image = image::load_from_memory(&base64(data)).expect("a PNG");
    assert_eq!((image.width(), image.height()), (16, 16));
    image.to_luma8().into_raw()
}

/// The float32 data of an `.npy` payload, with its shape.
fn npy_pixels(data: &Value) -> (Vec<f32>, String) {
    let bytes = base64(data);
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = String::from_utf8_lossy(&bytes[10..10 + header_len]).into_owned();
    assert!(header.contains("'descr': '<f4'"), "{header}");
    let values = bytes[10 + header_len..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    (values, header)
}

#[test]
fn concurrent_requests_are_batched_and_equal_single_runs() {
    let server = Server::start(&["--max-batch", "16", "--batch-wait", "200ms"]);
    let pipe = digits16();
    let steps = 5;
    let bodies: Vec<Value> = (0..16)
        .map(|i| {
            let n = 1 + i % 2;
            let labels: Vec<i64> = (0..n).map(|j| ((i + 3 * j) % 10) as i64).collect();
            json!({"num_images": n, "seed": 1000 + 10 * i, "class_labels": labels, "scheduler": "ddim",
                   "num_inference_steps": steps, "format": if i == 5 { "npy" } else { "png" }})
        })
        .collect();
    let replies: Vec<Reply> = std::thread::scope(|s| {
        let handles: Vec<_> = bodies.iter().map(|b| s.spawn(|| server.post(b))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut worst = 0f32;
    for (body, reply) in bodies.iter().zip(&replies) {
        assert_eq!(reply.status, 200, "{}", reply.text());
        let answer = reply.json();
        let images = answer["images"].as_array().unwrap();
        assert_eq!(images.len(), body["num_images"].as_u64().unwrap() as usize);
        for (i, image) in images.iter().enumerate() {
            let seed = body["seed"].as_u64().unwrap() + i as u64;
            let label = body["class_labels"][i].as_i64().unwrap();
            assert_eq!(
                (image["index"].as_u64(), image["seed"].as_u64(), image["class_label"].as_i64()),
                (Some(i as u64), Some(seed), Some(label))
            );
            let (pixels, bytes) = single(&pipe, "ddim", steps, seed, label);
            if body["format"] == "npy" {
                let (values, header) = npy_pixels(&image["data"]);
                assert!(header.contains("'shape': (16, 16, 1)"), "{header}");
                let diff = values.iter().zip(&pixels).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                worst = worst.max(diff);
            } else {
                assert_eq!(
                    png_pixels(&image["data"]),
                    bytes,
                    "seed {seed}: the served PNG differs from the single run"
                );
            }
        }
    }
    // Batch-invariant kernels: the floats are the single run's, bit for bit.
    assert!(worst == 0.0, "npy differs from the single run by {worst:e}");
    // Some run held more than one request: batches in total minus batches of at most one request.
    let text = server.get("/metrics").text();
    let batches = metric_in(&text, "unet2d_batch_requests_count").unwrap();
    let single_request = metric_in(&text, "unet2d_batch_requests_bucket{le=\"1\"}").unwrap();
    assert!(batches - single_request >= 1.0, "no batch merged requests:\n{text}");
    assert_eq!(metric_in(&text, "unet2d_images_generated_total"), Some(24.0));
    assert!(text.contains("unet2d_http_requests_total{route=\"/v1/images\",status=\"200\"} 16"), "{text}");
    assert!(text.contains("unet2d_queue_depth 0"));
    assert!(text.contains("# TYPE unet2d_batch_seconds histogram"));
}

#[test]
fn bad_requests_get_json_errors_and_the_server_goes_on() {
    let server = Server::start(&["--max-images", "8", "--max-body", "1024"]);
    let cases: Vec<(&[u8], u16, &str)> = vec![
        (b"{\"num_images\": 2", 400, "malformed_json"),
        (b"", 400, "malformed_json"),
        (b"[]", 400, "malformed_json"),
        (b"{\"num_imgs\": 2}", 400, "unknown_field"),
        (b"{\"scheduler\": \"warp-drive\"}", 400, "invalid_scheduler"),
        (b"{\"class_labels\": 12}", 400, "invalid_class_labels"),
        (b"{\"class_labels\": [1, \"two\"]}", 400, "invalid_class_labels"),
        (b"{\"num_images\": 3, \"class_labels\": [1, 2]}", 400, "invalid_class_labels"),
        (b"{\"num_images\": 0}", 400, "invalid_num_images"),
        (b"{\"num_images\": 9}", 413, "too_large_num_images"),
        (b"{\"num_images\": 1e3}", 400, "invalid_num_images"),
        (b"{\"seed\": -1}", 400, "invalid_seed"),
        (b"{\"num_inference_steps\": 100000}", 413, "too_large_num_inference_steps"),
        (b"{\"format\": \"gif\"}", 400, "invalid_format"),
        (b"{\"scheduler\": \"euler\", \"eta\": 1}", 400, "invalid_eta"),
    ];
    for (body, status, code) in cases {
        let reply = request(server.addr, "POST", "/v1/images", body);
        let shown = String::from_utf8_lossy(body);
        assert_eq!(reply.status, status, "{shown}: {}", reply.text());
        assert_eq!(reply.code(), code, "{shown}");
        let message = reply.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(message.len() > 10, "{shown}: the message says too little: {message}");
    }
    let not_found = server.get("/v2/images");
    assert_eq!((not_found.status, not_found.code().as_str()), (404, "not_found"));
    let wrong_method = server.get("/v1/images");
    assert_eq!((wrong_method.status, wrong_method.code().as_str()), (405, "method_not_allowed"));

    // A body over --max-body, sent whole without a Content-Length (chunked): refused once it passes
    // the limit.
    let mut stream = connect(server.addr);
    let big = format!("{{\"seed\": 1, \"pad\": \"{}\"}}", "x".repeat(2000));
    let head = format!(
        "POST /v1/images HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        server.addr
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(format!("{:x}\r\n{big}\r\n0\r\n\r\n", big.len()).as_bytes()).unwrap();
    let reply = read_reply(&mut stream);
    assert_eq!((reply.status, reply.code().as_str()), (413, "body_too_large"), "{}", reply.text());

    // A body over --max-body, announced by its Content-Length: refused before it is read.
    let mut stream = connect(server.addr);
    let head = format!(
        "POST /v1/images HTTP/1.1\r\nHost: {}\r\nContent-Length: 4096\r\nConnection: close\r\n\r\n",
        server.addr
    );
    stream.write_all(head.as_bytes()).unwrap();
    let reply = read_reply(&mut stream);
    assert_eq!((reply.status, reply.code().as_str()), (413, "body_too_large"), "{}", reply.text());

    let health = server.get("/healthz");
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
    assert_eq!(health.json()["model"]["classes"], 10);
    let ok = server.post(&json!({"scheduler": "ddim", "num_inference_steps": 2, "class_labels": 7}));
    assert_eq!(ok.status, 200, "{}", ok.text());
}

#[test]
fn a_flood_beyond_the_queue_gets_503_and_the_server_recovers() {
    let server = Server::start(&["--max-batch", "1", "--max-queue", "2", "--batch-wait", "0ms"]);
    let body = json!({"scheduler": "ddim", "num_inference_steps": 100, "class_labels": 1});
    let replies: Vec<Reply> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..12).map(|_| s.spawn(|| server.post(&body))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let busy: Vec<&Reply> = replies.iter().filter(|r| r.status == 503).collect();
    assert!(
        !busy.is_empty(),
        "no 503 for 12 requests on a queue of 2: {:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for reply in &busy {
        assert_eq!(reply.code(), "queue_full");
        let retry: u64 = reply.header("retry-after").expect("Retry-After").parse().unwrap();
        assert!(retry >= 1);
    }
    assert!(
        replies.iter().all(|r| r.status == 200 || r.status == 503),
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    // The running request and the two queued ones, at least (the first may still be queued when
    // the others arrive).
    assert!(replies.iter().filter(|r| r.status == 200).count() >= 2);
    let health = server.get("/healthz");
    assert_eq!(health.status, 200, "{}", health.text());
    assert_eq!(server.metric("unet2d_queue_depth"), 0.0);
}

#[test]
fn a_client_that_goes_away_cancels_its_work_and_timeouts_answer_504() {
    let server = Server::start(&["--batch-wait", "0ms", "--request-timeout", "1s"]);
    // DDIM with 1000 steps takes longer than the test waits for it.
    let body = json!({"scheduler": "ddim", "num_inference_steps": 1000, "class_labels": 2}).to_string();
    let mut stream = connect(server.addr);
    write_request(&mut stream, server.addr, "POST", "/v1/images", body.as_bytes());
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.metric("unet2d_batches_running") < 1.0 {
        assert!(Instant::now() < deadline, "the batch never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.metric("unet2d_batches_cancelled_total") < 1.0 {
        assert!(Instant::now() < deadline, "the abandoned batch was not cancelled");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(server.metric("unet2d_images_generated_total"), 0.0);
    let text = server.get("/metrics").text();
    assert!(text.contains("unet2d_http_requests_total{route=\"/v1/images\",status=\"client_closed\"} 1"), "{text}");

    // The same request, waited for: past --request-timeout it gets a 504 (not the full run).
    let started = Instant::now();
    let reply = server.post(&serde_json::from_str(&body).unwrap());
    assert_eq!((reply.status, reply.code().as_str()), (504, "timeout"), "{}", reply.text());
    assert!(started.elapsed() < Duration::from_secs(8), "took {:?}", started.elapsed());
}

#[cfg(unix)]
#[test]
fn sigterm_finishes_running_work_and_exits_0() {
    let mut server = Server::start(&["--batch-wait", "0ms", "--shutdown-timeout", "20s"]);
    let addr = server.addr;
    let body = json!({"scheduler": "ddim", "num_inference_steps": 100, "num_images": 2, "class_labels": 4});
    let in_flight = std::thread::spawn(move || request(addr, "POST", "/v1/images", body.to_string().as_bytes()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.metric("unet2d_batches_running") < 1.0 {
        assert!(Instant::now() < deadline, "the batch never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: kill with a valid signal on our own child's pid.
    let sent = unsafe { libc::kill(server.child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(sent, 0);
    let reply = in_flight.join().unwrap();
    assert_eq!(reply.status, 200, "the running request should finish within the grace period: {}", reply.text());
    assert_eq!(reply.json()["images"].as_array().unwrap().len(), 2);
    let status = server.wait_exit(Duration::from_secs(30)).expect("the server exits after SIGTERM");
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(), "still accepting after exit");
}
