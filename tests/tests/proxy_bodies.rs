//! Large request and response bodies stream through with flat memory, byte for byte.

mod support;

use backend_sample::Pattern;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use support::*;

const SIZE: u64 = 100 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

fn pattern_sha256(seed: u64, len: u64) -> String {
    let mut p = Pattern::new(seed);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut left = len;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        p.fill(&mut buf[..n]);
        h.update(&buf[..n]);
        left -= n as u64;
    }
    hex::encode(h.finalize())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_megabytes_up_and_down_with_flat_memory() {
    let bs = backends(1).await;
    let sluice = Sluice::start(format!(
        "[upstreams.api]\n{}\n[[routes]]\nupstream = \"api\"\n",
        backends_toml(&[(bs[0].addr, None)])
    ))
    .await;
    let c = client(None);
    let baseline = sluice.peak_rss_kib();

    // Download: stream and hash without holding it.
    let r = c
        .get(sluice.url(&format!("/bytes/{SIZE}?seed=3")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut h = Sha256::new();
    let mut got = 0u64;
    let mut stream = r.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        got += chunk.len() as u64;
        h.update(&chunk);
    }
    assert_eq!(got, SIZE);
    assert_eq!(hex::encode(h.finalize()), pattern_sha256(3, SIZE));

    // Upload: a streamed body the backend hashes as it arrives.
    let mut p = Pattern::new(11);
    let mut left = SIZE;
    let body = futures_util::stream::poll_fn(move |_| {
        if left == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = left.min(CHUNK as u64) as usize;
        left -= n as u64;
        let mut buf = vec![0u8; n];
        p.fill(&mut buf);
        std::task::Poll::Ready(Some(Ok::<_, std::io::Error>(bytes::Bytes::from(buf))))
    });
    let r = c
        .post(sluice.url("/upload"))
        .header("content-length", SIZE)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["body_len"], SIZE);
    assert_eq!(v["body_sha256"], pattern_sha256(11, SIZE).as_str());

    // 200 MB went through; memory grew by far less than one body.
    let peak = sluice.peak_rss_kib();
    assert!(
        peak.saturating_sub(baseline) < 32 * 1024,
        "peak RSS grew from {baseline} KiB to {peak} KiB"
    );
}
