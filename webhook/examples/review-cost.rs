//! Cost of one admission decision in-process (no HTTP, no TLS), for comparison with
//! `admission-bench`: `cargo run --release -p staticpod-webhook --example review-cost`.

use std::time::Instant;

use staticpod_webhook::admission::{Hook, review};

fn main() {
    let body = include_str!("review.json").as_bytes();
    for hook in [Hook::Mutate, Hook::Validate] {
        let n = 20_000;
        let start = Instant::now();
        for _ in 0..n {
            let answer = review(hook, body).expect("review");
            std::hint::black_box(serde_json::to_vec(&answer.review).expect("json"));
        }
        let each = start.elapsed() / n;
        println!(
            "{}: {:.1} µs per review",
            hook.as_str(),
            each.as_secs_f64() * 1e6
        );
    }
}
