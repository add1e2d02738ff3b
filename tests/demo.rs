//! The README's first command: the demo runs end to end and its own checks hold (a user who
//! moved back when the split grew, or a sticky user who changed upstream, fails it).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_end_to_end() {
    strangler::demo::run().await.expect("demo succeeds");
}
