//! Planner time for one StaticPod at 1,000 and 10,000 nodes:
//! `cargo run --release -p staticpod-controller --example planner-bench`.

use std::time::{Duration, Instant};

use staticpod_api::{MaxUnavailable, Revision, StrategyType};
use staticpod_controller::planner::{NodeFacts, PodFacts, plan};

fn main() {
    let (a, b) = (Revision::parse("aaaaaaaaaa"), Revision::parse("bbbbbbbbbb"));
    let (Some(a), Some(b)) = (a, b) else { return };
    for n in [1_000usize, 10_000] {
        // Mid-rollout: a third upgraded, 10% upgrading, some nodes NotReady.
        let facts: Vec<NodeFacts> = (0..n)
            .map(|i| NodeFacts {
                node: format!("edge-{i:05}"),
                node_ready: i % 50 != 0,
                pod: Some(PodFacts {
                    ready: true,
                    revision: Some(if i % 3 == 0 { b.clone() } else { a.clone() }),
                    requested: (i % 10 == 1).then(|| b.clone()),
                    ..Default::default()
                }),
            })
            .collect();
        let rounds = 200;
        let mut times: Vec<Duration> = (0..rounds)
            .map(|_| {
                let start = Instant::now();
                std::hint::black_box(plan(
                    StrategyType::Auto,
                    MaxUnavailable::Percent(10),
                    &b,
                    &facts,
                ));
                start.elapsed()
            })
            .collect();
        times.sort();
        println!(
            "{n} nodes: median {:.3} ms, p99 {:.3} ms over {rounds} plans",
            times[rounds / 2].as_secs_f64() * 1e3,
            times[rounds * 99 / 100].as_secs_f64() * 1e3
        );
    }
}
