//! `minirec serve` end to end on a tiny random model: answers, errors naming their field, answers under
//! concurrency equal to one-request answers (dynamic batching), new items, metrics, SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

mod common;
use common::{minirec, tiny_model_dir};

/// One HTTP/1.1 request; the status and the body.
fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

fn titles(v: &serde_json::Value) -> Vec<String> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["title"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn serve_answers_batches_rejects_bad_input_and_drains_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("demo");
    let prep = [
        "demo",
        "--out",
        run.to_str().unwrap(),
        "--users",
        "300",
        "--prepare-only",
    ];
    assert!(minirec(&prep).status.success());
    let data = run.join("data");
    let model = tmp.path().join("model");
    tiny_model_dir(&model, &data);
    let mut child = Command::new(env!("CARGO_BIN_EXE_minirec"))
        .args(["serve", "--model", model.to_str().unwrap(), "--data"])
        .arg(&data)
        .args([
            "--addr",
            "127.0.0.1:0",
            "--max-batch",
            "8",
            "--max-wait-ms",
            "200",
            "--cpu",
        ])
        .args(["--max-body-bytes", "4096", "--max-beam", "1000", "--quiet"])
        .args(["--read-timeout-ms", "1500", "--max-title-chars", "300"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = first.strip_prefix("listening on ").unwrap().to_string();

    let catalog = std::fs::read_to_string(data.join("catalog.jsonl")).unwrap();
    let entries: Vec<serde_json::Value> = catalog.lines().map(json).collect();
    let t = |i: usize| entries[i]["title"].as_str().unwrap().to_string();
    let (code, body) = http(&addr, "GET", "/healthz", "");
    assert_eq!(code, 200, "{body}");

    let ask =
        |h: &[String], k: usize| serde_json::json!({"history": h, "k": k, "beam": 6}).to_string();
    let histories: Vec<Vec<String>> = (0..4).map(|i| vec![t(i), t(i + 5)]).collect();
    let alone: Vec<Vec<String>> = histories
        .iter()
        .map(|h| {
            let (code, body) = http(&addr, "POST", "/v1/recommend", &ask(h, 3));
            assert_eq!(code, 200, "{body}");
            titles(&json(&body))
        })
        .collect();
    assert!(alone.iter().all(|l| l.len() == 3));
    // The same requests at once: gathered into batches, each answered as alone.
    let together: Vec<Vec<String>> = std::thread::scope(|sc| {
        let hs: Vec<_> = histories
            .iter()
            .map(|h| {
                let (addr, body) = (&addr, ask(h, 3));
                sc.spawn(move || titles(&json(&http(addr, "POST", "/v1/recommend", &body).1)))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(together, alone);

    // Bad input: a 4xx naming the field, never a crash.
    for (body, code, field) in [
        ("{bad".to_string(), 400, serde_json::Value::Null),
        (r#"{"histroy": ["a"]}"#.to_string(), 400, "histroy".into()),
        (r#"{"history": []}"#.to_string(), 422, "history".into()),
        (
            r#"{"history": ["no such title"]}"#.to_string(),
            422,
            "history".into(),
        ),
        (
            serde_json::json!({"history": [t(0)], "k": 9, "beam": 4}).to_string(),
            422,
            "k".into(),
        ),
        (
            r#"{"history_ids": ["nope"]}"#.to_string(),
            422,
            "history_ids".into(),
        ),
        ("x".repeat(5000), 413, serde_json::Value::Null),
        (
            serde_json::json!({"history": ["y".repeat(301)], "allow_unknown": true}).to_string(),
            422,
            "history".into(),
        ),
    ] {
        let (got, reply) = http(&addr, "POST", "/v1/recommend", &body);
        assert_eq!(got, code, "{body:.60}: {reply}");
        assert_eq!(json(&reply)["field"], field, "{reply}");
    }
    // A history longer than the data's max_history is answered from its most recent titles.
    let long: Vec<String> = (0..40).map(t).collect();
    let (code, body) = http(&addr, "POST", "/v1/recommend", &ask(&long, 3));
    assert_eq!(code, 200, "{body}");
    let used = json(&body)["history_used"].as_u64().unwrap() as usize;
    assert!((1..40).contains(&used), "{body}");
    let recent = http(&addr, "POST", "/v1/recommend", &ask(&long[40 - used..], 3));
    assert_eq!(titles(&json(&body)), titles(&json(&recent.1)));
    // Misbehaving clients: garbage gets a 400 from the HTTP layer, a body that never arrives a 408.
    let mut raw = TcpStream::connect(&addr).unwrap();
    raw.write_all(b"\x00\x01GARBAGE\r\n\r\n").unwrap();
    let mut reply = String::new();
    raw.read_to_string(&mut reply).ok();
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply:?}");
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.write_all(b"POST /v1/recommend HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{\"hist")
        .unwrap();
    let mut reply = String::new();
    slow.read_to_string(&mut reply).ok();
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply:?}");
    // An item id maps to its title; answers carry ids.
    let id = entries[0]["id"].as_str().unwrap();
    let by_id = serde_json::json!({"history_ids": [id], "k": 2, "beam": 4}).to_string();
    let (code, body) = http(&addr, "POST", "/v1/recommend", &by_id);
    assert_eq!(code, 200, "{body}");
    assert!(json(&body)["items"][0]["ids"].as_array().is_some());

    // A new item is recommendable at once (a beam as wide as the catalog returns it).
    let (code, health) = http(&addr, "GET", "/healthz", "");
    let n = json(&health)["titles"].as_u64().unwrap() as usize;
    assert_eq!(code, 200);
    let new = format!("{} {}", t(1), t(2));
    let add = serde_json::json!({"items": [{"title": new, "id": "NEW-1"}]}).to_string();
    let (code, body) = http(&addr, "POST", "/v1/items", &add);
    assert_eq!(
        (code, json(&body)["added"].as_u64()),
        (200, Some(1)),
        "{body}"
    );
    let all = serde_json::json!({"history": [t(0)], "k": n + 1, "beam": n + 1}).to_string();
    let (code, body) = http(&addr, "POST", "/v1/recommend", &all);
    assert_eq!(code, 200, "{body}");
    assert!(titles(&json(&body)).contains(&new));

    let (code, text) = http(&addr, "GET", "/metrics", "");
    assert_eq!(code, 200);
    assert!(
        text.contains("minirec_requests_total{endpoint=\"recommend\",code=\"200\"}"),
        "{text}"
    );
    assert!(text.contains("minirec_batches_total"), "{text}");

    // SIGTERM: the server stops (after answering what it holds) and exits cleanly.
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("stopped")), "{rest:?}");
}
